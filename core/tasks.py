"""The two tasks the loop serves, as data: what a task's training rows are, how it is scored and registered.

Code that differs by task looks the task up here (`TASKS[name]`) instead of branching on its name.
"""

from dataclasses import dataclass

from core.errors import ShopError
from core.params import MlflowParams, PromoteParams


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
