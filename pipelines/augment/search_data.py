"""What the search generators may read: real TRAINING queries and the catalogue, never valid/test queries."""

from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import ShopError
from core.io import read_table


def load_search_training(train_path: Path, items_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (training queries, catalogue items); refuses a queries file that is not a training split."""
    if Path(train_path).stem in ("valid", "test"):
        raise ShopError(f"{train_path}: generators read training queries only, never a {Path(train_path).stem} split")
    train = read_table(train_path, "queries")
    items = read_table(items_path, "items")
    return train[~train["is_synthetic"]].reset_index(drop=True), items.reset_index(drop=True)


def price_band(price: pd.Series) -> pd.Series:
    """Catalogue-relative price band (budget / mid-range / premium by tercile); empty where price is unknown."""
    known = price.dropna()
    if known.empty:
        return pd.Series([""] * len(price), index=price.index, dtype="string")
    low, high = np.quantile(known, [1 / 3, 2 / 3])
    band = np.where(price <= low, "budget", np.where(price <= high, "mid-range", "premium"))
    return pd.Series(np.where(price.isna(), "", band), index=price.index, dtype="string")


def take(df: pd.DataFrame, limit: int | None, seed: int, key: str) -> pd.DataFrame:
    """A seeded sample of at most `limit` rows of `df` (sorted by `key` first, so it is order-independent)."""
    df = df.sort_values(key, kind="stable").reset_index(drop=True)
    if limit is None or limit >= len(df):
        return df
    keep = np.sort(np.random.default_rng(seed).choice(len(df), size=limit, replace=False))
    return df.iloc[keep].reset_index(drop=True)
