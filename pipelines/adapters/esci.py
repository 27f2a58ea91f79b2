"""Amazon Shopping Queries (ESCI, Apache-2.0; examples + products Parquet) -> canonical items and queries.

Labels use the ESCI paper's gains: Exact 1.0, Substitute 0.1, Complement 0.01, Irrelevant 0.0. All locales are
kept; a `locale` column lets users filter (product ids repeat across locales: the first listing is kept).
"""

from pathlib import Path

import pandas as pd

from core.errors import ShopError
from pipelines.adapters.formats import read_raw
from pipelines.adapters.judged import catalogue, judged_pairs

GAINS = {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0}
EXAMPLES = "shopping_queries_dataset_examples.parquet"
PRODUCTS = "shopping_queries_dataset_products.parquet"


def read_esci(path: Path, report: dict | None = None) -> dict[str, pd.DataFrame]:
    """Return {"items", "queries"} from a folder holding the ESCI examples and products Parquet files."""
    folder = Path(path)
    if not folder.is_dir():
        raise ShopError(f"{folder}: the esci adapter reads a folder holding {EXAMPLES} and {PRODUCTS}")
    for name in (EXAMPLES, PRODUCTS):
        if not (folder / name).is_file():
            raise ShopError(f"{folder}: ESCI folder has no '{name}'")
    examples = read_raw(folder / EXAMPLES, columns=["query", "product_id", "esci_label"])
    products = read_raw(folder / PRODUCTS, columns=["product_id", "product_title"])
    gain = examples["esci_label"].astype("string").str.strip().str.upper().map(GAINS)
    if gain.isna().any():
        raise ShopError(
            f"{folder / EXAMPLES}: column 'esci_label' must be E, S, C or I "
            f"(found {examples['esci_label'][gain.isna()].iloc[0]!r})"
        )
    description = products.get("product_description")
    if description is not None and "product_bullet_point" in products:
        description = description.fillna(products["product_bullet_point"])
    items = catalogue(
        products["product_id"],
        products["product_title"].fillna(""),
        "esci",
        description=description,
        category=products.get("product_brand"),
    )
    if "product_locale" in products:
        items["locale"] = items["item_id"].map(
            products.drop_duplicates("product_id").set_index("product_id")["product_locale"]
        )
    unknown = ~examples["product_id"].isin(products["product_id"])
    if unknown.any():
        raise ShopError(
            f"{folder / EXAMPLES}: product_id {examples['product_id'][unknown].iloc[0]!r} is not in {PRODUCTS}"
        )
    pairs = judged_pairs(examples["query"], examples["product_id"], gain, "esci")
    if report is not None:
        report.update(
            rows_in=len(examples),
            pairs=len(pairs),
            distinct_queries=int(pairs["query_id"].nunique()),
            items=len(items),
        )
    return {"items": items, "queries": pairs}
