"""The ad-hoc scorer: score any dataset (a path + adapter name) with a baseline or a trained model.

    python -m training.score --task search --model bm25 --adapter homedepot \
        --data ../shared/data/homedepot/search_relevance.csv.gz --out metrics.json
    python -m training.score --task retail --model models:/shopaug-recommender@champion \
        --data data/canonical/retail --adapter canonical --out metrics.json

The data goes through the same adapter, validation and split code as the pipeline (pipelines.ingest,
pipelines.split), then through the one harness (training.harness), so the numbers are comparable with
metrics/baselines.json.
"""

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from core import cli
from core.errors import ShopError
from core.io import write_json
from core.params import Params
from core.tasks import get_task
from pipelines.adapters import ADAPTERS
from pipelines.ingest import build_task
from pipelines.split import split_retail, split_search
from training.baselines import BASELINES, make_baseline
from training.harness import evaluate_recommender, evaluate_retriever
from training.model_store import is_registry_uri, load_model

log = logging.getLogger(__name__)


class Task(StrEnum):
    retail = "retail"
    search = "search"


class Split(StrEnum):
    test = "test"
    valid = "valid"
    all = "all"


def load_model_for_eval(spec: str, task: str, params: Params | None = None):
    """Return an unfitted-or-trained model implementing the protocol of `task` for `spec`.

    `spec` is a baseline name (training.baselines), a `models:/name@alias` / `runs:/` URI or a saved model
    folder (both delegated to training.model_store.load_model). Refuses an unknown spec or a model of the
    other task.
    """
    params = params or cli.load()
    baselines = BASELINES[get_task(task).name]
    if spec in baselines:
        return make_baseline(spec, task, params)
    if not (is_registry_uri(spec) or Path(spec).expanduser().is_dir()):
        raise ShopError(
            f"--model '{spec}': not a {task} baseline {sorted(baselines)}, a models:/ or runs:/ URI, or a model folder"
        )
    model = load_model(spec)
    needed = RANKING_METHOD[task]
    if not callable(getattr(model, needed, None)):
        raise ShopError(f"--model '{spec}' is a {type(model).__name__}, which cannot {needed}: wrong --task?")
    return model


def load_dataset(task: str, data: Path, adapter: str, params: Params) -> dict[str, pd.DataFrame]:
    """Canonical tables of `task` read from `data` with the named adapter, validated as `ingest` does."""
    if adapter not in ADAPTERS:
        raise ShopError(f"--adapter '{adapter}': unknown; expected one of {sorted(ADAPTERS)}")
    if not data.exists():
        raise ShopError(f"{data}: file not found")
    tables, _ = build_task(task, adapter, data, None, params.seed)
    return tables


def _cutoff(option: str | None, params: Params) -> pd.Timestamp:
    """`--cutoff`, else `split.retail.cutoff`, as a UTC timestamp; one-line error naming where a bad date came from."""
    text, source = (option, "--cutoff") if option else (params.split.retail.cutoff, "split.retail.cutoff")
    try:
        return pd.Timestamp(text, tz="UTC")
    except (ValueError, TypeError):
        raise ShopError(f"{source}: '{text}' is not a date (expected YYYY-MM-DD)") from None


def _score_retail(tables: dict, model, params: Params, split: str, cutoff: str | None) -> tuple[dict, dict]:
    if split == "all":
        raise ShopError("--split all needs a temporal cutoff for retail: use test or valid")
    when = _cutoff(cutoff, params)
    parts, summary = split_retail(tables["interactions"], when, params.split.retail.valid_days)
    if split == "valid":
        when = pd.Timestamp(summary["valid_cutoff"])
        history = parts["train"][parts["train"]["ts"] < when]
    else:
        history = parts["train"]
    targets = parts[split]
    model.fit(history, tables["items"])
    metrics = evaluate_recommender(
        model, history, targets, tables["items"], params.evaluation, cutoff=when, seed=params.seed
    )
    return metrics, {"users": int(targets["user_id"].nunique()), "cutoff": when.isoformat()}


def _score_search(tables: dict, model, params: Params, split: str, cutoff: str | None) -> tuple[dict, dict]:
    queries = tables["queries"]
    if split == "all":
        train, scored = queries.iloc[:0], queries
    else:
        search = params.split.search
        parts, _ = split_search(queries, search.valid_frac, search.test_frac, params.seed)
        train, scored = parts["train"], parts[split]
    model.fit(train, tables["items"])
    metrics = evaluate_retriever(model, scored, tables["items"], params.evaluation, seed=params.seed)
    return metrics, {"queries": int(scored["query_id"].nunique()), "items": len(tables["items"])}


RANKING_METHOD = {"retail": "recommend", "search": "search"}  # what a model of the task must be able to do
SCORERS = {"retail": _score_retail, "search": _score_search}


def evaluate_dataset(
    task: str, spec: str, data: Path, adapter: str, params: Params, split: str = "test", cutoff: str | None = None
) -> dict:
    """Split the dataset as the pipeline does, fit/index the model on the training part, score `split`."""
    tables = load_dataset(task, data, adapter, params)
    model = load_model_for_eval(spec, task, params)
    metrics, counts = SCORERS[get_task(task).name](tables, model, params, split, cutoff)
    return {
        "task": task,
        "model": spec,
        "data": str(data),
        "adapter": adapter,
        "split": split,
        **counts,
        "metrics": metrics,
    }


app = cli.stage_app(__doc__)


@app.command()
def main(
    task: Annotated[Task, typer.Option(help="retail (recommendation) or search")],
    model: Annotated[str, typer.Option(help="baseline name, models:/name@alias, runs:/ URI or model folder")],
    data: Annotated[Path, typer.Option(help="dataset file or folder, in the format --adapter reads")],
    adapter: Annotated[str, typer.Option(help="online_retail, homedepot, wands, esci or canonical")],
    out: Annotated[Path, typer.Option(help="metrics JSON to write")] = Path("metrics.json"),
    split: Annotated[Split, typer.Option(help="which part to score; search also takes 'all'")] = Split.test,
    cutoff: Annotated[str | None, typer.Option(help="retail cutoff date (default from params)")] = None,
    params: cli.ParamsOption = cli.PARAMS,
) -> None:
    """Score a dataset with a model through the evaluation harness and write metrics JSON."""
    config = cli.load(params)
    if task == Task.retail:
        _cutoff(cutoff, config)  # a malformed date fails before the dataset is read
    result = evaluate_dataset(task.value, model, data, adapter, config, split.value, cutoff)
    write_json(result, out)
    headline = {m: v["value"] for m, v in result["metrics"].items() if m != "segments"}
    shown = ", ".join(f"{m}={v:.4f}" for m, v in headline.items() if v is not None)
    typer.echo(f"{task.value} {model}: {shown}")
    typer.echo(f"wrote {out}")


if __name__ == "__main__":
    cli.run(app)
