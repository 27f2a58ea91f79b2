"""Bring your own data: a folder already holding canonical Parquet tables (items + interactions [+ users],
or items + queries), checked against the contract of docs/data.md#bring-your-own-data and core/schema.py."""

import logging
from pathlib import Path

import pandas as pd

from core.errors import ShopError
from core.schema import OTHER_EVENTS, PURCHASE_EVENTS, USER_DEFAULTS, validate_table
from pipelines.adapters.formats import as_id, read_raw

log = logging.getLogger(__name__)

ID_COLUMNS = ("user_id", "item_id", "basket_id", "query_id")


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
    tables = {
        name: read_shop_table(folder / f"{name}.parquet", name)
        for name in ("items", "interactions", "queries", "users")
        if (folder / f"{name}.parquet").is_file()
    }
    if "interactions" not in tables and "queries" not in tables:
        raise ShopError(f"{folder}: no interactions.parquet (recommendation) or queries.parquet (search)")
    report = {} if report is None else report
    if "interactions" in tables:
        report["interaction_rows_in"] = len(tables["interactions"])
        tables["interactions"] = purchases(tables["interactions"], folder / "interactions.parquet", report)
        tables["users"] = complete_users(tables.get("users"), tables["interactions"], folder / "users.parquet")
    report.update({f"{name}_rows": len(df) for name, df in tables.items()})
    return tables


def read_shop_table(path: Path, table: str) -> pd.DataFrame:
    """Read one table with ids as strings (906.0 -> "906", see as_id) and validate it; ShopError names the
    file and the column at fault."""
    df = read_raw(path)
    for column in set(ID_COLUMNS) & set(df.columns):
        df[column] = as_id(df[column])
    if "ts" in df.columns:
        if pd.api.types.is_numeric_dtype(df["ts"]):
            raise ShopError(f"{path}: column 'ts' must hold timestamps, not {df['ts'].dtype} numbers")
        if not isinstance(df["ts"].dtype, pd.DatetimeTZDtype):
            log.warning("%s: column 'ts' has no time zone; times without a UTC offset are read as UTC", path)
    if "source" not in df.columns:
        df["source"] = "canonical"
    return validate_table(df, table, str(path))


def purchases(inter: pd.DataFrame, path: Path, report: dict) -> pd.DataFrame:
    """Keep purchase rows (counting the other known events in `report`); refuse unknown events, a quantity
    that is not positive and a value (the line total) that is negative."""
    event = inter["event"].str.strip().str.lower()
    unknown = ~event.isin(PURCHASE_EVENTS + OTHER_EVENTS)
    if unknown.any():
        raise ShopError(
            f"{path}: column 'event' has unknown value {inter['event'][unknown].iloc[0]!r} "
            f"({int(unknown.sum())} row(s)); expected one of {list(PURCHASE_EVENTS + OTHER_EVENTS)}"
        )
    bought = event.isin(PURCHASE_EVENTS)
    report["non_purchase_rows_dropped"] = {k: int(v) for k, v in event[~bought].value_counts().sort_index().items()}
    log.info(
        "%s: %d purchase rows kept, non-purchases dropped: %s", path, bought.sum(), report["non_purchase_rows_dropped"]
    )
    inter = inter[bought].assign(event="purchase")
    if inter.empty:
        raise ShopError(f"{path}: no purchase rows (column 'event' must be 'purchase' on bought lines)")
    for column, ok, rule in (
        ("quantity", inter["quantity"] > 0, "a positive number"),
        ("value", inter["value"] >= 0, "a non-negative number (the line total)"),
    ):
        if not ok.all():
            raise ShopError(
                f"{path}: column '{column}' must be {rule} on purchase rows "
                f"({int((~ok).sum())} row(s) are not, e.g. {inter[column][~ok].iloc[0]})"
            )
    return inter


def complete_users(users: pd.DataFrame | None, inter: pd.DataFrame, path: Path) -> pd.DataFrame:
    """One row per user (derived from the interactions when users.parquet is absent; interaction users it
    lacks are added with a warning); the attributes of USER_DEFAULTS get their default where absent or null."""
    ids = inter["user_id"].dropna().drop_duplicates().sort_values()
    if users is None:
        users = pd.DataFrame({"user_id": ids.to_numpy(), "source": "canonical"})
    elif not users["user_id"].is_unique:
        raise ShopError(f"{path}: user_id {users['user_id'][users['user_id'].duplicated()].iloc[0]!r} appears twice")
    else:
        new = ids[~ids.isin(users["user_id"])]
        if len(new):
            share = f"{len(new)} of {len(ids)} interaction users ({100 * len(new) / len(ids):.1f}%)"
            log.warning("%s: %s are missing; added with default attributes %s", path, share, USER_DEFAULTS)
            added = pd.DataFrame({"user_id": new.to_numpy(), "is_synthetic": False, "source": "canonical"})
            users = pd.concat([users, added], ignore_index=True)
    for column, default in USER_DEFAULTS.items():
        users[column] = users[column].astype("string").fillna(default) if column in users.columns else default
    return validate_table(users, "users", str(path))
