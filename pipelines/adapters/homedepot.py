"""Home Depot Product Search Relevance (Kaggle `train.csv`, csv or csv.gz) -> canonical items and queries.

Relevance is the mean of >= 3 ratings on 1..3; normalised as (r - 1) / 2, so 3 (exact) -> 1.0, 1 -> 0.0.
"""

from pathlib import Path

import pandas as pd

from core.errors import ShopError
from pipelines.adapters.formats import as_float, read_raw
from pipelines.adapters.judged import catalogue, judged_pairs

COLUMNS = ["id", "product_uid", "product_title", "search_term", "relevance"]


def read_homedepot(path: Path, report: dict | None = None) -> dict[str, pd.DataFrame]:
    """Return {"items", "queries"}; refuse missing columns, empty ids and relevance outside 1..3."""
    path = Path(path)
    df = read_raw(path, columns=COLUMNS)
    rel = as_float(df["relevance"], path)
    if not rel.between(1, 3).all():
        raise ShopError(f"{path}: column 'relevance' must lie in 1..3 (found {rel[~rel.between(1, 3)].iloc[0]})")
    if df["product_uid"].isna().any():
        raise ShopError(f"{path}: column 'product_uid' has {int(df['product_uid'].isna().sum())} empty values")
    items = catalogue(df["product_uid"].str.strip(), df["product_title"].fillna(""), "homedepot")
    queries = judged_pairs(df["search_term"], df["product_uid"].str.strip(), (rel - 1) / 2, "homedepot")
    if report is not None:
        report.update(
            rows_in=len(df),
            pairs=len(queries),
            distinct_queries=int(queries["query_id"].nunique()),
            items=len(items),
        )
    return {"items": items, "queries": queries}
