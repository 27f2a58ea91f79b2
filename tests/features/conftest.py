"""Small interaction logs built in code, and Feast repos in tmp folders (SQLite, or Redis + SQL registry)."""

import contextlib
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from core.paths import repo_root
from features.build import compute_tables, load_to_store
from features.store import open_store

CUTOFF = "2011-11-01"
REDIS = "127.0.0.1:6379"


def make_interactions(n_users: int = 30, n_items: int = 25, n_baskets: int = 250, seed: int = 0):
    """Return (interactions, items, users): random baskets over 300 days before the cutoff, 10% guests."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2011-01-05", tz="UTC")
    rows = []
    for b in range(n_baskets):
        user = f"u{rng.integers(n_users)}" if rng.random() > 0.1 else None
        ts = start + pd.Timedelta(minutes=int(rng.integers(0, 295 * 24 * 60)))
        for item in rng.choice(n_items, size=int(rng.integers(1, 6)), replace=False):
            qty = int(rng.integers(1, 10))
            rows.append(
                {
                    "user_id": user,
                    "item_id": f"i{item}",
                    "ts": ts,
                    "event": "purchase",
                    "quantity": qty,
                    "value": qty * float(1 + item % 7),
                    "basket_id": f"b{b}",
                }
            )
    interactions = pd.DataFrame(rows)
    kinds = ["mug", "lamp", "candle", "bag", "card"]
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"red {kinds[i % 5]} set {i}" for i in range(n_items)],
            "description": "",
            "category": "",
            "price": 1.0,
        }
    )
    users = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(n_users)],
            "country": ["United Kingdom" if i % 3 else "France" for i in range(n_users)],
        }
    )
    return interactions, items, users


@pytest.fixture(scope="session")
def data():
    return make_interactions()


@pytest.fixture(scope="session")
def tables(data):
    interactions, items, users = data
    return compute_tables(interactions, items, users, None, CUTOFF)


def _repo(root: Path, tables, yaml_text: str | None = None) -> Path:
    """Lay out root/features/feature_store.yaml + root/data/features/*.parquet; return the yaml path."""
    (root / "features").mkdir(parents=True)
    config = root / "features" / "feature_store.yaml"
    if yaml_text is None:
        shutil.copy(repo_root() / "features" / "feature_store.yaml", config)
    else:
        config.write_text(yaml_text)
    out = root / "data" / "features"
    out.mkdir(parents=True)
    tables[0].to_parquet(out / "user_features.parquet", index=False)
    tables[1].to_parquet(out / "item_features.parquet", index=False)
    return config


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory, tables):
    """A materialised store with the embedded default configuration (SQLite online, file registry)."""
    root = tmp_path_factory.mktemp("feast_sqlite")
    config = _repo(root, tables)
    load_to_store(root / "data" / "features", config)
    return open_store(config)


def _postgres(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


@contextlib.contextmanager
def production_store(root: Path, tables):
    """The production profile (Redis online store + SQL registry on PostgreSQL) with a one-off project name.

    Uses the project's feature_store.production.yaml unchanged, configured by environment variables only;
    tears the project down afterwards (its Redis keys and registry rows).
    """
    project = f"shopaug_test_{uuid.uuid4().hex[:10]}"
    yaml_text = (repo_root() / "features" / "feature_store.production.yaml").read_text()
    config = _repo(root, tables, yaml_text)
    # A database of its own: tearing a SQL registry down drops its tables for every project in the database.
    _postgres(f"CREATE DATABASE {project}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHOP_FEAST_PROJECT", project)
        patch.setenv("SHOP_FEAST_REGISTRY_URL", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{project}")
        patch.setenv("SHOP_FEAST_REDIS", REDIS)
        try:
            load_to_store(root / "data" / "features", config)
            yield open_store(config)
        finally:
            open_store(config).teardown()  # a fresh store: its registry lists what to delete
            _postgres(f"DROP DATABASE IF EXISTS {project} WITH (FORCE)")


def redis_keys(project: str) -> int:
    """Number of Redis keys Feast holds for `project` (its keys end with the project name)."""
    client = redis.Redis.from_url(f"redis://{REDIS}")
    return sum(1 for _ in client.scan_iter(match=f"*{project}", count=1000))


@pytest.fixture(scope="module")
def redis_store(tmp_path_factory, tables):
    with production_store(tmp_path_factory.mktemp("feast_redis"), tables) as store:
        yield store


@pytest.fixture
def make_production_store():
    """Factory: `with make_production_store(root, tables) as store:` (see production_store)."""
    return production_store


@pytest.fixture
def count_redis_keys():
    return redis_keys
