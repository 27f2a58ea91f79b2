"""Shared shaping for search datasets: stable query ids from query text, and judged (query, item) pairs."""

import hashlib

import pandas as pd


def normalise_query(text: pd.Series) -> pd.Series:
    """Trim and collapse whitespace; case is kept for display, ignored for identity."""
    return text.astype("string").str.strip().str.replace(r"\s+", " ", regex=True)


def query_id(text: str) -> str:
    """Stable id of a query text (case- and whitespace-insensitive), the same everywhere."""
    key = " ".join(str(text).lower().split())
    return "q" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def judged_pairs(queries: pd.Series, item_ids: pd.Series, relevance: pd.Series, source: str) -> pd.DataFrame:
    """Canonical queries table from aligned columns: one row per (query_id, item_id), relevance averaged.

    Spellings differing only in case or spacing share a query_id and the most frequent spelling.
    """
    df = pd.DataFrame(
        {
            "query": normalise_query(queries).to_numpy(),
            "item_id": item_ids.astype("string").to_numpy(),
            "relevance": relevance.astype("float64").to_numpy(),
        }
    )
    df = df[df["query"].fillna("") != ""]
    df["query_id"] = df["query"].map(query_id)
    spelling = (
        df.groupby(["query_id", "query"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["query_id", "n", "query"], ascending=[True, False, True])
        .drop_duplicates("query_id")
        .set_index("query_id")["query"]
    )
    pairs = df.groupby(["query_id", "item_id"], sort=True)["relevance"].mean().reset_index()
    pairs["query"] = pairs["query_id"].map(spelling)
    pairs["source"] = source
    return pairs[["query_id", "query", "item_id", "relevance", "source"]]


def catalogue(
    item_ids: pd.Series,
    titles: pd.Series,
    source: str,
    description: pd.Series | None = None,
    category: pd.Series | None = None,
    price: pd.Series | None = None,
) -> pd.DataFrame:
    """Canonical items table: one row per item id, its most frequent title; missing text becomes ""."""
    n = len(item_ids)

    def column(values: pd.Series | None, default: object) -> object:
        return values.to_numpy() if values is not None else [default] * n

    df = pd.DataFrame(
        {
            "item_id": item_ids.astype("string").to_numpy(),
            "title": titles.astype("string").str.strip().to_numpy(),
            "description": column(description, ""),
            "category": column(category, ""),
            "price": column(price, float("nan")),
        }
    )
    df["n"] = df.groupby(["item_id", "title"], dropna=False)["item_id"].transform("size")
    df = df.sort_values(["item_id", "n", "title"], ascending=[True, False, True]).drop_duplicates("item_id")
    for col in ("title", "description", "category"):
        df[col] = df[col].astype("string").fillna("")
    df["price"] = pd.to_numeric(df["price"], errors="coerce").astype("float64")
    df["source"] = source
    return df.drop(columns="n").reset_index(drop=True)
