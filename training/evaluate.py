"""The evaluate stage: every trained model and the baselines on the real test split; uplifts, ablation, sweep.

Writes `metrics/results.json` ({task: {baselines, models, synthetic_share, uplift, ablation, versus_twin}};
differences between models carry paired bootstrap CIs over the same test users/queries), appends one
row per model to `metrics/sweep/<task>.csv` (NDCG@10 against the synthetic share, for `dvc plots`), and logs
each model's test metrics and the test split into the MLflow run that trained it.
"""

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from core import cli
from core.errors import ShopError
from core.io import atomic_path, read_table, write_json
from core.params import Params, load_params
from core.paths import repo_root
from training import tracking

log = logging.getLogger(__name__)

HEADLINE = {
    "retail": ["ndcg@10", "ndcg@10_new", "hr@10", "cold_users.ndcg@10", "new_items.recall@10"],
    "search": ["ndcg@10", "recall@100", "pairwise_accuracy"],
}
REFERENCE_VARIANT = "noaug"
PAIRED = {"retail": ["ndcg@10", "cold_users.ndcg@10"], "search": ["ndcg@10"]}  # paired-bootstrap differences


# --------------------------------------------------------------------------------------------- scoring
def load_test_inputs(task: str, params: Params, root: Path) -> dict:
    """The real test split of `task` and what the harness needs beside it (read once per stage)."""
    from training.baselines import retail_eval_inputs

    splits, canonical = root / "data/splits" / task, root / "data/canonical" / task
    if task == "retail":
        train = read_table(splits / "train.parquet", "interactions")
        test = read_table(splits / "test.parquet", "interactions")
        history, targets = retail_eval_inputs(train, test)
        items = read_table(canonical / "items.parquet", "items")
        return {"history": history, "targets": targets, "items": items, "test_path": splits / "test.parquet"}
    return {
        "train": read_table(splits / "train.parquet", "queries"),
        "test": read_table(splits / "test.parquet", "queries"),
        "items": read_table(canonical / "items.parquet", "items"),
        "test_path": splits / "test.parquet",
    }


def score_model(model, task: str, params: Params, inputs: dict, per_unit: dict | None = None) -> dict:
    """Fit (index) a trained model on the training data visible at test time and score it with the harness
    (`per_unit` receives the per-user/query metric table)."""
    from training.harness import evaluate_recommender, evaluate_retriever

    if task == "retail":
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
    model.fit(inputs["train"], inputs["items"])
    return evaluate_retriever(
        model, inputs["test"], inputs["items"], params.evaluation, seed=params.seed, per_unit=per_unit
    )


def load_trained(folder_or_uri: str | Path, params: Params, root: Path):
    """A model folder or a `models:/` URI, loaded with the shared embedding cache (no re-encoding)."""
    from training.serving_api import load_model_from_folder

    text = str(folder_or_uri)
    folder = tracking.download_model_dir(text) if text.startswith(("models:/", "runs:/")) else Path(text)
    return load_model_from_folder(folder, cache_dir=root / params.train.cache_dir)


def score_model_uri(model_uri: str, task: str, params: Params, root: Path | None = None) -> dict:
    """Harness result of a registered model on the real test split (what promotion compares)."""
    root = root or repo_root()
    model = load_trained(model_uri, params, root)
    return score_model(model, task, params, load_test_inputs(task, params, root))


# --------------------------------------------------------------------------------------------- the stage
def planned_runs(params: Params, root: Path) -> list[tuple[str, str]]:
    """(task, variant) pairs the train stage trains: `experiments.runs` whose fused set exists, plus every
    `minus_<generator>` variant of the fusion manifest when `experiments.ablation` is on."""
    runs = []
    for spec in params.experiments.runs:
        task, _, variant = spec.partition("/")
        if task not in tracking.TASKS or not variant:
            raise ShopError(f"params.yaml: experiments.runs: {spec!r} is not <retail|search>/<variant>")
        runs.append((task, variant))
    if params.experiments.ablation:
        for task in tracking.TASKS:
            variants = fused_manifest(root, task).get("variants", {})
            runs += [(task, v) for v in sorted(variants) if v.startswith("minus_")]
    present = [(t, v) for t, v in dict.fromkeys(runs) if (root / f"data/fused/{t}/{v}.parquet").is_file()]
    skipped = sorted(set(runs) - set(present))
    if skipped:
        log.warning("no fused set for %s: not trained", ", ".join(f"{t}/{v}" for t, v in skipped))
    return present


