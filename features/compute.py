"""Feature computation: daily user and item snapshots from the training interactions, point-in-time safe.

Grain: a snapshot stamped t (a boundary every `snapshot_days` days, the last one at the split cutoff) holds
aggregates of every interaction with ts < t. Each entity gets one row per boundary from its first activity to
the cutoff (a dense grid), so time-dependent features (recency, popularity windows, age) are exact at each
boundary and a point-in-time lookup at time u sees the last boundary <= u: at most `snapshot_days` stale.
"""

import datetime as dt
import logging

import numpy as np
import pandas as pd

from core.errors import ShopError

log = logging.getLogger(__name__)
# Number of title text clusters (TF-IDF + k-means); user shares have one column per cluster.
N_TEXT_CLUSTERS = 8
HOUR_BUCKETS = ("night", "morning", "midday", "afternoon", "evening")  # [0,8) [8,11) [11,14) [14,17) [17,24)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY = pd.Timedelta(days=1)
HOUR_EDGES = [0, 8, 11, 14, 17, 24]


def text_clusters(items: pd.DataFrame, k: int = N_TEXT_CLUSTERS, seed: int = 42) -> pd.Series:
    """Return a title cluster id (0..k-1) per item_id: TF-IDF word uni/bigrams, then seeded k-means."""
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    titles = items["title"].fillna("").astype(str).str.lower()
    if len(items) < k or titles.str.strip().eq("").all():
        return pd.Series(np.arange(len(items)) % k, index=items["item_id"].to_numpy(), dtype="int64")
    matrix = TfidfVectorizer(ngram_range=(1, 2), min_df=1, max_features=20000).fit_transform(titles)
    labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(matrix)
    return pd.Series(labels.astype("int64"), index=items["item_id"].to_numpy())


def item_attributes(items: pd.DataFrame, enrichment: pd.DataFrame | None, seed: int = 42) -> pd.DataFrame:
    """Return static item attributes indexed by item_id: title statistics, text cluster and category.

    The category comes from `enrichment` (item_id, category) when given, else the items table ('' if empty).
    """
    items = items.drop_duplicates("item_id").reset_index(drop=True)
    titles = items["title"].fillna("").astype(str)
    tokens = titles.str.split()
    out = pd.DataFrame(
        {
            "title_chars": titles.str.len().astype("int64").to_numpy(),
            "title_tokens": tokens.str.len().astype("int64").to_numpy(),
            "title_mean_token_len": tokens.map(lambda t: float(np.mean([len(w) for w in t])) if t else 0.0)
            .astype("float32")
            .to_numpy(),
            "text_cluster": text_clusters(items, seed=seed).to_numpy(),
            "category": items.get("category", pd.Series("", index=items.index)).fillna("").astype(str).to_numpy(),
        },
        index=pd.Index(items["item_id"].astype(str), name="item_id"),
    )
    if enrichment is not None and {"item_id", "category"} <= set(enrichment.columns):
        extra = enrichment.dropna(subset=["category"]).drop_duplicates("item_id", keep="last")
        extra = extra.set_index(extra["item_id"].astype(str))["category"].astype(str)
        extra = extra[extra.str.strip() != ""]
        known = extra.index.intersection(out.index)
        out.loc[known, "category"] = extra.loc[known]
    return out


