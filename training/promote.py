"""Promotion by registry alias: score `challenger` and `champion` on the same real split, move `champion`.

Both models are scored now on `promote.split` (the validation split by default; the test split stays for
reporting). `champion` moves only if the lower bound of the paired bootstrap CI of the primary metric's gain
(NDCG@10, the same users/queries resampled for both models) is above `promote.margin`, and no guardrail
(cold-user NDCG, new-item recall for retail; catalogue recall for search) drops by more than
`promote.guardrail_tolerance`; the first challenger of a model becomes its champion. The decision, the split,
the CI and both metric sets go to `reports/promotion.json` and to the challenger version's tags. `rollback`
moves `champion` back to the version it replaced.
"""

import datetime as dt
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from core import cli
from core.errors import ShopError
from core.io import write_json
from core.params import Params, PromoteParams
from core.tasks import get_task, off_reason, tasks_on
from training.holdout import score_model_uri
from training.metrics import metric_value, paired_difference_ci
from training.registry import CHALLENGER, CHAMPION, DVC_EXPERIMENT_ENV, configure

log = logging.getLogger(__name__)

# (model_uri, task) -> (harness result {metric: {"value", ...}, "segments": {...}}, per-user/query table)
Evaluator = Callable[[str, str], tuple[dict, pd.DataFrame]]
PREVIOUS_TAG = "promotion.previous_champion"


def decide(challenger: dict, champion: dict | None, cfg: PromoteParams, task: str, gain: dict | None = None) -> dict:
    """Compare two harness results; return {promote, reason, primary, guardrails} (pure, no registry access).

    `gain`: the primary metric's per-unit difference challenger - champion with its paired bootstrap CI
    ({value, ci_low, ci_high, n}), required when there is a champion. Refuses (ShopError) a challenger result
    without the primary metric.
    """
    primary = cfg.primary_metric
    new = metric_value(challenger, primary)
    if new is None:
        raise ShopError(f"challenger result has no '{primary}' (promote.primary_metric)")
    if champion is None:
        return {
            "promote": True,
            "reason": "first model: no champion yet",
            "primary": {"metric": primary, "split": cfg.split, "challenger": new, "champion": None, "delta": None},
            "guardrails": {},
        }
    if gain is None:
        raise ShopError("promotion needs the paired difference of both models' per-user/query metrics")
    checks = {}
    for key in get_task(task).guardrails(cfg):
        a, b = metric_value(challenger, key), metric_value(champion, key)
        drop = None if a is None or b is None else b - a
        checks[key] = {
            "challenger": a,
            "champion": b,
            "ok": drop is None or drop <= cfg.guardrail_tolerance + 1e-12,
        }
    failed = [k for k, c in checks.items() if not c["ok"]]
    ci = (
        f"{gain['value']:+.4f}, 95% paired CI [{gain['ci_low']:+.4f}, {gain['ci_high']:+.4f}] "
        f"on {gain['n']} {cfg.split} users/queries"
    )
    promote = False
    if not gain["ci_low"] > cfg.margin:
        reason = f"{primary} gain {ci}: the lower bound is not above the margin {cfg.margin}"
    elif failed:
        reason = "guardrail regressed: " + ", ".join(
            f"{k} {checks[k]['champion']:.4f} -> {checks[k]['challenger']:.4f}" for k in failed
        )
    else:
        promote = True
        reason = f"{primary} gain {ci}: the lower bound is above the margin {cfg.margin}; guardrails hold"
    return {
        "promote": promote,
        "reason": reason,
        "primary": {
            "metric": primary,
            "split": cfg.split,
            "challenger": new,
            "champion": metric_value(champion, primary),
            "delta": gain["value"],
            "ci_low": gain["ci_low"],
            "ci_high": gain["ci_high"],
            "n": gain["n"],
        },
        "guardrails": checks,
    }


