"""Promotion against a real MLflow registry: first model wins, worse or guardrail-breaking challengers are
refused, a better one is promoted, rollback restores the previous champion."""

import json
import zlib

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow_helpers import TinyPyfunc, tiny_model_dir
from typer.testing import CliRunner

from core.errors import ShopError
from training import promote, registry, tracking
from training.metrics import metric_value
from training.model_store import download_model_dir

NAME = "shopaug-recommender"


def harness_like(ndcg: float, cold: float, new_items: float) -> dict:
    value = lambda v: {"value": v, "ci_low": v - 0.01, "ci_high": v + 0.01, "n": 100}  # noqa: E731
    segments = {"cold_users": {"ndcg@10": value(cold)}, "new_items": {"recall@10": value(new_items)}}
    return {"ndcg@10": value(ndcg), "hr@10": value(ndcg * 2), "segments": segments}


def per_user(ndcg: float, tag: str, users: int = 400) -> pd.DataFrame:
    """A per-user table with mean `ndcg` and its own seeded noise (sd 0.2): a paired gain of 0.003 over 400 users
    has a CI that spans 0, a gain of 0.06 does not."""
    noise = np.random.default_rng(zlib.crc32(tag.encode())).normal(0, 0.2, users)
    index = pd.Index([f"u{i}" for i in range(users)], name="user_id")
    return pd.DataFrame({"ndcg@10": ndcg + noise - noise.mean(), "cold_user": False}, index=index)


def register(params, root, tmp_path, tag: str, ndcg: float, cold: float, new_items: float) -> str:
    folder = tiny_model_dir(tmp_path / tag, ndcg)
    (folder / "metrics.json").write_text(json.dumps(harness_like(ndcg, cold, new_items)))
    per_user(ndcg, tag).to_parquet(folder / "per_user.parquet")
    with tracking.start_run(params, "retail", "aug", root=root) as run:
        version = run.log_model(folder, python_model=TinyPyfunc(), input_example=pd.DataFrame({"history": [["a"]]}))
    return str(version.version)


def evaluate_from_registry(uri: str, task: str) -> tuple[dict, pd.DataFrame]:
    """Stands in for the harness: reads the metrics and per-user table the tiny model carries, via the registry."""
    assert task == "retail" and uri.startswith(f"models:/{NAME}/")
    folder = download_model_dir(uri)
    return json.loads((folder / "metrics.json").read_text()), pd.read_parquet(folder / "per_user.parquet")


def aliases(client: MlflowClient) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(NAME).aliases.items()}


def test_promotion_refuses_worse_accepts_better_and_rolls_back(mlflow_params, data_root, tmp_path):
    params, client = mlflow_params, MlflowClient()
    v1 = register(params, data_root, tmp_path, "v1", ndcg=0.30, cold=0.20, new_items=0.10)
    first = promote.promote_task(params, "retail", evaluate_from_registry)
    assert first["decision"] == "promoted" and "first model" in first["reason"]
    assert aliases(client) == {"champion": v1, "challenger": v1}

    assert promote.promote_task(params, "retail", evaluate_from_registry)["decision"] == "unchanged"

    v2 = register(params, data_root, tmp_path, "v2", ndcg=0.303, cold=0.20, new_items=0.10)  # CI spans 0
    worse = promote.promote_task(params, "retail", evaluate_from_registry)
    assert worse["decision"] == "rejected" and "lower bound is not above the margin" in worse["reason"]
    assert "paired CI" in worse["reason"] and "valid" in worse["reason"]
    assert worse["primary"]["ci_low"] < 0 < worse["primary"]["ci_high"] and worse["primary"]["split"] == "valid"
    assert aliases(client)["champion"] == v1
    tags = client.get_model_version(NAME, v2).tags
    assert tags["promotion.decision"] == "rejected" and tags["promotion.compared_with"] == v1
    assert json.loads(tags["promotion.challenger_metrics"])["ndcg@10"] == pytest.approx(0.303)
    assert json.loads(tags["promotion.champion_metrics"])["cold_users.ndcg@10"] == pytest.approx(0.20)

    register(params, data_root, tmp_path, "v3", ndcg=0.40, cold=0.15, new_items=0.10)  # cold users regress
    guarded = promote.promote_task(params, "retail", evaluate_from_registry)
    assert guarded["decision"] == "rejected" and "cold_users.ndcg@10" in guarded["reason"]
    assert aliases(client)["champion"] == v1

    v4 = register(params, data_root, tmp_path, "v4", ndcg=0.36, cold=0.21, new_items=0.12)
    better = promote.promote_task(params, "retail", evaluate_from_registry)
    assert better["decision"] == "promoted" and better["primary"]["delta"] == pytest.approx(0.06)
    assert better["primary"]["ci_low"] > params.promote.margin
    assert aliases(client) == {"champion": v4, "challenger": v4}
    assert client.get_model_version(NAME, v4).tags[promote.PREVIOUS_TAG] == v1

    back = promote.rollback_task(params, "retail")
    assert (back["from_version"], back["to_version"]) == (v4, v1)
    assert aliases(client) == {"champion": v1}  # the rolled-back version is no longer challenger either
    with pytest.raises(ShopError, match="no @challenger"):  # nothing new to promote after a rollback
        promote.promote_task(params, "retail", evaluate_from_registry)
    with pytest.raises(ShopError, match="first champion"):
        promote.rollback_task(params, "retail")