def fused_manifest(root: Path, task: str) -> dict:
    path = root / f"data/fused/{task}/manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def value(result: dict, key: str) -> float | None:
    from training.promote import metric_value

    return metric_value(result, key)


def relative(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None or old == 0 else round((new - old) / old, 4)


def compare(task: str, models: dict[str, dict], baselines: dict[str, dict]) -> dict:
    """Relative uplift of every model over the no-augmentation twin, each baseline and the best baseline."""
    real_baselines = {n: r for n, r in baselines.items() if n != "random"}
    best = max(real_baselines, key=lambda n: value(real_baselines[n], "ndcg@10") or -1.0, default=None)
    out = {"best_baseline": best, "models": {}}
    for variant, result in models.items():
        refs = {f"baseline:{n}": r for n, r in real_baselines.items()}
        if variant != REFERENCE_VARIANT and REFERENCE_VARIANT in models:
            refs[REFERENCE_VARIANT] = models[REFERENCE_VARIANT]
        out["models"][variant] = {
            ref: {key: relative(value(result, key), value(other, key)) for key in HEADLINE[task]}
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
                if value(models["aug"], key) is None or value(result, key) is None
                else round(value(models["aug"], key) - value(result, key), 4)
                for key in HEADLINE[task]
            }
            if units and params and variant in units and "aug" in units:
                for key in PAIRED[task]:
                    diff = paired_difference(units["aug"], units[variant], key, params)
                    out[variant.removeprefix("minus_")][f"{key}_ci"] = [diff["ci_low"], diff["ci_high"]]
    return out


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, key: str, params: Params) -> dict:
    """Mean per-user/query difference a - b of `key` (`cold_users.<metric>` = cold users only) over the units
    both define, with a paired bootstrap CI: same units resampled for both models."""
    from training.metrics import bootstrap_ci

    segment, _, metric = key.rpartition(".")
    rows = a.index[a["cold_user"]] if segment == "cold_users" else a.index
    diff = (a.loc[rows, metric] - b.reindex(rows)[metric]).to_numpy(float)
    stats = bootstrap_ci(diff, params.evaluation.bootstrap_samples, params.seed)
    return {name: round(v, 4) if isinstance(v, float) else v for name, v in stats.items()}


def versus_twin(task: str, units: dict[str, pd.DataFrame], params: Params) -> dict:
    """Every model against the no-augmentation twin on the same units: {variant: {metric: difference + CI}}."""
    if REFERENCE_VARIANT not in units:
        return {}
    return {
        variant: {key: paired_difference(table, units[REFERENCE_VARIANT], key, params) for key in PAIRED[task]}
        for variant, table in units.items()
        if variant != REFERENCE_VARIANT
    }


def log_test_metrics(folder: Path, result: dict, test_path: Path, params: Params, root: Path) -> None:
    """Reopen the MLflow run that trained the model in `folder`; log test metrics and the test split."""
    record = tracking.run_record(folder)
    if record is None:
        return
    task, variant = record["task"], record["variant"]
    run = tracking.TrainingRun(record["run_id"], params, task, variant, root)
    flat = {f"test/{key}": v for key in _metric_keys(result) if (v := value(result, key)) is not None}
    import mlflow

    with mlflow.start_run(run_id=record["run_id"]):
        run.log_metrics(flat)
        run.flush()
        run.log_dataset(test_path, "evaluation", f"{task}-test", {"kind": "real"})


def _metric_keys(result: dict) -> list[str]:
    keys = [k for k in result if k != "segments"]
    for segment, metrics in (result.get("segments") or {}).items():
        keys += [f"{segment}.{k}" for k in metrics]
    return keys