def _alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def promote_task(params: Params, task: str, evaluate: Evaluator) -> dict:
    """Decide for one task's registered model, move `champion` if the challenger wins; return the record."""
    client = MlflowClient()
    name = get_task(task).registered_model(params.mlflow)
    challenger = _alias(client, name, CHALLENGER)
    if challenger is None:
        raise ShopError(f"registered model '{name}' has no @{CHALLENGER} version: run the train stage first")
    champion = _alias(client, name, CHAMPION)
    record = {
        "task": task,
        "model": name,
        "challenger_version": str(challenger.version),
        "champion_version": str(champion.version) if champion else None,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if champion is not None and champion.version == challenger.version:
        return {
            **record,
            "decision": "unchanged",
            "promote": False,
            "reason": f"version {challenger.version} is already @{CHAMPION}",
        }
    challenger_metrics, challenger_units = evaluate(f"models:/{name}/{challenger.version}", task)
    champion_metrics, gain = None, None
    if champion is not None:
        champion_metrics, champion_units = evaluate(f"models:/{name}/{champion.version}", task)
        primary, samples = params.promote.primary_metric, params.evaluation.bootstrap_samples
        gain = paired_difference_ci(challenger_units, champion_units, primary, samples, params.seed)
    verdict = decide(challenger_metrics, champion_metrics, params.promote, task, gain)
    record.update(
        verdict,
        decision="promoted" if verdict["promote"] else "rejected",
        challenger_metrics=challenger_metrics,
        champion_metrics=champion_metrics,
    )
    if verdict["promote"]:
        client.set_registered_model_alias(name, CHAMPION, str(challenger.version))
        if champion is not None:
            client.set_model_version_tag(name, str(challenger.version), PREVIOUS_TAG, str(champion.version))
    _tag_decision(client, name, str(challenger.version), record)
    log.info("%s: %s v%s (%s)", name, record["decision"], challenger.version, verdict["reason"])
    return record


def _tag_decision(client: MlflowClient, name: str, version: str, record: dict) -> None:
    """The decision, compared metric values and the champion it was compared with, as version tags."""
    summary = {"primary": record["primary"], "guardrails": record["guardrails"]}
    tags = {
        "promotion.decision": record["decision"],
        "promotion.reason": record["reason"],
        "promotion.compared_with": record["champion_version"] or "none",
        "promotion.time": record["time"],
        "promotion.summary": json.dumps(summary, sort_keys=True),
        "promotion.challenger_metrics": _compact(record["challenger_metrics"]),
        "promotion.champion_metrics": _compact(record["champion_metrics"]),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value[:5000])


def _compact(result: dict | None) -> str:
    """Point values only (`cold_users.ndcg@10`: 0.12): fits a registry tag, unlike the CIs."""
    if result is None:
        return "null"
    flat = {k: v.get("value") for k, v in result.items() if isinstance(v, dict) and k != "segments"}
    for segment, metrics in (result.get("segments") or {}).items():
        flat.update({f"{segment}.{k}": v.get("value") for k, v in metrics.items() if isinstance(v, dict)})
    return json.dumps(flat, sort_keys=True)


def rollback_task(params: Params, task: str) -> dict:
    """Move `champion` back to the version it replaced; the rolled-back version loses `challenger` too.

    Refuses when there is no champion or it replaced nothing (it was the first).
    """
    client = MlflowClient()
    name = get_task(task).registered_model(params.mlflow)
    current = _alias(client, name, CHAMPION)
    if current is None:
        raise ShopError(f"registered model '{name}' has no @{CHAMPION} to roll back")
    previous = current.tags.get(PREVIOUS_TAG)
    if not previous:
        raise ShopError(f"'{name}' version {current.version} was the first champion: nothing to roll back to")
    client.set_registered_model_alias(name, CHAMPION, previous)
    challenger = _alias(client, name, CHALLENGER)
    if challenger is not None and challenger.version == current.version:
        client.delete_registered_model_alias(name, CHALLENGER)  # keep the next promote from re-promoting it
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    client.set_model_version_tag(name, str(current.version), "promotion.rolled_back", when)
    log.info("%s: @%s back from v%s to v%s", name, CHAMPION, current.version, previous)
    return {
        "task": task,
        "model": name,
        "decision": "rolled_back",
        "from_version": str(current.version),
        "to_version": str(previous),
        "time": when,
    }


def harness_evaluator(params: Params, splits: Path, canonical: Path) -> Evaluator:
    """Score a registered model on the real `promote.split` (`<splits>/<task>`, `<canonical>/<task>`) through
    the harness (training.holdout)."""
    split = params.promote.split
    return lambda uri, task: score_model_uri(uri, task, params, splits / task, canonical / task, split)


# --------------------------------------------------------------------------------------------- CLI
app = cli.stage_app(__doc__)
TaskOption = Annotated[list[str] | None, typer.Option("--task", help="retail and/or search (default: promote.tasks)")]


@app.callback()
def _commands() -> None:
    """Promotion by registry alias (subcommands below)."""


@app.command("run")
def run_promotion(
    params: cli.ParamsOption = cli.PARAMS,
    task: TaskOption = None,
    results: Annotated[
        Path, typer.Option(help="the evaluate stage's results (promotion runs after it; the models are re-scored)")
    ] = Path("metrics/results.json"),
    splits: Annotated[Path, typer.Option(help="real splits <task>/<promote.split>.parquet")] = Path("data/splits"),
    canonical: Annotated[Path, typer.Option(help="canonical tables <task>/items.parquet")] = Path("data/canonical"),
    out: Annotated[Path, typer.Option(help="decision JSON to write")] = Path("reports/promotion.json"),
) -> None:
    """Compare @challenger with @champion on the real promote.split (validation) and move @champion if it wins."""
    config = cli.load(params)
    configure(config.mlflow)
    evaluate = harness_evaluator(config, cli.resolve(splits), cli.resolve(canonical))
    experiment = os.environ.get(DVC_EXPERIMENT_ENV)
    records = {}
    for name in task or config.promote.tasks:
        if name not in tasks_on(config.data):
            records[name] = {"task": name, "decision": "skipped", "promote": False, "reason": off_reason(name)}
            continue
        if experiment:  # sweeps must not move the production alias
            records[name] = {
                "task": name,
                "decision": "skipped",
                "promote": False,
                "reason": f"inside dvc experiment '{experiment}': aliases move only outside sweeps",
            }
            continue
        try:
            records[name] = promote_task(config, name, evaluate)
        except ShopError as exc:
            if task or "no @challenger" not in str(exc):
                raise
            records[name] = {"task": name, "decision": "skipped", "promote": False, "reason": str(exc)}
    write_json(records, cli.resolve(out))
    for t, record in records.items():
        typer.echo(f"{t}: {record['decision']} ({record['reason']})")


@app.command()
def rollback(
    task: Annotated[str, typer.Option(help="retail or search")], params: cli.ParamsOption = cli.PARAMS
) -> None:
    """Move @champion back to the version the current champion replaced."""
    config = cli.load(params)
    configure(config.mlflow)
    record = rollback_task(config, task)
    typer.echo(f"{record['model']}: @{CHAMPION} v{record['from_version']} -> v{record['to_version']}")


if __name__ == "__main__":
    cli.run(app)