def test_rollback_cli_moves_champion_back(mlflow_params, data_root, tmp_path):
    params, client = mlflow_params, MlflowClient()
    v1 = register(params, data_root, tmp_path, "a", ndcg=0.2, cold=0.1, new_items=0.1)
    promote.promote_task(params, "retail", evaluate_from_registry)
    v2 = register(params, data_root, tmp_path, "b", ndcg=0.3, cold=0.1, new_items=0.1)
    promote.promote_task(params, "retail", evaluate_from_registry)
    assert aliases(client)["champion"] == v2
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    result = CliRunner().invoke(promote.app, ["rollback", "--task", "retail", "--params", str(params_file)])
    assert result.exit_code == 0, result.output
    assert f"v{v2} -> v{v1}" in result.output and aliases(client)["champion"] == v1


def test_promote_without_challenger_is_refused(mlflow_params):
    registry.configure(mlflow_params.mlflow)
    with pytest.raises(ShopError, match="no @challenger"):
        promote.promote_task(mlflow_params, "search", evaluate_from_registry)


def gain(value: float, low: float, high: float) -> dict:
    return {"value": value, "ci_low": low, "ci_high": high, "n": 400}


@pytest.mark.parametrize(
    ("challenger", "champion", "difference", "expected"),
    [
        (harness_like(0.31, 0.2, 0.1), harness_like(0.30, 0.2, 0.1), gain(0.01, 0.001, 0.02), True),
        (harness_like(0.31, 0.2, 0.1), harness_like(0.30, 0.2, 0.1), gain(0.01, 0.0, 0.02), False),  # bound = margin
        (harness_like(0.31, 0.2, 0.1), harness_like(0.30, 0.2, 0.1), gain(0.01, -0.001, 0.02), False),
        (harness_like(0.50, 0.2, 0.09), harness_like(0.30, 0.2, 0.1), gain(0.2, 0.1, 0.3), False),  # new items drop
        (harness_like(0.50, 0.2, 0.1), None, None, True),
    ],
)
def test_decide_needs_the_paired_ci_above_the_margin_and_guardrails(
    mlflow_params, challenger, champion, difference, expected
):
    assert mlflow_params.promote.margin == 0.0
    verdict = promote.decide(challenger, champion, mlflow_params.promote, "retail", difference)
    assert verdict["promote"] is expected


def test_decide_refuses_a_comparison_without_the_paired_difference(mlflow_params):
    with pytest.raises(ShopError, match="paired difference"):
        promote.decide(harness_like(0.3, 0.2, 0.1), harness_like(0.2, 0.2, 0.1), mlflow_params.promote, "retail")


def test_metric_value_reads_segments_and_refuses_missing_primary(mlflow_params):
    result = harness_like(0.3, 0.2, 0.1)
    assert metric_value(result, "new_items.recall@10") == pytest.approx(0.1)
    assert metric_value(result, "mrr") is None
    with pytest.raises(ShopError, match="ndcg@10"):
        promote.decide({"hr@10": {"value": 1.0}}, None, mlflow_params.promote, "retail")


def test_dvc_experiment_registers_without_moving_aliases(mlflow_params, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "sweep-share-02")
    version = register(mlflow_params, data_root, tmp_path, "exp", ndcg=0.9, cold=0.9, new_items=0.9)
    client = MlflowClient()
    assert client.get_registered_model(NAME).aliases == {}
    assert client.get_model_version(NAME, version).tags["dvc_experiment"] == "sweep-share-02"
    params_file, out = tmp_path / "params.yaml", tmp_path / "promotion.json"
    params_file.write_text(yaml.safe_dump(mlflow_params.model_dump(mode="json")))
    result = CliRunner().invoke(promote.app, ["run", "--params", str(params_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    decisions = json.loads(out.read_text())
    assert {t: d["decision"] for t, d in decisions.items()} == {"retail": "skipped", "search": "skipped"}
    assert client.get_registered_model(NAME).aliases == {}
