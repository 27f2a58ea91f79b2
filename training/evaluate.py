"""The evaluate stage: every trained model and the baselines on the real test split; uplifts, ablation, sweep.

Writes `metrics/results.json` ({task: {model, baselines, models, synthetic_share, uplift, ablation, versus_twin,
versus_best_baseline}}; differences between models, and against the strongest baseline, carry paired bootstrap
CIs over the same test users/queries), appends one
row per model to `metrics/sweep/<task>.csv` (NDCG@10 against the synthetic share, for `dvc plots`), and logs
each model's test metrics and the test split into the MLflow run that trained it.
"""

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
import typer
from tqdm.auto import tqdm

from core import cli
from core.errors import ShopError
from core.io import atomic_path, write_json
from core.params import Params
from core.tasks import TASKS, tasks_on
from training import tracking
from training.baselines import make_baseline
from training.holdout import load_test_inputs, load_trained, score_model
from training.lexical import BM25Retriever
from training.metrics import metric_value, paired_difference_ci
from training.registry import DVC_EXPERIMENT_ENV, configure

log = logging.getLogger(__name__)

REFERENCE_VARIANT = "noaug"


def trained_variants(params: Params, task: str, models_dir: Path) -> list[str]:
    """Variants of `task` among `experiments.models` that have a model folder (the others are skipped, warned)."""
    variants = [spec.variant for spec in params.experiments.models.values() if spec.task == task]
    present = [v for v in dict.fromkeys(variants) if (models_dir / task / v / "model.json").is_file()]
    missing = [v for v in variants if v not in present]
    if missing:
        log.warning("no model folder for %s: not evaluated", ", ".join(f"{task}/{v}" for v in missing))
    return present


def variant_manifest(fused_dir: Path, task: str, variant: str) -> dict:
    """The fuse stage's manifest of one variant (synthetic_share, rows_by_source, ...); {} when absent."""
    path = fused_dir / task / variant / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def relative(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None or old == 0 else round((new - old) / old, 4)


def compare(task: str, models: dict[str, dict], baselines: dict[str, dict]) -> dict:
    """Relative uplift of every model over the no-augmentation twin, each baseline and the best baseline."""
    real_baselines = {n: r for n, r in baselines.items() if n != "random"}
    best = max(real_baselines, key=lambda n: metric_value(real_baselines[n], "ndcg@10") or -1.0, default=None)
    out = {"best_baseline": best, "models": {}}
    for variant, result in models.items():
        refs = {f"baseline:{n}": r for n, r in real_baselines.items()}
        if variant != REFERENCE_VARIANT and REFERENCE_VARIANT in models:
            refs[REFERENCE_VARIANT] = models[REFERENCE_VARIANT]
        out["models"][variant] = {
            ref: {key: relative(metric_value(result, key), metric_value(other, key)) for key in TASKS[task].headline}
            for ref, other in refs.items()
        }
        if best:
            out["models"][variant]["best_baseline"] = out["models"][variant][f"baseline:{best}"]
    return out


def ablation(
    task: str, models: dict[str, dict], units: dict[str, pd.DataFrame] | None = None, params: Params | None = None
) -> dict:
    """Each generator's contribution: metric of `aug` minus `minus_<generator>`'s (positive = it helps), plus
    `<metric>_ci`, the paired bootstrap CI of that difference, when per-unit tables are given."""
    if "aug" not in models:
        return {}
    out = {}
    for variant, result in models.items():
        if variant.startswith("minus_"):
            out[variant.removeprefix("minus_")] = {
                key: None
                if metric_value(models["aug"], key) is None or metric_value(result, key) is None
                else round(metric_value(models["aug"], key) - metric_value(result, key), 4)
                for key in TASKS[task].headline
            }
            if units and params and variant in units and "aug" in units:
                for key in TASKS[task].paired:
                    diff = paired_difference(units["aug"], units[variant], key, params)
                    out[variant.removeprefix("minus_")][f"{key}_ci"] = [diff["ci_low"], diff["ci_high"]]
    return out


def switches(task: str, units: dict[str, pd.DataFrame], params: Params) -> dict:
    """Each training switch (a model with `data` in experiments.models) against the model trained on the same
    rows without it: {variant: {data, train, <metric>: difference + paired CI}} (positive = the switch helps)."""
    out = {}
    for spec in params.experiments.models.values():
        if spec.task == task and spec.data and spec.variant in units and spec.data in units:
            out[spec.variant] = {"data": spec.data, "train": spec.train} | {
                key: paired_difference(units[spec.variant], units[spec.data], key, params) for key in TASKS[task].paired
            }
    return out


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, key: str, params: Params) -> dict:
    """`training.metrics.paired_difference_ci` with the evaluation's bootstrap samples and seed, rounded."""
    stats = paired_difference_ci(a, b, key, params.evaluation.bootstrap_samples, params.seed)
    return {name: round(v, 4) if isinstance(v, float) else v for name, v in stats.items()}


