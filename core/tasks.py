"""The two tasks the loop serves, as data: what a task's training rows are, how it is scored and registered.

Code that differs by task looks the task up here (`TASKS[name]`) instead of branching on its name. A task
whose dataset is null in params.yaml (`data.<task>: null`) is off: every stage writes a `TASK_OFF.json` marker
where that task's output would go, so DVC's stage graph stays whole and later stages see the task is off.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from core.errors import ShopError
from core.io import atomic_dir
from core.params import DataParams, MlflowParams, PromoteParams

log = logging.getLogger(__name__)

OFF_MARKER = "TASK_OFF.json"


@dataclass(frozen=True)
class Task:
    """One task: `retail` (next-basket recommendation) or `search` (catalogue retrieval)."""

    name: str
    table: str  # canonical table of its training rows
    headline: tuple[str, ...]  # metrics shown in the results tables
    paired: tuple[str, ...]  # metrics compared between models with a paired bootstrap CI
    model_param: str  # MlflowParams field naming its registered model
    guardrails_param: str  # PromoteParams field listing its promotion guardrails

    def registered_model(self, mlflow: MlflowParams) -> str:
        """The registry name of this task's model (`mlflow.recommender_model` / `mlflow.search_model`)."""
        return getattr(mlflow, self.model_param)

    def guardrails(self, promote: PromoteParams) -> list[str]:
        """The metrics that must not regress when this task's champion moves."""
        return getattr(promote, self.guardrails_param)


TASKS: dict[str, Task] = {
    "retail": Task(
        name="retail",
        table="interactions",
        headline=(
            "ndcg@10",
            "ndcg@10_new",
            "hr@10",
            "recall@10_repeat",
            "recall@10_explore",
            "cold_users.ndcg@10",
            "new_items.recall@10",
        ),
        paired=("ndcg@10", "ndcg@10_new", "cold_users.ndcg@10"),
        model_param="recommender_model",
        guardrails_param="retail_guardrails",
    ),
    "search": Task(
        name="search",
        table="queries",
        headline=("ndcg@10", "ndcg@10_noisy", "recall@100", "pairwise_accuracy"),
        paired=("ndcg@10", "ndcg@10_noisy"),
        model_param="search_model",
        guardrails_param="search_guardrails",
    ),
}


def get_task(name: str) -> Task:
    """The task called `name`; ShopError for any other name."""
    if name not in TASKS:
        raise ShopError(f"task {name!r}: expected one of {', '.join(TASKS)}")
    return TASKS[name]


def tasks_on(data: DataParams) -> list[str]:
    """The tasks that have a dataset (`data.<task>` not null), in loop order."""
    return [name for name in TASKS if getattr(data, name) is not None]


def off_reason(task: str) -> str:
    """Why a stage left `task` out: the words every stage's output and log use."""
    return f"task {task} is off (data.{task} is null)"


def write_task_off(folder: Path, task: str) -> None:
    """Replace `folder` with only the marker saying `task` is off (the output of a stage for a task that is off)."""
    with atomic_dir(folder) as tmp:
        (tmp / OFF_MARKER).write_text(json.dumps({"task": task, "off": off_reason(task)}) + "\n")
    log.info("%s: %s", folder, off_reason(task))
