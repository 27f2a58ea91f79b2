"""A trained model on a task's real test split: read the split once, fit the model on what is visible at test
time, score it with the harness. The evaluate stage and promotion both score models through here."""

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from core.io import read_table
from core.params import Params
from core.paths import repo_root
from core.tasks import get_task
from training.harness import evaluate_recommender, evaluate_retriever, retail_eval_inputs
from training.model_store import download_model_dir, is_registry_uri, load_model_from_folder


def _retail_inputs(splits: Path, canonical: Path) -> dict:
    train = read_table(splits / "train.parquet", "interactions")
    test = read_table(splits / "test.parquet", "interactions")
    history, targets = retail_eval_inputs(train, test)
    return {"history": history, "targets": targets, "items": read_table(canonical / "items.parquet", "items")}


def _search_inputs(splits: Path, canonical: Path) -> dict:
    return {
        "train": read_table(splits / "train.parquet", "queries"),
        "test": read_table(splits / "test.parquet", "queries"),
        "items": read_table(canonical / "items.parquet", "items"),
    }


def load_test_inputs(task: str, splits: Path, canonical: Path) -> dict:
    """The real test split of `task` (`splits`: its split folder, `canonical`: its canonical tables) and what
    the harness needs beside it (read once per stage)."""
    inputs = {"retail": _retail_inputs, "search": _search_inputs}[get_task(task).name](splits, canonical)
    return {**inputs, "test_path": splits / "test.parquet"}


def _score_recommender(model, params: Params, inputs: dict, per_unit: dict | None) -> dict:
    model.fit(inputs["history"], inputs["items"])
    cutoff = pd.Timestamp(params.split.retail.cutoff, tz="UTC")
    return evaluate_recommender(
        model,
        inputs["history"],
        inputs["targets"],
        inputs["items"],
        params.evaluation,
        cutoff=cutoff,
        seed=params.seed,
        per_unit=per_unit,
    )


def _score_retriever(model, params: Params, inputs: dict, per_unit: dict | None) -> dict:
    model.fit(inputs["train"], inputs["items"])
    return evaluate_retriever(
        model, inputs["test"], inputs["items"], params.evaluation, seed=params.seed, per_unit=per_unit
    )


SCORERS: dict[str, Callable[..., dict]] = {"retail": _score_recommender, "search": _score_retriever}


def score_model(model, task: str, params: Params, inputs: dict, per_unit: dict | None = None) -> dict:
    """Fit (index) a trained model on the training data visible at test time and score it with the harness
    (`per_unit` receives the per-user/query metric table)."""
    return SCORERS[get_task(task).name](model, params, inputs, per_unit)


def load_trained(folder_or_uri: str | Path, params: Params):
    """A model folder or a `models:/` URI, loaded with the shared embedding cache (no re-encoding)."""
    text = str(folder_or_uri)
    folder = download_model_dir(text) if is_registry_uri(text) else Path(text)
    return load_model_from_folder(folder, cache_dir=repo_root() / params.train.cache_dir)


def score_model_uri(model_uri: str, task: str, params: Params, splits: Path, canonical: Path) -> dict:
    """Harness result of a registered model on the real test split of `task` (what promotion compares)."""
    model = load_trained(model_uri, params)
    return score_model(model, task, params, load_test_inputs(task, splits, canonical))
