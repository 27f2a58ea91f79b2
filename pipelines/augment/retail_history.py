"""The leakage-safe retail history every recommendation generator learns from: train rows before the
validation cutoff.

Validation targets are each user's first basket on/after `valid_cutoff` (inside train.parquet) and test
targets lie after `cutoff` (never in train.parquet), so generators that only see rows with `ts < valid_cutoff`
can derive nothing from either. Every synthetic row they write also carries `ts < valid_cutoff`, which fuse
re-checks.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.encoder import TextEncoder
from core.errors import ShopError
from core.io import read_table
from core.params import EncoderParams, Params


def valid_cutoff(params: Params) -> pd.Timestamp:
    """Return the validation cutoff (UTC): `split.retail.cutoff - split.retail.valid_days`."""
    cutoff = pd.Timestamp(params.split.retail.cutoff, tz="UTC")
    return cutoff - pd.Timedelta(days=params.split.retail.valid_days)


def safe_history(train: pd.DataFrame, before: pd.Timestamp, guests: bool = False) -> pd.DataFrame:
    """Return train rows with `ts < before`, sorted by (user, ts, basket); guest rows only if `guests`."""
    rows = train[train["ts"] < before]
    if not guests:
        rows = rows[rows["user_id"].notna()]
    if rows.empty:
        raise ShopError(f"train.parquet: no rows before the validation cutoff {before.date()} to learn from")
    return rows.sort_values(["user_id", "ts", "basket_id", "item_id"], kind="stable").reset_index(drop=True)


def load_history(params: Params, train_path: Path | str, guests: bool = False) -> pd.DataFrame:
    """Read train.parquet (and nothing else of the splits) and return its leakage-safe part."""
    train = read_table(train_path, "interactions")
    return safe_history(train, valid_cutoff(params), guests=guests)


@dataclass(frozen=True)
class UserItemMatrix:
    """Sparse user x item purchase counts (number of baskets holding the item) with the id of every
    row/column."""

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray


def user_item_matrix(history: pd.DataFrame) -> UserItemMatrix:
    """Count, per identified user and item, the baskets that hold the item; ids sorted for determinism."""
    rows = history[history["user_id"].notna()]
    pairs = rows.groupby(["user_id", "item_id"], observed=True)["basket_id"].nunique().reset_index()
    users = np.sort(pairs["user_id"].unique().astype(str))
    items = np.sort(pairs["item_id"].unique().astype(str))
    u = np.searchsorted(users, pairs["user_id"].astype(str).to_numpy())
    i = np.searchsorted(items, pairs["item_id"].astype(str).to_numpy())
    matrix = sp.csr_matrix((pairs["basket_id"].to_numpy(dtype=np.float32), (u, i)), shape=(len(users), len(items)))
    return UserItemMatrix(matrix, users, items)


def item_unit_stats(history: pd.DataFrame) -> pd.DataFrame:
    """Per item: median quantity (int >= 1) and median unit price (value / quantity) in the history."""
    rows = history.assign(unit=history["value"] / history["quantity"].clip(lower=1))
    stats = rows.groupby("item_id", observed=True).agg(quantity=("quantity", "median"), unit=("unit", "median"))
    stats["quantity"] = stats["quantity"].round().clip(lower=1).astype("int64")
    return stats


def encode_titles(items: pd.DataFrame, encoder: EncoderParams) -> np.ndarray:
    """Return MiniLM unit vectors of the item titles (item id when a title is empty), in `items` order."""
    titles = [t.strip() or i for t, i in zip(items["title"].astype(str), items["item_id"].astype(str), strict=True)]
    return TextEncoder(encoder.model, encoder.max_length, encoder.batch_size).encode(titles)
