"""A trained model on a task's real test split: read the split once, fit the model on what is visible at test
time, score it with the harness. The evaluate stage and promotion both score models through here."""

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pandas as pd

from core.io import read_table
from core.params import Params
from core.paths import shared_root
from core.tasks import get_task
from training.data import valid_cutoff
from training.harness import evaluate_recommender, evaluate_retriever, retail_eval_inputs
from training.model_store import download_model_dir, is_registry_uri, load_model_from_folder


def _retail_inputs(splits: Path, canonical: Path, split: str) -> dict:
    """Test: history = the whole train split (cutoff: split.retail.cutoff). Valid: history = the train rows
    before the validation cutoff, targets = valid.parquet (what training's early stopping saw)."""
    train = read_table(splits / "train.parquet", "interactions")
    targets = read_table(splits / f"{split}.parquet", "interactions")
    cutoff = valid_cutoff(splits) if split == "valid" else None
    if cutoff is not None:
        train = train[train["ts"] < cutoff]
    history, targets = retail_eval_inputs(train, targets)
    items = read_table(canonical / "items.parquet", "items")
    return {"history": history, "targets": targets, "items": items, "cutoff": cutoff}


def _search_inputs(splits: Path, canonical: Path, split: str) -> dict:
    noisy = splits / "test_noisy.parquet"  # the robustness test set (stage split), when present
    return {
        "train": read_table(splits / "train.parquet", "queries"),
        "test": read_table(splits / f"{split}.parquet", "queries"),
        "noisy": read_table(noisy, "queries") if split == "test" and noisy.is_file() else None,
        "items": read_table(canonical / "items.parquet", "items"),
    }


def load_test_inputs(task: str, splits: Path, canonical: Path, split: Literal["test", "valid"] = "test") -> dict:
    """The real `split` (test, or valid for promotion) of `task` (`splits`: its split folder, `canonical`: its
    canonical tables) and what the harness needs beside it (read once per stage)."""
    inputs = {"retail": _retail_inputs, "search": _search_inputs}[get_task(task).name](splits, canonical, split)
    return {**inputs, "test_path": splits / f"{split}.parquet"}


def _score_recommender(model, params: Params, inputs: dict, per_unit: dict | None) -> dict:
    model.fit(inputs["history"], inputs["items"])
    return evaluate_recommender(
        model,
        inputs["history"],
        inputs["targets"],
        inputs["items"],
        params.evaluation,
        cutoff=inputs["cutoff"] or pd.Timestamp(params.split.retail.cutoff, tz="UTC"),
        seed=params.seed,
        per_unit=per_unit,
    )


def _score_retriever(model, params: Params, inputs: dict, per_unit: dict | None) -> dict:
    model.fit(inputs["train"], inputs["items"])
    return evaluate_retriever(
        model,
        inputs["test"],
        inputs["items"],
        params.evaluation,
        seed=params.seed,
        per_unit=per_unit,
        noisy=inputs.get("noisy"),
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
    return load_model_from_folder(folder, cache_dir=shared_root() / params.train.cache_dir)


def score_model_uri(
    model_uri: str, task: str, params: Params, splits: Path, canonical: Path, split: Literal["test", "valid"]
) -> tuple[dict, pd.DataFrame]:
    """Harness result and per-user/query table of a registered model on a real split of `task` (what promotion
    compares)."""
    model = load_trained(model_uri, params)
    if split == "valid" and hasattr(model, "before_validation"):
        model = model.before_validation()  # the ranker's refit trained on the validation window
    per_unit: dict = {}
    result = score_model(model, task, params, load_test_inputs(task, splits, canonical, split), per_unit)
    return result, per_unit["table"]
