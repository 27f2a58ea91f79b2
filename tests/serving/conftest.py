"""Fixtures: real data slices, a real MLflow SQLite registry with fixture champions, packaging, `bentoml serve`."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from serving_fixture_models import (
    ADMIN_TOKEN,
    EXPANSION_WORD,
    FIXTURE_HYBRID,
    NEW_ITEMS,
    QUERY_DELAY_ENV,
    SLOW_DEADLINE_MS,
    SLOW_QUERY_S,
    fixture_reranker,
    register_fixture_model,
    register_ranker,
)

from core.io import write_table
from core.paths import data_dir, repo_root
from pipelines.expansion import expand_items
from serving.launch import free_port, start_service, stop_service

RETAIL_ROWS, SEARCH_ROWS = 8000, 600  # 8k Online Retail lines: 5 days, enough to train the ranker
POLL_S = 1  # the polling server's serve.reload_poll_s


def retail_slice(rows: int = RETAIL_ROWS) -> dict[str, pd.DataFrame]:
    """Canonical retail tables from the first `rows` lines of the real Online Retail file."""
    raw = pd.read_csv(
        data_dir() / "online_retail" / "online_retail.csv.gz",
        nrows=rows,
        dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": "Int64"},
    )
    raw = raw[(raw["Quantity"] > 0) & (raw["UnitPrice"] > 0) & ~raw["InvoiceNo"].str.startswith("C")]
    raw = raw.dropna(subset=["Description"])
    interactions = pd.DataFrame(
        {
            "user_id": raw["CustomerID"].astype("string"),
            "item_id": raw["StockCode"],
            "ts": pd.to_datetime(raw["InvoiceDate"], utc=True),
            "event": "purchase",
            "quantity": raw["Quantity"],
            "value": raw["Quantity"] * raw["UnitPrice"],
            "basket_id": raw["InvoiceNo"],
        }
    )
    items = (
        raw.groupby("StockCode")
        .agg(title=("Description", lambda s: s.mode().iloc[0]), price=("UnitPrice", "median"))
        .reset_index()
    )
    items = items.rename(columns={"StockCode": "item_id"}).assign(description="", category="")
    users = raw.dropna(subset=["CustomerID"]).drop_duplicates("CustomerID")
    users = pd.DataFrame({"user_id": users["CustomerID"].astype("string"), "country": users["Country"]})
    return {"items": items, "interactions": interactions, "users": users}


def search_slice(rows: int = SEARCH_ROWS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(catalogue items, judged queries) from the first `rows` lines of the real Home Depot file."""
    raw = pd.read_csv(data_dir() / "homedepot" / "search_relevance.csv.gz", nrows=rows, dtype={"product_uid": str})
    items = raw.drop_duplicates("product_uid").rename(columns={"product_uid": "item_id", "product_title": "title"})
    items = items[["item_id", "title"]].assign(description="", category="", price=0.0)
    return items, raw


def search_model_items(items: pd.DataFrame, queries: pd.DataFrame) -> pd.DataFrame:
    """The items the fixture search model was trained on: `search_text` = the title expanded with the words of the
    item's judged queries (pipelines/expansion.py), EXPANSION_WORD in the 8th item's only; the last NEW_ITEMS
    catalogue items are newer than the model (the service indexes their title)."""
    judged = queries.rename(columns={"search_term": "query", "product_uid": "item_id"})
    expanded, _ = expand_items(items.iloc[:-NEW_ITEMS].reset_index(drop=True), judged, max_terms=8)
    expanded.loc[7, "search_text"] += f" {EXPANSION_WORD}"
    return expanded


@pytest.fixture(scope="session")
def world():
    """Real slices written as canonical tables, v1 champions registered, both packaged into a fresh BentoML home."""
    # our own temp folder: pytest's shared basetemp keeps 3 runs, and parallel runs elsewhere would prune ours
    root = Path(tempfile.mkdtemp(prefix="shopaug-serving-"))
    retail = retail_slice()
    for table, frame in retail.items():
        write_table(frame, root / "canonical" / "retail" / f"{table}.parquet", table)
    search_items, queries = search_slice()
    write_table(search_items, root / "canonical" / "search" / "items.parquet", "items")
    model_items = search_model_items(search_items, queries)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "BENTOML_HOME": str(root / "bentoml"),
        "SHOPAUG_MODEL_LOADER": "serving_fixture_models:load_model",
        "HF_HUB_OFFLINE": "1",
        "SHOPAUG_REQUEST_LOG_DIR": str(root / "requests"),
        "SHOPAUG_ADMIN_TOKEN": ADMIN_TOKEN,
        # a generous deadline: the reload tests assert that no request fails on a shared 2-core machine, not its
        # latency (test_overload.py runs a server with a tight one)
        "SHOPAUG_SERVE": json.dumps(
            {
                "reload_poll_s": 0,
                "deadline_ms": 30_000,
                "request_log": {"flush_s": 0.5},
                "event_log": {"dir": str(root / "events"), "flush_s": 0.5},
            }
        ),
        # no feature store, ever: never the repository's own (data/feast/), which /events would push to
        "SHOP_FEAST_CONFIG": str(root / "no-feature-store" / "feature_store.yaml"),
        "PYTHONPATH": f"{repo_root()}:{Path(__file__).parent}",
        "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    }
    judged = queries.rename(columns={"search_term": "query", "product_uid": "item_id"})
    rerank = fixture_reranker(model_items, FIXTURE_HYBRID, judged.assign(relevance=(judged["relevance"] - 1) / 2))
    os.chdir(root)  # mlflow's default ./mlruns artifact root lands in the temp folder
    versions = {
        "recommender": register_ranker(uri, "shopaug-recommender", retail["interactions"]),
        "search": register_fixture_model(
            uri, "shopaug-search", "search", model_items, "", hybrid=FIXTURE_HYBRID, rerank=rerank
        ),
    }
    os.chdir(repo_root())
    packaged = package(root, env)
    yield {
        "root": root,
        "uri": uri,
        "env": env,
        "retail": retail,
        "search_items": search_items,
        "search_model_items": model_items,
        "queries": queries,
        "versions": versions,
        "package": packaged,
    }
    shutil.rmtree(root, ignore_errors=True)


