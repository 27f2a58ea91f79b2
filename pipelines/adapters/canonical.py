"""Bring your own data: a folder already holding canonical Parquet tables (items + interactions [+ users],
or items + queries), validated against core/schema.py."""

from pathlib import Path

import pandas as pd

from core.errors import ShopError
from core.io import read_table


def read_canonical(path: Path, report: dict | None = None) -> dict[str, pd.DataFrame]:
    """Return the tables found; refuse a folder with neither interactions.parquet nor queries.parquet."""
    folder = Path(path)
    if not folder.is_dir():
        raise ShopError(
            f"{folder}: the canonical adapter reads a folder of Parquet tables "
            "(items.parquet with interactions.parquet or queries.parquet)"
        )
    if not (folder / "items.parquet").is_file():
        raise ShopError(f"{folder}: no items.parquet (the catalogue: item_id, title, description, category, price)")
    tables = {"items": read_table(folder / "items.parquet", "items")}
    for name in ("interactions", "queries", "users"):
        if (folder / f"{name}.parquet").is_file():
            tables[name] = read_table(folder / f"{name}.parquet", name)
    if "interactions" not in tables and "queries" not in tables:
        raise ShopError(f"{folder}: no interactions.parquet (recommendation) or queries.parquet (search)")
    if "interactions" in tables and "users" not in tables:
        ids = tables["interactions"]["user_id"].dropna().drop_duplicates().sort_values()
        tables["users"] = pd.DataFrame({"user_id": ids.to_numpy(), "source": "canonical"})
    for name, table in tables.items():  # rows without a source column were stamped with the file name
        table["source"] = table["source"].where(table["source"] != f"{name}.parquet", "canonical")
    if report is not None:
        report.update({f"{name}_rows": len(df) for name, df in tables.items()})
    return tables
