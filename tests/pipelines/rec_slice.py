"""A small real slice of Online Retail in canonical form (train/valid/test as the split contract defines
them).

Built straight from the raw file in $SHOP_DATA_DIR so the recommendation-generator tests need no pipeline
outputs.
"""

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd

CUTOFF = pd.Timestamp("2011-11-01", tz="UTC")
VALID_CUTOFF = CUTOFF - pd.Timedelta(days=30)


@functools.lru_cache(maxsize=2)
def retail_slice(n_users: int = 300, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Return {'train', 'valid', 'test', 'items', 'users'} for `n_users` seeded customers (plus their
    items)."""
    path = Path(os.environ.get("SHOP_DATA_DIR", "../shared/data")) / "online_retail" / "online_retail.csv.gz"
    raw = pd.read_csv(path, dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": "Int64"})
    raw = raw[
        raw["CustomerID"].notna()
        & (raw["Quantity"] > 0)
        & (raw["UnitPrice"] > 0)
        & ~raw["InvoiceNo"].str.startswith("C")
        & raw["StockCode"].str.match(r"^\d{5}")
    ]
    customers = np.sort(raw["CustomerID"].unique())
    chosen = np.random.default_rng(seed).choice(customers, size=n_users, replace=False)
    raw = raw[raw["CustomerID"].isin(chosen)]
    ts = (
        pd.to_datetime(raw["InvoiceDate"])
        .dt.tz_localize("Europe/London", ambiguous="NaT", nonexistent="shift_forward")
        .dt.tz_convert("UTC")
    )
    rows = pd.DataFrame(
        {
            "user_id": raw["CustomerID"].astype(str).to_numpy(),
            "item_id": raw["StockCode"].to_numpy(),
            "ts": ts.to_numpy(),
            "event": "purchase",
            "quantity": raw["Quantity"].to_numpy(),
            "value": (raw["Quantity"] * raw["UnitPrice"]).round(2).to_numpy(),
            "basket_id": raw["InvoiceNo"].to_numpy(),
            "price": raw["UnitPrice"].to_numpy(),
            "title": raw["Description"].fillna("").to_numpy(),
            "country": raw["Country"].to_numpy(),
        }
    ).dropna(subset=["ts"])
    rows["ts"] = pd.to_datetime(rows["ts"], utc=True)
    items = (
        rows.groupby("item_id")
        .agg(title=("title", lambda s: s.mode().iloc[0]), price=("price", "median"))
        .reset_index()
        .assign(description="", category="", is_synthetic=False, source="online_retail")
    )
    users = rows.drop_duplicates("user_id")[["user_id", "country"]].assign(is_synthetic=False, source="online_retail")
    inter = (
        rows.groupby(["user_id", "basket_id", "item_id"], as_index=False)
        .agg(ts=("ts", "min"), quantity=("quantity", "sum"), value=("value", "sum"))
        .assign(event="purchase", is_synthetic=False, source="online_retail")
    )
    train = inter[inter["ts"] < CUTOFF].reset_index(drop=True)
    return {
        "train": train,
        "valid": _first_basket(train, VALID_CUTOFF),
        "test": _first_basket(inter, CUTOFF),
        "items": items,
        "users": users.reset_index(drop=True),
    }


def _first_basket(rows: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Rows of each user's first basket on/after `cutoff`, for users with a purchase before it."""
    before = set(rows.loc[rows["ts"] < cutoff, "user_id"])
    after = rows[(rows["ts"] >= cutoff) & rows["user_id"].isin(before)]
    first = after.sort_values("ts").groupby("user_id")["basket_id"].first()
    return after[after["basket_id"].isin(set(first))].reset_index(drop=True)
