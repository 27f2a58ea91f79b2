"""The canonical tables every stage reads and writes (ARCHITECTURE.md), and their validation."""

import pandas as pd

from core.errors import ShopError

# Provenance carried by every row, real or synthetic.
PROVENANCE = {"is_synthetic": "bool", "source": "string", "parent_id": "string"}

# Required columns and dtypes per table; tables may carry extra attribute columns.
TABLES: dict[str, dict[str, str]] = {
    "items": {
        "item_id": "string",
        "title": "string",
        "description": "string",
        "category": "string",
        "price": "float64",
    },
    "users": {"user_id": "string"},
    "interactions": {
        "user_id": "string",
        "item_id": "string",
        "ts": "datetime64[ns, UTC]",
        "event": "string",
        "quantity": "float64",
        "value": "float64",
        "basket_id": "string",
    },
    "queries": {"query_id": "string", "query": "string", "item_id": "string", "relevance": "float64"},
}
# Interaction `event` values: only purchases are training rows; the others are accepted and dropped at ingest.
PURCHASE_EVENTS = ("purchase",)
OTHER_EVENTS = ("view", "click", "add_to_cart", "wishlist", "return")
# Optional user attributes that stages read, with the value a user without one gets.
USER_DEFAULTS = {"country": "Unspecified"}
NON_NULL_TEXT = {
    "items": ["item_id", "title", "description", "category"],
    "queries": ["query_id", "query", "item_id"],
    "interactions": ["item_id"],
    "users": ["user_id"],
}


def validate_table(df: pd.DataFrame, table: str, name: str) -> pd.DataFrame:
    """Return `df` coerced to the canonical dtypes of `table`; raise ShopError naming `name` and the column at fault.

    Missing provenance columns are filled as real rows (`is_synthetic=False`, `source=name`).
    """
    if table not in TABLES:
        raise ShopError(f"unknown table '{table}'; expected one of {sorted(TABLES)}")
    if df.empty:
        raise ShopError(f"{name}: table '{table}' has no rows")
    optional = {"basket_id"} if table == "interactions" else set()
    missing = [c for c in TABLES[table] if c not in df.columns and c not in optional]
    if missing:
        raise ShopError(f"{name}: missing column(s) {missing} for table '{table}'")
    out = df.copy()
    if table == "interactions" and "basket_id" not in out.columns:
        out["basket_id"] = out["user_id"].astype("string") + "@" + out["ts"].astype("string")
    for column, dtype in {**TABLES[table], **PROVENANCE}.items():
        if column not in out.columns:
            out[column] = {"is_synthetic": False, "source": name, "parent_id": pd.NA}[column]
        try:
            is_time = dtype.startswith("datetime")
            out[column] = pd.to_datetime(out[column], utc=True) if is_time else out[column].astype(dtype)
        except (ValueError, TypeError) as exc:
            reason = str(exc).splitlines()[0]
            raise ShopError(f"{name}: column '{column}' cannot be read as {dtype} ({reason})") from None
    for column in NON_NULL_TEXT[table]:
        if out[column].isna().any():
            if table == "items" and column in ("title", "description", "category"):
                out[column] = out[column].fillna("")
            else:
                raise ShopError(f"{name}: column '{column}' has {int(out[column].isna().sum())} empty values")
    if table == "queries" and not out["relevance"].between(0, 1).all():
        raise ShopError(f"{name}: column 'relevance' must lie in 0..1")
    return out
