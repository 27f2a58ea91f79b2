"""A small real slice of the Home Depot search data in canonical form, split as the `split` stage splits it.

Built from the raw file in $SHOP_DATA_DIR with the project's own adapter and split, so the search-generator
tests need no pipeline outputs.
"""

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.adapters import load_source
from pipelines.split import split_search


@functools.lru_cache(maxsize=2)
def search_slice(n_queries: int = 400, n_items: int = 3000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Return {'train', 'valid', 'test', 'items'}: `n_queries` seeded distinct queries split 70/10/20, and a
    catalogue of their judged items plus other items up to `n_items`."""
    path = Path(os.environ.get("SHOP_DATA_DIR", "../shared/data")) / "homedepot" / "search_relevance.csv.gz"
    tables = load_source("homedepot", path)
    queries, items = tables["queries"], tables["items"]
    ids = np.sort(queries["query_id"].unique())
    chosen = set(np.random.default_rng(seed).choice(ids, size=n_queries, replace=False))
    queries = queries[queries["query_id"].isin(chosen)].reset_index(drop=True)
    parts, _ = split_search(queries, 0.1, 0.2, seed)
    judged = set(queries["item_id"].astype(str))
    rest = np.sort(items.loc[~items["item_id"].astype(str).isin(judged), "item_id"].astype(str).unique())
    extra = set(np.random.default_rng(seed).choice(rest, size=max(n_items - len(judged), 0), replace=False))
    items = items[items["item_id"].astype(str).isin(judged | extra)].reset_index(drop=True)
    return {**parts, "items": items}