def append_sweep(path: Path, rows: list[dict]) -> None:
    """Add this run's rows to the sweep CSV (a row per model and sweep setting; a rerun replaces its rows)."""
    new = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path, dtype={"generators": str})
        key = ["variant", "max_synthetic_share", "generators", "augment_enabled"]
        merged = pd.concat([old, new], ignore_index=True).drop_duplicates(key, keep="last")
    else:
        merged = new
    merged = merged.sort_values(["synthetic_share", "variant"]).reset_index(drop=True)
    with atomic_path(path) as tmp:
        merged.to_csv(tmp, index=False)


def evaluate_all(params: Params, root: Path, models_dir: Path, baselines_path: Path) -> dict:
    """Score every trained model of `planned_runs` on the real test split; return the results document."""
    baselines = json.loads(baselines_path.read_text()) if baselines_path.is_file() else {}
    if not baselines:
        log.warning("%s missing: results have no baselines", baselines_path)
    tracking.configure(params.mlflow)
    results: dict[str, dict] = {}
    sweep: dict[str, list[dict]] = {}
    runs = planned_runs(params, root)
    for task in tracking.TASKS:
        variants = [v for t, v in runs if t == task and (models_dir / task / v / "model.json").is_file()]
        if not variants:
            continue
        inputs = load_test_inputs(task, params, root)
        manifest = fused_manifest(root, task).get("variants", {})
        models, units = {}, {}
        for variant in variants:
            folder = models_dir / task / variant
            log.info("evaluating %s/%s", task, variant)
            per_unit: dict = {}
            models[variant] = score_model(load_trained(folder, params, root), task, params, inputs, per_unit)
            units[variant] = per_unit["table"]
            log_test_metrics(folder, models[variant], inputs["test_path"], params, root)
        shares = {v: manifest.get(v, {}).get("synthetic_share") for v in variants}
        results[task] = {
            "baselines": baselines.get(task, {}),
            "models": models,
            "synthetic_share": shares,
            "uplift": compare(task, models, baselines.get(task, {})),
            "ablation": ablation(task, models, units, params),
            "versus_twin": versus_twin(task, units, params),
            "test_split": {
                "path": f"data/splits/{task}/test.parquet",
                "digest": tracking.dataset_digest(inputs["test_path"], root)[0],
            },
        }
        sweep[task] = [
            {
                "variant": v,
                "synthetic_share": shares[v] if shares[v] is not None else 0.0,
                "ndcg@10": value(models[v], "ndcg@10"),
                "ndcg@10_ci_low": (models[v].get("ndcg@10") or {}).get("ci_low"),
                "ndcg@10_ci_high": (models[v].get("ndcg@10") or {}).get("ci_high"),
                "max_synthetic_share": params.fuse.max_synthetic_share,
                "augment_enabled": params.augment.enabled,
                "generators": "+".join(sorted((manifest.get(v, {}).get("rows_by_source") or {}).keys())),
                "experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            for v in variants
        ]
    for task, rows in sweep.items():
        append_sweep(root / params.experiments.sweep_dir / f"{task}.csv", rows)
    return results


# --------------------------------------------------------------------------------------------- CLI
app = typer.Typer(add_completion=False, help=__doc__.splitlines()[0])
ROOT = repo_root()


@app.command()
def main(
    params_path: Annotated[Path | None, typer.Option("--params", help="params.yaml to read")] = None,
    models: Annotated[Path, typer.Option(help="folder of trained models <task>/<variant>")] = ROOT / "models",
    baselines: Annotated[Path, typer.Option(help="baseline metrics")] = ROOT / "metrics/baselines.json",
    out: Annotated[Path, typer.Option(help="results JSON to write")] = ROOT / "metrics/results.json",
) -> None:
    """Score every trained model and the baselines on the real test split; write results and sweep rows."""
    params = load_params(params_path)
    results = evaluate_all(params, ROOT, models, baselines)
    if not results:
        raise ShopError(f"{models}: no trained model folder (<task>/<variant>/model.json): run `train` first")
    write_json(results, out)
    for task, doc in results.items():
        for variant, result in doc["models"].items():
            typer.echo(
                f"{task:7s} {variant:28s} ndcg@10={value(result, 'ndcg@10'):.4f} "
                f"share={doc['synthetic_share'][variant]}"
            )


if __name__ == "__main__":
    cli.run(app)
