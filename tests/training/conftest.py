"""Fixtures for the MLflow tests: a throw-away repo layout with tiny data files and an embedded store."""

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from core.params import load_params
from training import registry


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables created once (migrations take ~10 s); tests copy it."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_params(tmp_path, monkeypatch, empty_mlflow_db):
    """Params whose MLflow store is a fresh SQLite file + artifact folder under tmp_path."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_ARTIFACT_LOCATION"):
        monkeypatch.delenv(var, raising=False)
    shutil.copy(empty_mlflow_db, tmp_path / "mlflow.db")
    overrides = {
        "mlflow": {
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "artifact_location": str(tmp_path / "mlartifacts"),
            "system_metrics_interval_s": 0.5,
        }
    }
    params = load_params(overrides=overrides)
    registry.configure(params.mlflow)
    yield params
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def data_root(tmp_path) -> Path:
    """A repo-shaped folder: retail splits, one synthetic generator (rows + manifest), its gate decision, fused
    variant folders, a dvc.lock."""
    root = tmp_path / "repo"
    ts = pd.Timestamp("2011-10-01", tz="UTC")
    real = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["a", "b", "a"],
            "ts": [ts] * 3,
            "event": ["purchase"] * 3,
            "quantity": [1, 2, 1],
            "value": [1.0, 2.0, 1.0],
            "basket_id": ["x", "x", "y"],
            "is_synthetic": [False] * 3,
            "source": ["online_retail"] * 3,
            "parent_id": [None] * 3,
        }
    )
    synthetic = real.assign(user_id="s1", is_synthetic=True, source="cf_interactions", parent_id="u1")
    for rel, df in {
        "data/splits/retail/train.parquet": real,
        "data/splits/retail/valid.parquet": real.head(1),
        "data/synthetic/cf_interactions/rows.parquet": synthetic,
        "data/fused/retail/aug/train.parquet": pd.concat([real, synthetic]).assign(weight=1.0),
        "data/fused/retail/noaug/train.parquet": real.assign(weight=1.0),
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(root / rel, index=False)
    (root / "data/synthetic/cf_interactions/manifest.json").write_text(
        json.dumps({"generator": "cf_interactions", "params": {"per_user": 5}, "seed": 42})
    )
    (root / "data/fused/retail/aug/manifest.json").write_text(json.dumps({"synthetic_share": 0.5}))
    (root / "metrics/gate").mkdir(parents=True)
    (root / "metrics/gate/cf_interactions.json").write_text(json.dumps({"decision": "pass"}))
    size = (root / "data/fused/retail/aug/train.parquet").stat().st_size
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  fuse:\n    outs:\n    - path: data/fused/retail/aug/train.parquet\n"
        f"      hash: md5\n      md5: 0123456789abcdef0123456789abcdef\n      size: {size}\n"
    )
    return root
