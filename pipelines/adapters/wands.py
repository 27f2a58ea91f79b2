"""Wayfair WANDS (MIT; tab-separated `product.csv`, `query.csv`, `label.csv`) -> canonical items and queries.

Labels: Exact -> 1.0, Partial -> 0.5, Irrelevant -> 0.0. The catalogue is every product in product.csv.
"""

from pathlib import Path

import pandas as pd

from core.errors import ShopError
from pipelines.adapters.formats import read_raw
from pipelines.adapters.judged import catalogue, judged_pairs

LABELS = {"exact": 1.0, "partial": 0.5, "irrelevant": 0.0}


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / "dataset" / name):
        if candidate.is_file():
            return candidate
    raise ShopError(f"{folder}: WANDS folder has no '{name}' (expected product.csv, query.csv, label.csv)")


def read_wands(path: Path, report: dict | None = None) -> dict[str, pd.DataFrame]:
    """Return {"items", "queries"} from a WANDS folder (or its `dataset/` subfolder)."""
    folder = Path(path)
    if not folder.is_dir():
        raise ShopError(f"{folder}: the wands adapter reads a folder holding product.csv, query.csv and label.csv")
    products = read_raw(_find(folder, "product.csv"), sep="\t", columns=["product_id", "product_name"])
    query_path, label_path = _find(folder, "query.csv"), _find(folder, "label.csv")
    queries = read_raw(query_path, sep="\t", columns=["query_id", "query"])
    labels = read_raw(label_path, sep="\t", columns=["query_id", "product_id", "label"])
    grade = labels["label"].str.strip().str.lower().map(LABELS)
    if grade.isna().any():
        raise ShopError(
            f"{label_path}: column 'label' must be Exact, Partial or Irrelevant "
            f"(found {labels['label'][grade.isna()].iloc[0]!r})"
        )
    text = labels["query_id"].map(queries.set_index("query_id")["query"])
    if text.isna().any():
        raise ShopError(f"{label_path}: query_id {labels['query_id'][text.isna()].iloc[0]!r} is not in query.csv")
    category = products.get("category hierarchy", products.get("product_class"))
    items = catalogue(
        products["product_id"],
        products["product_name"].fillna(""),
        "wands",
        description=products.get("product_description"),
        category=category,
    )
    pairs = judged_pairs(text, labels["product_id"], grade, "wands")
    if report is not None:
        report.update(
            rows_in=len(labels),
            pairs=len(pairs),
            distinct_queries=int(pairs["query_id"].nunique()),
            items=len(items),
        )
    return {"items": items, "queries": pairs}