def versus_twin(task: str, units: dict[str, pd.DataFrame], params: Params) -> dict:
    """Every model against the no-augmentation twin on the same units: {variant: {metric: difference + CI}}."""
    if REFERENCE_VARIANT not in units:
        return {}
    return {
        variant: {key: paired_difference(table, units[REFERENCE_VARIANT], key, params) for key in TASKS[task].paired}
        for variant, table in units.items()
        if variant != REFERENCE_VARIANT
    }


def versus_best_baseline(
    task: str, units: dict[str, pd.DataFrame], best: str | None, params: Params, inputs: dict
) -> dict:
    """Every model against the strongest baseline (re-scored here for its per-user/query table), paired CIs."""
    if best is None:
        return {}
    per_unit: dict = {}
    score_model(make_baseline(best, task, params), task, params, inputs, per_unit)
    return {
        "baseline": best,
        "models": {
            variant: {key: paired_difference(table, per_unit["table"], key, params) for key in TASKS[task].paired}
            for variant, table in units.items()
        },
    }


def search_components(params: Params, trained: dict, fused: Path, inputs: dict) -> dict:
    """What the search models `trained` ({variant: loaded model}) are made of, on the same test queries: each
    hybrid without its re-ranker, each bi-encoder alone and BM25 over the expanded items of each variant that
    has them, with paired differences: {"models": {name: result}, "differences": {label: {metric: difference +
    CI}}}. The parts share their model's query memo, so no test query is encoded twice."""
    results, units, differences = {}, {}, {}

    def run(name: str, model) -> None:
        per_unit: dict = {}
        results[name] = score_model(model, "search", params, inputs, per_unit)
        units[name] = per_unit["table"]

    run("bm25", make_baseline("bm25", "search", params))
    for variant, model in tqdm(trained.items(), desc="search components", unit="model"):
        if model.reranker is not None:
            run(f"hybrid_{variant}_first_stage", model.first_stage())
            differences[f"re-ranked {variant} − its hybrid first stage"] = (variant, f"hybrid_{variant}_first_stage")
        if model.hybrid:
            run(f"bi_encoder_{variant}", model.dense_only())
            differences[f"hybrid {variant} − its bi-encoder alone"] = (variant, f"bi_encoder_{variant}")
        items_path = fused / "search" / variant / "items.parquet"
        if items_path.is_file() and "search_text" in pd.read_parquet(items_path).columns:
            expanded = BM25Retriever(params.baselines.bm25, name=f"bm25_expanded_{variant}", text_column="search_text")
            expanded_inputs = {**inputs, "items": pd.read_parquet(items_path)}
            per_unit: dict = {}
            results[expanded.name] = score_model(expanded, "search", params, expanded_inputs, per_unit)
            units[expanded.name] = per_unit["table"]
            differences[f"bm25 over {variant} expanded items − bm25 over titles"] = (expanded.name, "bm25")
    return {"models": results, "units": units, "differences": differences}


