"""Cleaning rules for UCI Online Retail: one small function per rule, applied in order, counts reported.

Input is the raw table with typed columns (InvoiceNo, StockCode, Description, Quantity, InvoiceDate,
UnitPrice, CustomerID, Country); output is the canonical items / users / interactions tables.
"""

import logging
from collections import defaultdict

import pandas as pd

log = logging.getLogger(__name__)

RAW_COLUMNS = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]
PRODUCT_CODE = r"^\d{5}"  # real products: stock codes starting with five digits (EVALUATION.md)
SHOP_TIMEZONE = "Europe/London"


def drop_exact_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Rows identical in every column are one line entered twice: keep the first."""
    return df[~df.duplicated(keep="first")]


def is_cancellation(df: pd.DataFrame) -> pd.Series:
    return df["InvoiceNo"].astype("string").str.upper().str.startswith("C").fillna(False).astype(bool)


def cancelled_purchases(df: pd.DataFrame) -> pd.Index:
    """Return the index of purchase lines that a later cancellation undoes.

    A cancellation line (invoice `C...`) cancels the most recent earlier, not yet cancelled purchase line of
    the same customer and stock code with the same quantity. Guest cancellations match nothing (no customer).
    """
    cancel = is_cancellation(df)
    known = df["CustomerID"].notna()
    purchases = df[~cancel & known & (df["Quantity"] > 0)].sort_values("InvoiceDate", kind="stable")
    cancels = df[cancel & known].sort_values("InvoiceDate", kind="stable")
    # Only purchases sharing a (customer, code, quantity) key with some cancellation can be undone.
    keys = ["CustomerID", "StockCode", "Quantity"]
    cancel_keys = cancels[keys].assign(Quantity=-cancels["Quantity"]).drop_duplicates()
    purchases = purchases.reset_index().merge(cancel_keys, on=keys).set_index("index")
    candidates: dict[tuple, list] = defaultdict(list)
    purchase_ts = purchases["InvoiceDate"].to_numpy().astype("int64").tolist()
    for idx, key, ts in zip(
        purchases.index.tolist(),
        zip(*(purchases[k].tolist() for k in keys), strict=True),
        purchase_ts,
        strict=True,
    ):
        candidates[key].append((ts, idx))
    matched: list = []
    taken: set = set()
    cancel_ts = cancels["InvoiceDate"].to_numpy().astype("int64").tolist()
    for key, ts in zip(
        zip(
            cancels["CustomerID"].tolist(),
            cancels["StockCode"].tolist(),
            (-cancels["Quantity"]).tolist(),
            strict=True,
        ),
        cancel_ts,
        strict=True,
    ):
        for cand_ts, idx in reversed(candidates.get(key, [])):
            if cand_ts <= ts and idx not in taken:
                taken.add(idx)
                matched.append(idx)
                break
    return pd.Index(matched)


def drop_cancellations(df: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Drop cancellation lines and the purchases they cancel; return (kept, n_cancellations, n_cancelled)."""
    cancel = is_cancellation(df)
    undone = cancelled_purchases(df)
    kept = df[~cancel & ~df.index.isin(undone)]
    return kept, int(cancel.sum()), len(undone)


def drop_non_positive_quantity(df: pd.DataFrame) -> pd.DataFrame:
    """Quantity <= 0 outside a cancellation invoice is a return or stock adjustment, not a purchase."""
    return df[df["Quantity"] > 0]


def drop_non_positive_price(df: pd.DataFrame) -> pd.DataFrame:
    """UnitPrice <= 0 marks free samples, damaged stock and bad-debt adjustments."""
    return df[df["UnitPrice"] > 0]


def drop_non_products(df: pd.DataFrame) -> pd.DataFrame:
    """Keep product codes (five leading digits); drop POST, DOT, M, D, C2, CRUK, BANK CHARGES, AMAZONFEE,
    PADS, B, S, gift vouchers and the like."""
    return df[df["StockCode"].astype("string").str.match(PRODUCT_CODE).fillna(False).astype(bool)]


def item_titles(df: pd.DataFrame) -> pd.Series:
    """One title per stock code: its most frequent non-empty description (ties: alphabetically first)."""
    desc = df["Description"].astype("string").str.strip().str.replace(r"\s+", " ", regex=True)
    counts = (
        pd.DataFrame({"item_id": df["StockCode"], "title": desc})
        .dropna()
        .query("title != ''")
        .value_counts()
        .rename("n")
        .reset_index()
    )
    best = counts.sort_values(["item_id", "n", "title"], ascending=[True, False, True]).drop_duplicates("item_id")
    return best.set_index("item_id")["title"].reindex(df["StockCode"].unique()).fillna("")


def to_utc(local: pd.Series) -> pd.Series:
    """UK shop-local wall-clock times to UTC (GMT/BST); the rare ambiguous hour is read as standard time."""
    return local.dt.tz_localize(SHOP_TIMEZONE, ambiguous=False, nonexistent="shift_forward").dt.tz_convert("UTC")


def clean_online_retail(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Apply the cleaning rules in order; return (clean rows, {rule: rows removed, ...})."""
    report: dict = {"rows_in": len(raw)}
    df = drop_exact_duplicates(raw)
    report["exact_duplicates"] = len(raw) - len(df)
    df, report["cancellation_lines"], report["cancelled_purchases"] = drop_cancellations(df)
    for rule, step in (
        ("non_positive_quantity", drop_non_positive_quantity),
        ("non_positive_price", drop_non_positive_price),
        ("non_product_codes", drop_non_products),
    ):
        before = len(df)
        df = step(df)
        report[rule] = before - len(df)
    report["rows_out"] = len(df)
    report["guest_rows_kept"] = int(df["CustomerID"].isna().sum())
    for rule, n in report.items():
        log.info("online_retail cleaning: %s = %d", rule, n)
    return df, report


def to_canonical(df: pd.DataFrame, source: str = "online_retail") -> dict[str, pd.DataFrame]:
    """Clean rows -> canonical items, users and interactions (one row per basket and item)."""
    titles = item_titles(df)
    items = df.groupby("StockCode")["UnitPrice"].median().rename("price").rename_axis("item_id").reset_index()
    items["title"] = items["item_id"].map(titles).fillna("")
    items = items.assign(description="", category="", source=source)
    lines = df.assign(value=df["Quantity"] * df["UnitPrice"])
    inter = (
        lines.groupby(["InvoiceNo", "StockCode"], sort=True)
        .agg(
            user_id=("CustomerID", "first"),
            ts=("InvoiceDate", "min"),
            quantity=("Quantity", "sum"),
            value=("value", "sum"),
            n_lines=("Quantity", "size"),
        )
        .reset_index()
        .rename(columns={"InvoiceNo": "basket_id", "StockCode": "item_id"})
    )
    inter["ts"] = to_utc(inter["ts"])
    inter = inter.assign(event="purchase", source=source).sort_values(["ts", "basket_id", "item_id"])
    inter = inter.drop(columns="n_lines")
    known = df[df["CustomerID"].notna()]
    countries = (
        known.groupby(["CustomerID", "Country"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["CustomerID", "n", "Country"], ascending=[True, False, True])
        .drop_duplicates("CustomerID")
    )
    users = countries.rename(columns={"CustomerID": "user_id", "Country": "country"})[["user_id", "country"]]
    users = users.assign(source=source)
    return {
        "items": items.reset_index(drop=True),
        "users": users.reset_index(drop=True),
        "interactions": inter.reset_index(drop=True),
    }
