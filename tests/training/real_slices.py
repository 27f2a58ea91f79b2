"""Small real slices of $SHOP_DATA_DIR laid out like the repo's data/ folder (canonical tables + splits)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.paths import data_dir

CUTOFF = pd.Timestamp("2011-11-01", tz="UTC")
VALID_CUTOFF = CUTOFF - pd.Timedelta(days=30)


def _write(root: Path, rel: str, df: pd.DataFrame) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(root / rel, index=False)


def retail_slice(root: Path, n_users: int = 120, n_items: int = 300) -> Path:
    """The most active customers' purchases of the most popular items, split like the `split` stage."""
    raw = pd.read_csv(
        data_dir() / "online_retail/online_retail.csv.gz", dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": str}
    )
    raw = raw[
        ~raw["InvoiceNo"].str.startswith("C")
        & (raw["Quantity"] > 0)
        & (raw["UnitPrice"] > 0)
        & raw["StockCode"].str.match(r"^\d{5}")
        & raw["CustomerID"].notna()
    ]
    top_items = raw["StockCode"].value_counts().index[:n_items]
    raw = raw[raw["StockCode"].isin(top_items)]
    top_users = raw.groupby("CustomerID")["InvoiceNo"].nunique().sort_values(ascending=False).index[:n_users]
    raw = raw[raw["CustomerID"].isin(top_users)]
    inter = pd.DataFrame(
        {
            "user_id": raw["CustomerID"].str.replace(r"\.0$", "", regex=True),
            "item_id": raw["StockCode"],
            "ts": pd.to_datetime(raw["InvoiceDate"]).dt.tz_localize("UTC"),
            "event": "purchase",
            "quantity": raw["Quantity"].astype("int64"),
            "value": raw["Quantity"] * raw["UnitPrice"],
            "basket_id": raw["InvoiceNo"],
        }
    ).drop_duplicates(["basket_id", "item_id"])
    items = raw.groupby("StockCode").agg(title=("Description", "first"), price=("UnitPrice", "median"))
    items = items.reset_index().rename(columns={"StockCode": "item_id"}).assign(description="", category="")
    items["title"] = items["title"].fillna("")
    _write(root, "data/canonical/retail/items.parquet", items)
    train = inter[inter["ts"] < CUTOFF]

    def first_basket(rows: pd.DataFrame, before: pd.DataFrame) -> pd.DataFrame:
        rows = rows[rows["user_id"].isin(set(before["user_id"]))]
        return rows[rows["ts"] == rows.groupby("user_id")["ts"].transform("min")]

    _write(root, "data/splits/retail/train.parquet", train)
    _write(
        root,
        "data/splits/retail/valid.parquet",
        first_basket(train[train["ts"] >= VALID_CUTOFF], train[train["ts"] < VALID_CUTOFF]),
    )
    (root / "data/splits/retail/split.json").write_text(
        json.dumps({"cutoff": str(CUTOFF), "valid_cutoff": str(VALID_CUTOFF)})
    )
    return root


def feast_store(root: Path) -> Path:
    """A real Feast repo (file offline store, SQLite online) over the retail slice's train split; its yaml path."""
    import shutil

    import features
    from core.paths import repo_root
    from features.build import apply_definitions, compute_tables

    train = pd.read_parquet(root / "data/splits/retail/train.parquet")
    items = pd.read_parquet(root / "data/canonical/retail/items.parquet")
    users, item_rows = compute_tables(train, items, None, None, CUTOFF)
    _write(root, "data/features/user_features.parquet", users)
    _write(root, "data/features/item_features.parquet", item_rows)
    config = root / "features" / "feature_store.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(repo_root() / "features" / "feature_store.yaml", config)
    apply_definitions(features.open_store(config))
    return config


def search_slice(root: Path, n_rows: int = 1200, seed: int = 0) -> Path:
    """The first judged pairs of Home Depot: catalogue = their products; queries split by text 75/25."""
    raw = pd.read_csv(data_dir() / "homedepot/search_relevance.csv.gz", nrows=n_rows, dtype={"product_uid": str})
    items = raw.groupby("product_uid")["product_title"].first().reset_index()
    items = items.rename(columns={"product_uid": "item_id", "product_title": "title"})
    _write(root, "data/canonical/search/items.parquet", items.assign(description="", category="", price=np.nan))
    queries = pd.DataFrame(
        {
            "query_id": raw["search_term"].map(lambda s: hashlib.sha1(s.encode()).hexdigest()[:12]),
            "query": raw["search_term"],
            "item_id": raw["product_uid"],
            "relevance": (raw["relevance"] - 1) / 2,
        }
    )
    texts = np.array(sorted(queries["query"].unique()))
    np.random.default_rng(seed).shuffle(texts)
    valid = set(texts[: len(texts) // 4])
    _write(root, "data/splits/search/train.parquet", queries[~queries["query"].isin(valid)])
    _write(root, "data/splits/search/valid.parquet", queries[queries["query"].isin(valid)])
    return root