def components_summary(task: str, components: dict | None, units: dict[str, pd.DataFrame], params: Params) -> dict:
    """The components' results and their paired differences (the trained models' tables in `units`)."""
    if not components:
        return {}
    tables = {**components["units"], **units}
    return {
        "models": components["models"],
        "differences": {
            label: {key: paired_difference(tables[a], tables[b], key, params) for key in TASKS[task].paired}
            for label, (a, b) in components["differences"].items()
        },
    }


def log_test_metrics(folder: Path, result: dict, test_path: Path, params: Params) -> None:
    """Reopen the MLflow run that trained the model in `folder`; log test metrics and the test split."""
    record = tracking.run_record(folder)
    if record is None:
        return
    task, variant = record["task"], record["variant"]
    run = tracking.TrainingRun(record["run_id"], params, task, variant)
    flat = {f"test/{key}": v for key in _metric_keys(result) if (v := metric_value(result, key)) is not None}
    with mlflow.start_run(run_id=record["run_id"]):
        run.log_metrics(flat)
        run.flush()
        run.log_dataset(test_path, "evaluation", f"{task}-test", {"kind": "real"})


def _metric_keys(result: dict) -> list[str]:
    keys = [k for k in result if k != "segments"]
    for segment, metrics in (result.get("segments") or {}).items():
        keys += [f"{segment}.{k}" for k in metrics]
    return keys


SWEEP_COLUMNS = [
    "variant",
    "synthetic_share",
    "ndcg@10",
    "ndcg@10_ci_low",
    "ndcg@10_ci_high",
    "max_synthetic_share",
    "augment_enabled",
    "generators",
    "experiment",
    "time",
]


def append_sweep(path: Path, rows: list[dict]) -> None:
    """Add this run's rows to the sweep CSV (a row per model and sweep setting; a rerun replaces its rows)."""
    if not rows and path.exists():
        return
    new = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    if path.exists():
        old = pd.read_csv(path, dtype={"generators": str})
        key = ["variant", "max_synthetic_share", "generators", "augment_enabled"]
        merged = pd.concat([old, new], ignore_index=True).drop_duplicates(key, keep="last")
    else:
        merged = new
    merged = merged.sort_values(["synthetic_share", "variant"]).reset_index(drop=True)
    with atomic_path(path) as tmp:
        merged.to_csv(tmp, index=False)


