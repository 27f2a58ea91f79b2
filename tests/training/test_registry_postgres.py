"""The team setup by configuration only: tracking + registry on the real PostgreSQL (127.0.0.1:5432)."""

import uuid

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow_helpers import TinyPyfunc, tiny_model_dir

from core.params import load_params
from training import promote, tracking

psycopg2 = pytest.importorskip("psycopg2")
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def _admin():
    try:
        conn = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432 ({exc})")
    conn.autocommit = True
    return conn


@pytest.fixture
def postgres_uri():
    """A uniquely named database for this test run, dropped afterwards (even with MLflow's pool open)."""
    name = f"shopaug_test_{uuid.uuid4().hex[:12]}"
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def test_postgres_registry_tracks_registers_and_promotes(postgres_uri, data_root, tmp_path, monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_ARTIFACT_LOCATION"):
        monkeypatch.delenv(var, raising=False)
    # the only change from the embedded default: params (no code path differs)
    params = load_params(
        overrides={"mlflow": {"tracking_uri": postgres_uri, "artifact_location": str(tmp_path / "artifacts")}}
    )
    with tracking.start_run(params, "search", "aug", root=data_root) as run:
        run.log_metrics({"valid/ndcg@10": 0.4}, step=1)
        version = run.log_model(
            tiny_model_dir(tmp_path / "model", 0.4),
            python_model=TinyPyfunc(),
            input_example=pd.DataFrame({"query": ["drill"]}),
        )

    client = MlflowClient()
    assert mlflow.get_tracking_uri().startswith("postgresql+psycopg2://")
    assert client.get_run(run.run_id).data.metrics["valid/ndcg_at_10"] == pytest.approx(0.4)
    challenger = client.get_model_version_by_alias("shopaug-search", "challenger")
    assert str(challenger.version) == str(version.version)

    metrics = {"ndcg@10": {"value": 0.4}, "recall@100": {"value": 0.7}, "segments": {}}
    record = promote.promote_task(params, "search", lambda uri, task: (metrics, pd.DataFrame()))
    assert record["decision"] == "promoted"
    champion = client.get_model_version_by_alias("shopaug-search", "champion")
    assert champion.tags["promotion.decision"] == "promoted"

    with psycopg2.connect(dbname=postgres_uri.rsplit("/", 1)[1], **PG) as conn, conn.cursor() as cur:
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = 'shopaug-search'")
        assert sorted(cur.fetchall()) == [("challenger", 1), ("champion", 1)]