def _bucketize(train: pd.DataFrame, cutoff: pd.Timestamp, snapshot_days: int) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Add `idx`: the number of the first snapshot boundary that includes each row; return (rows, origin)."""
    if train.empty:
        raise ShopError("train.parquet: no interactions to compute features from")
    if (train["ts"] >= cutoff).any():
        raise ShopError(f"train.parquet: {(train['ts'] >= cutoff).sum()} row(s) at or after the cutoff {cutoff}")
    step = pd.Timedelta(days=snapshot_days)
    n_steps = int(np.ceil((cutoff - train["ts"].min()) / step))
    origin = cutoff - n_steps * step
    out = train.copy()
    out["idx"] = ((out["ts"] - origin) // step).astype("int64") + 1  # ts in [b - step, b) -> boundary b
    return out, origin


def _grid(first_idx: pd.Series, last_idx: int, key: str) -> pd.DataFrame:
    """One row per entity and boundary from its first boundary to `last_idx` (the dense snapshot grid)."""
    lengths = (last_idx - first_idx.to_numpy() + 1).astype("int64")
    ids = np.repeat(first_idx.index.to_numpy(), lengths)
    starts = np.repeat(first_idx.to_numpy(), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return pd.DataFrame({key: ids, "idx": (starts + offsets).astype("int64")})


def _cumulate(grid: pd.DataFrame, per_bucket: pd.DataFrame, key: str, sums: list[str]) -> pd.DataFrame:
    """Join per-bucket aggregates onto the grid (0 where nothing happened), then make running totals."""
    out = grid.merge(per_bucket, on=[key, "idx"], how="left")
    out[sums] = out[sums].fillna(0)
    out[sums] = out.groupby(key, sort=False)[sums].cumsum()
    return out


def _stamp(frame: pd.DataFrame, origin: pd.Timestamp, snapshot_days: int, created: pd.Timestamp) -> pd.DataFrame:
    frame["event_timestamp"] = origin + frame["idx"] * pd.Timedelta(days=snapshot_days)
    frame["created"] = created
    return frame


def user_features(
    train: pd.DataFrame,
    attrs: pd.DataFrame,
    users: pd.DataFrame | None,
    cutoff: pd.Timestamp,
    snapshot_days: int = 1,
) -> pd.DataFrame:
    """Return daily user snapshots (user_id, event_timestamp, created, user_stats features) from `train`."""
    rows, origin = _bucketize(train[train["user_id"].notna()], cutoff, snapshot_days)
    last_idx = int((cutoff - origin) / pd.Timedelta(days=snapshot_days))
    rows["user_id"] = rows["user_id"].astype(str)
    rows["item_id"] = rows["item_id"].astype(str)
    hour = pd.cut(rows["ts"].dt.hour, HOUR_EDGES, right=False, labels=list(HOUR_BUCKETS))
    cluster = rows["item_id"].map(attrs["text_cluster"]).fillna(-1).astype("int64")
    category = rows["item_id"].map(attrs["category"]).fillna("")
    onehot = pd.concat(
        [
            pd.get_dummies(hour).reindex(columns=list(HOUR_BUCKETS), fill_value=0).add_prefix("h_"),
            pd.get_dummies(rows["ts"].dt.dayofweek)
            .reindex(columns=range(7), fill_value=0)
            .set_axis([f"d_{d}" for d in WEEKDAYS], axis=1),
            pd.get_dummies(cluster).reindex(columns=range(N_TEXT_CLUSTERS), fill_value=0).add_prefix("c_"),
        ],
        axis=1,
    ).astype("float64")
    base = pd.concat([rows[["user_id", "idx", "quantity", "value"]], onehot], axis=1)
    base["n_lines"] = 1.0
    count_cols = [c for c in base.columns if c not in ("user_id", "idx")]
    per_bucket = base.groupby(["user_id", "idx"], sort=False)[count_cols].sum()
    per_bucket["frequency"] = rows.groupby(["user_id", "idx"], sort=False)["basket_id"].nunique()
    per_bucket["last_ts"] = rows.groupby(["user_id", "idx"], sort=False)["ts"].max()
    per_bucket = per_bucket.reset_index()
    first = rows.groupby("user_id")["idx"].min()
    sums = count_cols + ["frequency"]
    out = _cumulate(_grid(first, last_idx, "user_id"), per_bucket.drop(columns="last_ts"), "user_id", sums)
    out = _stamp(out, origin, snapshot_days, pd.Timestamp.now(tz="UTC"))
    last_ts = per_bucket[["user_id", "idx", "last_ts"]]
    out = out.merge(last_ts, on=["user_id", "idx"], how="left")
    out["last_ts"] = out.groupby("user_id", sort=False)["last_ts"].ffill()
    first_ts = rows.groupby("user_id")["ts"].min()
    n = out["n_lines"].to_numpy()
    feats = pd.DataFrame(
        {
            "user_id": out["user_id"],
            "event_timestamp": out["event_timestamp"],
            "created": out["created"],
            "recency_days": (out["event_timestamp"] - out["last_ts"]) / DAY,
            "frequency": out["frequency"].astype("int64"),
            "monetary": out["value"],
            "n_lines": out["n_lines"].astype("int64"),
            "avg_basket_size": n / out["frequency"].to_numpy(),
            "avg_basket_value": out["value"].to_numpy() / out["frequency"].to_numpy(),
            "days_since_first_purchase": (out["event_timestamp"] - out["user_id"].map(first_ts)) / DAY,
        }
    )
    country = users.drop_duplicates("user_id").set_index("user_id")["country"] if users is not None else None
    feats["country"] = out["user_id"].map(country).fillna("").astype(str) if country is not None else ""
    for b in HOUR_BUCKETS:
        feats[f"share_{b}"] = out[f"h_{b}"].to_numpy() / n
    for d in WEEKDAYS:
        feats[f"share_{d}"] = out[f"d_{d}"].to_numpy() / n
    for k in range(N_TEXT_CLUSTERS):
        feats[f"share_cluster_{k}"] = out[f"c_{k}"].to_numpy() / n
    feats["top_category"], feats["top_category_share"] = _top_category(rows, category, out, n)
    return _finish(feats, "user_id")


def _top_category(rows: pd.DataFrame, category: pd.Series, grid: pd.DataFrame, n: np.ndarray) -> tuple:
    """Running most-purchased category per grid row (ties: alphabetical) and its share of purchase lines."""
    named = category[category != ""]
    if named.empty:
        return "", 0.0
    top = named.value_counts().index[:32]  # cap the running count matrix at the 32 most common categories
    named = named[named.isin(top)]
    names = np.asarray(sorted(top))
    hits = pd.DataFrame(
        {
            "user_id": rows.loc[named.index, "user_id"],
            "idx": rows.loc[named.index, "idx"],
            "k": pd.Categorical(named, categories=names).codes,
        }
    )
    counts = pd.crosstab([hits["user_id"], hits["idx"]], hits["k"])
    counts = counts.reindex(columns=range(len(names)), fill_value=0)
    counts.columns = [f"k{c}" for c in counts.columns]
    counts = counts.reset_index()
    cols = [c for c in counts.columns if c.startswith("k")]
    running = _cumulate(grid[["user_id", "idx"]], counts, "user_id", cols)[cols].to_numpy()
    best = running.argmax(axis=1)
    best_count = running[np.arange(len(running)), best]
    labels = np.where(best_count > 0, names[best], "")
    return labels, np.where(n > 0, best_count / n, 0.0)


def item_features(
    train: pd.DataFrame,
    attrs: pd.DataFrame,
    cutoff: pd.Timestamp,
    snapshot_days: int = 1,
    windows: tuple[int, ...] = (7, 30, 90),
    cold_start_days: int = 30,
    max_basket_items: int = 200,
) -> pd.DataFrame:
    """Return daily item snapshots (item_id, event_timestamp, created, item_stats features) from `train`.

    Guest rows count for popularity, price and co-purchase; buyers and repurchase use identified users only.
    Baskets with more than `max_basket_items` distinct items are left out of the co-purchase degree.
    """
    rows, origin = _bucketize(train, cutoff, snapshot_days)
    last_idx = int((cutoff - origin) / pd.Timedelta(days=snapshot_days))
    rows["item_id"] = rows["item_id"].astype(str)
    qty = rows["quantity"].clip(lower=1)
    rows["unit_price"] = (rows["value"] / qty).astype("float64")
    rows["price2"] = rows["unit_price"] ** 2
    keys = ["item_id", "idx"]
    per_bucket = rows.groupby(keys, sort=False).agg(
        n_baskets=("basket_id", "nunique"),
        n_lines=("unit_price", "size"),
        price_sum=("unit_price", "sum"),
        price2_sum=("price2", "sum"),
        price_min=("unit_price", "min"),
        price_max=("unit_price", "max"),
    )
    # A buyer counts in the bucket of their first basket with the item, a repeater in that of the second.
    known = rows[rows["user_id"].notna()].drop_duplicates(["item_id", "user_id", "basket_id"])
    known = known.sort_values("ts")
    nth = known.groupby(["item_id", "user_id"], sort=False).cumcount()
    per_bucket["new_buyers"] = known[nth == 0].groupby(keys).size()
    per_bucket["new_repeaters"] = known[nth == 1].groupby(keys).size()
    per_bucket["new_partners"] = _new_copurchase_partners(rows, max_basket_items)
    per_bucket = per_bucket.fillna({"new_buyers": 0, "new_repeaters": 0, "new_partners": 0}).reset_index()
    first = rows.groupby("item_id")["idx"].min()
    grid = _grid(first, last_idx, "item_id")
    sums = ["n_baskets", "n_lines", "price_sum", "price2_sum", "new_buyers", "new_repeaters", "new_partners"]
    out = _cumulate(grid, per_bucket.drop(columns=["price_min", "price_max"]), "item_id", sums)
    extremes = grid.merge(per_bucket[keys + ["price_min", "price_max"]], on=keys, how="left")
    for column, running in (("price_min", "cummin"), ("price_max", "cummax")):
        # Buckets without sales are NaN; the running extreme carries over them.
        extremes[column] = extremes.groupby("item_id", sort=False)[column].transform(running)
        out[column] = extremes.groupby("item_id", sort=False)[column].ffill().to_numpy()
    out = _stamp(out, origin, snapshot_days, pd.Timestamp.now(tz="UTC"))
    by_item = out.groupby("item_id", sort=False)["n_baskets"]
    feats = pd.DataFrame(
        {"item_id": out["item_id"], "event_timestamp": out["event_timestamp"], "created": out["created"]}
    )
    for w in windows:
        lag = max(1, w // snapshot_days)
        feats[f"pop_{w}d"] = (out["n_baskets"] - by_item.shift(lag).fillna(0)).astype("int64")
    lines = out["n_lines"].to_numpy()
    mean = out["price_sum"].to_numpy() / lines
    feats["n_baskets"] = out["n_baskets"].astype("int64")
    feats["n_buyers"] = out["new_buyers"].astype("int64")
    feats["repurchase_rate"] = np.where(
        out["new_buyers"] > 0, out["new_repeaters"] / out["new_buyers"].clip(lower=1), 0.0
    )
    feats["price_mean"] = mean
    feats["price_std"] = np.sqrt(np.clip(out["price2_sum"].to_numpy() / lines - mean**2, 0, None))
    feats["price_min"] = out["price_min"]
    feats["price_max"] = out["price_max"]
    feats["copurchase_degree"] = out["new_partners"].astype("int64")
    static = attrs.reindex(out["item_id"].to_numpy())
    feats["title_chars"] = static["title_chars"].fillna(0).astype("int64").to_numpy()
    feats["title_tokens"] = static["title_tokens"].fillna(0).astype("int64").to_numpy()
    feats["title_mean_token_len"] = static["title_mean_token_len"].fillna(0).to_numpy()
    feats["text_cluster"] = static["text_cluster"].fillna(-1).astype("int64").to_numpy()
    feats["category"] = static["category"].fillna("").astype(str).to_numpy()
    first_ts = rows.groupby("item_id")["ts"].min()
    age = (out["event_timestamp"] - out["item_id"].map(first_ts)) / DAY
    feats["days_since_first_seen"] = age
    feats["is_cold_start"] = (age < cold_start_days).astype("int64")
    return _finish(feats, "item_id")


def _new_copurchase_partners(rows: pd.DataFrame, max_basket_items: int) -> pd.Series:
    """Per (item_id, idx): other items first bought together with the item in that bucket."""
    lines = rows[["basket_id", "item_id", "idx"]].drop_duplicates(["basket_id", "item_id"])
    size = lines.groupby("basket_id")["item_id"].transform("size")
    lines = lines[(size > 1) & (size <= max_basket_items)]
    codes, _ = pd.factorize(lines["item_id"])
    lines = lines.assign(code=codes.astype("int64"))[["basket_id", "code", "idx", "item_id"]]
    pairs = lines.merge(lines[["basket_id", "code"]], on="basket_id", suffixes=("", "_other"))
    pairs = pairs[pairs["code"] != pairs["code_other"]]
    first = pairs.groupby(["code", "code_other"], sort=False)["idx"].min().reset_index()
    names = lines.drop_duplicates("code").set_index("code")["item_id"]
    first["item_id"] = first["code"].map(names)
    return first.groupby(["item_id", "idx"]).size()


def _finish(feats: pd.DataFrame, key: str) -> pd.DataFrame:
    """Cast to the Feast schema dtypes (float32 for Float32 fields) and sort by entity and time."""
    for column in feats.columns:
        if feats[column].dtype == "float64":
            feats[column] = feats[column].astype("float32")
    feats[key] = feats[key].astype(str)
    return feats.sort_values([key, "event_timestamp"], kind="stable").reset_index(drop=True)


def cutoff_timestamp(cutoff: dt.date | str | pd.Timestamp) -> pd.Timestamp:
    """The split cutoff as a UTC timestamp at midnight."""
    ts = pd.Timestamp(cutoff)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