def evaluate_all(
    params: Params,
    models_dir: Path,
    splits: Path,
    canonical: Path,
    fused: Path,
    baselines_path: Path,
    sweep_dir: Path,
) -> dict:
    """Score every trained model of `experiments.models` on the real test split; return the results document.

    `splits`, `canonical`, `fused` and `models_dir` hold a folder per task; sweep rows go to `<sweep_dir>/<task>.csv`.
    """
    baselines = json.loads(baselines_path.read_text()) if baselines_path.is_file() else {}
    if not baselines:
        log.warning("%s missing: results have no baselines", baselines_path)
    configure(params.mlflow)
    results: dict[str, dict] = {}
    sweep: dict[str, list[dict]] = {task: [] for task in TASKS}  # a task that is off keeps its file as it was
    for task in tasks_on(params.data):
        variants = trained_variants(params, task, models_dir)
        if not variants:
            continue
        inputs = load_test_inputs(task, splits / task, canonical / task)
        manifests = {v: variant_manifest(fused, task, v) for v in variants}
        models, units, kinds, twins = {}, {}, {}, {}
        for variant in tqdm(variants, desc=f"evaluate {task}", unit="model"):
            folder = models_dir / task / variant
            log.info("evaluating %s/%s", task, variant)
            per_unit: dict = {}
            model = load_trained(folder, params)
            if task == "search" and variant in (REFERENCE_VARIANT, "aug"):
                twins[variant] = model.remember_queries()  # its parts are scored below on the same queries
            kinds[variant] = model.name.removesuffix(f"_{variant}")
            models[variant] = score_model(model, task, params, inputs, per_unit)
            units[variant] = per_unit["table"]
            log_test_metrics(folder, models[variant], inputs["test_path"], params)
        shares = {v: manifests[v].get("synthetic_share") for v in variants}
        components = search_components(params, twins, fused, inputs) if task == "search" else None
        uplift = compare(task, models, baselines.get(task, {}))
        results[task] = {
            "dataset": sorted(inputs["items"]["source"].unique()),
            "model": kinds,
            "baselines": baselines.get(task, {}),
            "models": models,
            "synthetic_share": shares,
            "uplift": uplift,
            "ablation": ablation(task, models, units, params),
            "switches": switches(task, units, params),
            "versus_twin": versus_twin(task, units, params),
            "versus_best_baseline": versus_best_baseline(task, units, uplift["best_baseline"], params, inputs),
            "components": components_summary(task, components, units, params),
            "test_split": {
                "path": tracking.repo_relative(inputs["test_path"]),
                "digest": tracking.dataset_digest(inputs["test_path"])[0],
            },
        }
        sweep[task] = [
            {
                "variant": v,
                "synthetic_share": shares[v] if shares[v] is not None else 0.0,
                "ndcg@10": metric_value(models[v], "ndcg@10"),
                "ndcg@10_ci_low": (models[v].get("ndcg@10") or {}).get("ci_low"),
                "ndcg@10_ci_high": (models[v].get("ndcg@10") or {}).get("ci_high"),
                "max_synthetic_share": params.fuse.max_synthetic_share,
                "augment_enabled": params.augment.enabled,
                "generators": "+".join(sorted((manifests[v].get("rows_by_source") or {}).keys())),
                "experiment": os.environ.get(DVC_EXPERIMENT_ENV, "workspace"),
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            for v in variants
        ]
    for task, rows in sweep.items():
        append_sweep(sweep_dir / f"{task}.csv", rows)
    return results


# --------------------------------------------------------------------------------------------- CLI
app = cli.stage_app(__doc__)


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    models: Annotated[Path, typer.Option(help="trained model folders <task>/<variant>")] = Path("models"),
    splits: Annotated[Path, typer.Option(help="real splits <task>/test.parquet")] = Path("data/splits"),
    canonical: Annotated[Path, typer.Option(help="canonical tables <task>/items.parquet")] = Path("data/canonical"),
    fused: Annotated[Path, typer.Option(help="fused variants <task>/<variant>/manifest.json")] = Path("data/fused"),
    baselines: Annotated[Path, typer.Option(help="baseline metrics")] = Path("metrics/baselines.json"),
    out: Annotated[Path, typer.Option(help="results JSON to write")] = Path("metrics/results.json"),
    sweep: Annotated[Path, typer.Option(help="sweep CSVs <task>.csv (NDCG@10 vs synthetic share)")] = Path(
        "metrics/sweep"
    ),
) -> None:
    """Score every trained model and the baselines on the real test split; write results and sweep rows."""
    config = cli.load(params)
    models = cli.resolve(models)
    results = evaluate_all(
        config,
        models,
        cli.resolve(splits),
        cli.resolve(canonical),
        cli.resolve(fused),
        cli.resolve(baselines),
        cli.resolve(sweep),
    )
    if not results:
        raise ShopError(f"{models}: no trained model folder (<task>/<variant>/model.json): run `train` first")
    write_json(results, cli.resolve(out))
    for task, doc in results.items():
        for variant, result in doc["models"].items():
            typer.echo(
                f"{task:7s} {variant:28s} ndcg@10={metric_value(result, 'ndcg@10'):.4f} "
                f"share={doc['synthetic_share'][variant]}"
            )


if __name__ == "__main__":
    cli.run(app)