def package(root: Path, env: dict[str, str], home: Path | None = None) -> dict:
    """Run `python -m serving.package` (no Bento build) for the registry's champions into BentoML home `home`
    (default: `env`'s); return its summary."""
    env = {**env, "BENTOML_HOME": str(home or env["BENTOML_HOME"])}
    out = root / "package.json"
    packaged = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.package",
            "--params",
            "params.yaml",
            "--canonical",
            str(root / "canonical"),
            "--no-build",
            "--out",
            str(out),
        ],
        env=env,
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert packaged.returncode == 0, packaged.stderr[-3000:]
    return json.loads(out.read_text())


@contextlib.contextmanager
def serving(root: Path, env: dict[str, str], name: str = "server") -> Iterator[str]:
    """Run a real `bentoml serve` of serving.service:Shopaug with `env` on a free port; yield its base URL once
    /readyz is 200, then stop it. Its output goes to `root/<name>.log`, kept in the temp dir after it stops."""
    port, log = free_port(), root / f"{name}.log"
    proc = start_service(port, env, log, ready_within_s=300)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_service(proc)
        shutil.copy(log, Path(tempfile.gettempdir()) / f"shopaug-serving-last-{name}.log")


@pytest.fixture(scope="session")
def repackage(world):
    """`repackage(home=None)`: package the registry's champions now (after a test registered new ones) into a
    BentoML home, by default the session server's; returns the summary."""
    return lambda home=None: package(world["root"], world["env"], home)


@pytest.fixture(scope="session")
def server(world) -> Iterator[str]:
    """A real `bentoml serve` of serving.service:Shopaug on a free port (no polling: reload by admin endpoint)."""
    with serving(world["root"], world["env"]) as base:
        yield base


def own_home(root: Path, name: str) -> Path:
    """A BentoML home holding a copy of the packaged models, for a second server: `bentoml serve` empties the
    home's Prometheus folder at start, which the session server uses."""
    home = root / f"bentoml-{name}"
    shutil.copytree(root / "bentoml" / "models", home / "models", symlinks=True, dirs_exist_ok=True)
    return home


@pytest.fixture(scope="module")
def polling_server(world) -> Iterator[str]:
    """A second real `bentoml serve`, polling the registry every POLL_S seconds, with no admin token at all (so
    only the poll can switch it), its own request log and its own BentoML home (`own_home`)."""
    root = world["root"]
    home = own_home(root, "polling")
    env = {
        **world["env"],
        "SHOPAUG_SERVE": json.dumps(
            {
                "reload_poll_s": POLL_S,
                "deadline_ms": 30_000,
                "request_log": {"flush_s": 0.5},
                "event_log": {"dir": str(root / "events-polling")},
            }
        ),
        "SHOPAUG_REQUEST_LOG_DIR": str(root / "requests-polling"),
        "BENTOML_HOME": str(home),
    }
    del env["SHOPAUG_ADMIN_TOKEN"]
    with serving(root, env, name="polling-server") as base:
        yield base


@pytest.fixture(scope="module")
def slow_server(world) -> Iterator[str]:
    """A real `bentoml serve` whose query encoder takes SLOW_QUERY_S, with 2 requests in flight at most and a
    SLOW_DEADLINE_MS deadline, so every search is past its deadline; its own request log and BentoML home."""
    root = world["root"]
    serve = {
        "reload_poll_s": 0,
        "max_in_flight": 2,
        "deadline_ms": SLOW_DEADLINE_MS,
        "request_log": {"flush_s": 0.5},
        "event_log": {"dir": str(root / "events-slow")},
    }
    env = {
        **world["env"],
        "SHOPAUG_SERVE": json.dumps(serve),
        "SHOPAUG_REQUEST_LOG_DIR": str(root / "requests-slow"),
        "BENTOML_HOME": str(own_home(root, "slow")),
        QUERY_DELAY_ENV: str(SLOW_QUERY_S),
    }
    with serving(root, env, name="slow-server") as base:
        yield base
