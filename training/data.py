"""Training inputs: the fused set (or the real split), retail basket examples in time, search pairs."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import ShopError
from core.io import read_table
from core.tasks import get_task
from features.point_in_time import add_context
from training.models import USER_CONTEXT, ContextFeatures, bucket_edges, bucketize, history_inputs

log = logging.getLogger(__name__)
SNAPSHOT_DAYS = 14  # item-context snapshot spacing: staleness vs. candidate matrices per batch


def training_table(data: Path, splits: Path, task: str, variant: str) -> tuple[pd.DataFrame, Path]:
    """The fused rows `<data>/train.parquet`, else the real split `<splits>/train.parquet`.

    `data` is the variant's fused folder (data/fused/<task>/<variant>). A missing `weight` column means weight 1
    for every row. Refuses a named variant that does not exist when fused sets of the task exist.
    """
    fused = data / "train.parquet"
    if fused.exists():
        path = fused
    elif data.parent.exists() and variant != "noaug":
        raise ShopError(f"{fused}: fused variant '{variant}' not found")
    else:
        path = splits / "train.parquet"
        log.warning("%s not found: training on the real split %s", fused, path)
    df = read_table(path, get_task(task).table)
    if "weight" not in df.columns:
        df["weight"] = 1.0
    df["weight"] = pd.to_numeric(df["weight"], errors="coerce").fillna(1.0).astype(float)
    return df[df["weight"] > 0].reset_index(drop=True), path


def skipped_reason(data: Path) -> str | None:
    """Why fuse did not write the variant folder `data` (its manifest's `skipped`), or None when it did."""
    manifest = data / "manifest.json"
    return json.loads(manifest.read_text()).get("skipped") if manifest.is_file() else None


def items_table(data: Path, canonical: Path) -> pd.DataFrame:
    """The items table the variant trains with: `<data>/items.parquet` (e.g. enriched item text), else the
    canonical `<canonical>/items.parquet`."""
    path = data / "items.parquet"
    path = path if path.is_file() else canonical / "items.parquet"
    log.info("items from %s", path)
    return read_table(path, "items")


def valid_cutoff(splits: Path) -> pd.Timestamp:
    """The retail validation cutoff recorded by the split stage in `<splits>/split.json`."""
    path = splits / "split.json"
    try:
        ts = pd.Timestamp(json.loads(path.read_text())["valid_cutoff"])
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (OSError, KeyError, ValueError) as exc:
        raise ShopError(f"{path}: cannot read 'valid_cutoff' ({exc})") from None


# --------------------------------------------------------------------------------------------- retail
@dataclass
class RetailExamples:
    """Basket examples over a fixed item catalogue (indices into `item_ids`)."""

    item_ids: list[str]
    buckets: np.ndarray  # (W, C, G) bucket ids per snapshot
    edges: dict
    week: np.ndarray  # (N,)
    hist: list[list[int]]
    rep: list[list[int]]
    rep_feats: list[list[list[float]]]
    user_feats: np.ndarray  # (N, U)
    targets: list[list[int]]
    weight: np.ndarray
    users: list[str]  # the example's user and basket time (for point-in-time user context)
    ts: np.ndarray


def user_history_features(state_len: int, distinct: int) -> list[float]:
    """User context computable from any history list (serving has no more): log events, log distinct items."""
    return [float(np.log1p(state_len)), float(np.log1p(distinct))]


def retail_examples(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    before: pd.Timestamp,
    history_len: int,
    repeat_history: int,
    n_buckets: int,
    max_targets: int,
    seed: int,
) -> RetailExamples:
    """One example per identified basket with ts < `before` and a non-empty history.

    Item context features are point-in-time: weekly snapshots computed from rows strictly before each
    snapshot's start; an example uses the snapshot of its week.
    """
    rows = interactions[interactions["ts"] < before].copy()
    rows["item_id"] = rows["item_id"].astype(str)
    item_ids = sorted(rows["item_id"].unique())
    index = {item: i for i, item in enumerate(item_ids)}
    catalogue = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates("item_id").set_index("item_id")
    cat_items = catalogue.reindex(item_ids).reset_index().fillna({"title": "", "description": "", "category": ""})
    t0 = rows["ts"].min().floor("D")
    n_weeks = int((before - t0) / pd.Timedelta(days=SNAPSHOT_DAYS)) + 1
    context = ContextFeatures(rows)
    snaps = [context.at(cat_items, t0 + pd.Timedelta(days=SNAPSHOT_DAYS * w)) for w in range(n_weeks)]
    edges = bucket_edges(context.at(cat_items, before), n_buckets)
    buckets = np.stack([bucketize(s, edges) for s in snaps])

    rng = np.random.default_rng(seed)
    known = rows.dropna(subset=["user_id"]).sort_values(["user_id", "ts", "basket_id"], kind="stable")
    users, baskets = known["user_id"].astype(str).to_numpy(), known["basket_id"].astype(str).to_numpy()
    item_arr, weights = known["item_id"].to_numpy(), known["weight"].to_numpy()
    ts_arr = known["ts"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
    week_arr = (
        (ts_arr - np.datetime64(t0.tz_convert("UTC").tz_localize(None), "ns")) // np.timedelta64(SNAPSHOT_DAYS, "D")
    ).astype(int)
    # a new basket starts where the user, the basket id or the time changes
    change = np.ones(len(known), dtype=bool)
    change[1:] = (users[1:] != users[:-1]) | (baskets[1:] != baskets[:-1]) | (ts_arr[1:] != ts_arr[:-1])
    starts = np.flatnonzero(change).tolist() + [len(known)]
    out = {k: [] for k in ("week", "hist", "rep", "rep_feats", "user_feats", "targets", "weight", "users", "ts")}
    state: dict = {}
    n_events = 0
    for lo, hi in zip(starts[:-1], starts[1:], strict=True):
        if lo == 0 or users[lo] != users[lo - 1]:
            state, n_events = {}, 0
        basket_items = list(dict.fromkeys(item_arr[lo:hi]))
        if state:
            recent, rep, feats = history_inputs(state, history_len, repeat_history)
            targets = [index[i] for i in basket_items]
            if len(targets) > max_targets:
                targets = rng.choice(targets, max_targets, replace=False).tolist()
            out["week"].append(int(week_arr[lo]))
            out["hist"].append([index[i] for i in recent])
            out["rep"].append([index[i] for i in rep])
            out["rep_feats"].append(feats)
            out["user_feats"].append(user_history_features(n_events, len(state)))
            out["targets"].append(targets)
            out["weight"].append(float(weights[lo:hi].mean()))
            out["users"].append(users[lo])
            out["ts"].append(ts_arr[lo])
        for item in item_arr[lo:hi]:
            state[item] = state.pop(item, 0) + 1
            n_events += 1
    if not out["week"]:
        raise ShopError(f"no identified basket with an earlier purchase before {before}: nothing to train on")
    return RetailExamples(
        item_ids,
        buckets,
        edges,
        np.asarray(out["week"]),
        out["hist"],
        out["rep"],
        out["rep_feats"],
        np.asarray(out["user_feats"], dtype=np.float32),
        out["targets"],
        np.asarray(out["weight"], dtype=np.float32),
        out["users"],
        np.asarray(out["ts"], dtype="datetime64[ns]"),
    )


def user_context(user_ids: list[str], at, store) -> pd.DataFrame:
    """Feast `user_stats` (USER_CONTEXT columns) as of each user's time `at` (one time or one per user).

    Row-aligned with `user_ids`; NaN where the store has no snapshot of the user at that time. Raises ShopError
    naming the store when it cannot be read (not built: `python -m features.build`).
    """
    frame = pd.DataFrame(
        {
            "user_id": [str(u) for u in user_ids],
            "ts": pd.to_datetime(pd.Series(at if np.ndim(at) else [at] * len(user_ids)), utc=True),
        }
    )
    try:
        out = add_context(frame, users=True, items=False, user_features=USER_CONTEXT, store=store)
    except ShopError:
        raise
    except Exception as exc:  # Feast raises registry / file errors of many types
        raise ShopError(
            f"Feast user context: {str(exc).splitlines()[0]} (build the store with "
            "`python -m features.build`, or set train.retail.user_context=false)"
        ) from None
    return out[[f"user_{name}" for name in USER_CONTEXT]].set_axis(USER_CONTEXT, axis=1)


def user_histories(history: pd.DataFrame, user_ids: list[str]) -> list[list[str]]:
    """Chronological item-id lists per user (the serving input of `encode_users`)."""
    known = history.dropna(subset=["user_id"]).sort_values(["ts", "basket_id"], kind="stable")
    groups = known.groupby(known["user_id"].astype(str))["item_id"].agg(lambda s: s.astype(str).tolist())
    return [groups.get(user, []) for user in user_ids]


# --------------------------------------------------------------------------------------------- search
@dataclass
class SearchPairs:
    """Positive (query, item) pairs, the judged hard negatives per query, over a catalogue of item indices."""

    queries: list[str]
    pos_item: np.ndarray
    weight: np.ndarray
    query_key: np.ndarray  # integer id of the query text, for masking
    positives: dict[int, set[int]]
    negatives: dict[int, list[int]]


def search_pairs(
    queries: pd.DataFrame, item_index: dict[str, int], positive_threshold: float, negative_threshold: float
) -> SearchPairs:
    """Pairs with relevance >= positive_threshold (weight = relevance x row weight); judged low pairs = negatives."""
    df = queries.assign(item_id=queries["item_id"].astype(str))
    df = df[df["item_id"].isin(item_index)]
    key = {q: i for i, q in enumerate(sorted(df["query"].unique()))}
    df = df.assign(key=df["query"].map(key), idx=df["item_id"].map(item_index))
    pos = df[df["relevance"] >= positive_threshold]
    neg = df[df["relevance"] <= negative_threshold]
    if pos.empty:
        raise ShopError(f"no training pair has relevance >= train.search.positive_threshold={positive_threshold}")
    return SearchPairs(
        queries=pos["query"].tolist(),
        pos_item=pos["idx"].to_numpy(np.int64),
        weight=(pos["relevance"] * pos["weight"]).to_numpy(np.float32),
        query_key=pos["key"].to_numpy(np.int64),
        positives=pos.groupby("key")["idx"].agg(set).to_dict(),
        negatives=neg.groupby("key")["idx"].agg(list).to_dict(),
    )
