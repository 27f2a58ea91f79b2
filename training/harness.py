"""The one evaluation harness every model goes through: full-catalogue ranking, bootstrap CIs, segments.

Result shape (both tasks): {metric: {"value", "ci_low", "ci_high", "n"}, ..., "segments": {segment: {metric:
{...}}}}, where `n` is the number of users/queries the metric is defined for (NaN values are written as null).
Models are expected to be fitted already; the harness only asks them to rank.
"""

import logging
import math

import numpy as np
import pandas as pd

from core.errors import ShopError
from core.params import EvaluationParams
from training.metrics import binary_metrics, bootstrap_ci, ndcg_at_k, pairwise_accuracy, recall_at_k, rerank
from training.protocols import Recommender, Retriever

log = logging.getLogger(__name__)


def ranking_depth(params: EvaluationParams) -> int:
    """How many items a model is asked for: enough for every cut-off (MRR is computed within this depth)."""
    return max(params.k, *params.recall_ks, params.catalogue_recall_k)


def _summarise(per_unit: pd.DataFrame, params: EvaluationParams, seed: int) -> dict[str, dict]:
    return {
        column: _clean(bootstrap_ci(per_unit[column].to_numpy(float), params.bootstrap_samples, seed))
        for column in per_unit.columns
    }


def _clean(stats: dict) -> dict:
    return {key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in stats.items()}


def evaluate_recommender(
    model: Recommender,
    history: pd.DataFrame,
    targets: pd.DataFrame,
    items: pd.DataFrame,
    params: EvaluationParams,
    cutoff: pd.Timestamp | None = None,
    seed: int = 42,
    per_unit: dict | None = None,
) -> dict:
    """Score a fitted recommender on each target user's basket against the full catalogue.

    `history`: canonical interactions visible to the model (ts before the cutoff, guest rows allowed);
    `targets`: the target basket rows (one basket per user); `items`: canonical items. The catalogue is the
    items seen in `history` (recommendations outside it are dropped); target items outside it stay in the
    relevant set, so they count as misses. `cutoff` defaults to the end of the history. Metrics: all target
    items, `*_new`: the target items not in the user's history against the ranking with the user's past
    items removed (what the model would show when asked for something new), and `recall@k_repeat` /
    `recall@k_explore`: recall of the re-bought / the new-to-user target items in the same top k. Segments:
    `cold_users` (at most `cold_user_max_purchases` past baskets) and `new_items` (recall of target items first
    seen within `new_item_days` before the cutoff). Refuses empty targets or target users without history.
    `per_unit`, when given, receives the per-user metric table (index = user id) for paired comparisons.
    """
    if targets.empty:
        raise ShopError("evaluation targets are empty: no user has a basket after the cutoff")
    known = history.dropna(subset=["user_id"])
    user_ids = sorted(targets["user_id"].dropna().astype(str).unique())
    no_history = sorted(set(user_ids) - set(known["user_id"].astype(str)))
    if no_history:
        raise ShopError(f"{len(no_history)} target user(s) have no history before the cutoff, e.g. '{no_history[0]}'")
    cutoff = pd.Timestamp(cutoff) if cutoff is not None else history["ts"].max()
    catalogue = set(history["item_id"].astype(str))
    unknown_items = set(targets["item_id"].astype(str)) - set(items["item_id"].astype(str))
    if unknown_items:
        log.warning("%d target item(s) are missing from the items table", len(unknown_items))

    depth = ranking_depth(params)
    past_items = known.groupby(known["user_id"].astype(str))["item_id"].agg(lambda s: set(s.astype(str)))
    # New-to-user metrics drop the user's past items from the list, so ask deep enough to keep `depth` left.
    longest_past = max(len(past_items[user]) for user in user_ids)
    ranked = model.recommend(history, user_ids, min(len(catalogue), depth + longest_past))
    past_baskets = known.groupby(known["user_id"].astype(str))["basket_id"].nunique()
    first_seen = history.groupby(history["item_id"].astype(str))["ts"].min()
    new_items = set(first_seen[first_seen >= cutoff - pd.Timedelta(days=params.new_item_days)].index)
    wanted = targets.groupby(targets["user_id"].astype(str))["item_id"].agg(lambda s: set(s.astype(str)))

    rows, cold, recall_new_items = [], [], []
    for user in user_ids:
        full = [item for item in ranked.get(user, []) if item in catalogue]
        top = full[:depth]
        relevant = wanted[user]
        all_items = binary_metrics(top, relevant, params.k, params.recall_ks)
        unseen = [item for item in full if item not in past_items[user]][:depth]
        fresh = binary_metrics(unseen, relevant - past_items[user], params.k, params.recall_ks)
        split = {  # the same full ranking, recall of the repeat targets and of the explore targets apart
            f"recall@{params.k}_{part}": recall_at_k(top, targets, params.k)
            for part, targets in (("repeat", relevant & past_items[user]), ("explore", relevant - past_items[user]))
        }
        rows.append({**all_items, **{f"{name}_new": value for name, value in fresh.items()}, **split})
        cold.append(past_baskets[user] <= params.cold_user_max_purchases)
        recall_new_items.append({f"recall@{r}": recall_at_k(top, relevant & new_items, r) for r in params.recall_ks})
    per_user = pd.DataFrame(rows)
    cold_mask = np.array(cold)
    if per_unit is not None:
        per_unit["table"] = per_user.set_axis(pd.Index(user_ids, name="user_id")).assign(cold_user=cold_mask)
    result = _summarise(per_user, params, seed)
    result["segments"] = {
        "cold_users": _summarise(per_user[cold_mask].reset_index(drop=True), params, seed),
        "new_items": _summarise(pd.DataFrame(recall_new_items), params, seed),
    }
    log.info(
        "%s: %d users (%d cold), %s=%.4f",
        getattr(model, "name", "model"),
        len(user_ids),
        int(cold_mask.sum()),
        f"ndcg@{params.k}",
        result[f"ndcg@{params.k}"]["value"] or float("nan"),
    )
    return result


def _judged(queries: pd.DataFrame) -> pd.DataFrame:
    """One row per (query, item): a pair judged twice keeps its mean relevance."""
    judged = queries.assign(item_id=queries["item_id"].astype(str), query_id=queries["query_id"].astype(str))
    return judged.groupby(["query_id", "item_id"], as_index=False, sort=True).agg(
        query=("query", "first"), relevance=("relevance", "mean")
    )


def _query_table(model: Retriever, judged: pd.DataFrame, catalogue: set, params: EvaluationParams, pairs: bool):
    """Per-query metrics (index = query id); `pairs`: also the judged-candidate re-ranking metrics."""
    groups = list(judged.groupby("query_id", sort=True))
    depth = ranking_depth(params)
    results = model.search([group["query"].iloc[0] for _, group in groups], depth)
    if pairs:
        judged = judged.assign(score=np.asarray(model.score(judged["query"].tolist(), judged["item_id"].tolist())))
    k, rk = params.k, params.catalogue_recall_k
    rows = []
    for (_, group), hits in zip(groups, results, strict=True):
        top = [item for item, _ in hits if item in catalogue][:depth]
        gains = dict(zip(group["item_id"], group["relevance"], strict=True))
        relevant = set(group.loc[group["relevance"] >= params.relevant_threshold, "item_id"])
        row = {f"ndcg@{k}": ndcg_at_k(top, gains, k), f"recall@{rk}": recall_at_k(top, relevant, rk)}
        if pairs:
            group_scores = judged.loc[group.index, "score"]
            row[f"rerank_ndcg@{k}"] = ndcg_at_k(rerank(group["item_id"].tolist(), group_scores), gains, k)
            row["pairwise_accuracy"] = pairwise_accuracy(group["relevance"], group_scores)
        rows.append(row)
    return pd.DataFrame(rows, index=pd.Index([query_id for query_id, _ in groups], name="query_id"))


def evaluate_retriever(
    model: Retriever,
    queries: pd.DataFrame,
    items: pd.DataFrame,
    params: EvaluationParams,
    seed: int = 42,
    per_unit: dict | None = None,
    noisy: pd.DataFrame | None = None,
) -> dict:
    """Score a fitted retriever on judged queries: catalogue retrieval and judged-candidate re-ranking.

    `queries`: canonical judged (query_id, query, item_id, relevance 0..1) rows; `items`: the catalogue the
    model indexed (results outside it are dropped). Metrics: `ndcg@k` (graded, unjudged gain 0) and
    `recall@catalogue_recall_k` (judged items with relevance >= relevant_threshold) over the catalogue;
    `rerank_ndcg@k` and `pairwise_accuracy` over each query's judged items (score ties broken by item id,
    counted 1/2 in pairwise accuracy). `noisy`: the same queries with perturbed text (pipelines/noise.py) and
    the same judgments: adds `ndcg@k_noisy` and `recall@catalogue_recall_k_noisy`. Refuses empty queries.
    `per_unit`, when given, receives the per-query metric table (index = query id) for paired comparisons.
    """
    if queries.empty:
        raise ShopError("evaluation queries are empty")
    catalogue = set(items["item_id"].astype(str))
    table = _query_table(model, _judged(queries), catalogue, params, pairs=True)
    if noisy is not None:
        extra = _query_table(model, _judged(noisy), catalogue, params, pairs=False)
        table = table.join(extra.add_suffix("_noisy"), how="left")
    if per_unit is not None:
        per_unit["table"] = table
    result = _summarise(table.reset_index(drop=True), params, seed)
    result["segments"] = {}
    k = params.k
    log.info(
        "%s: %d queries, %s=%.4f%s",
        getattr(model, "name", "model"),
        len(table),
        f"ndcg@{k}",
        result[f"ndcg@{k}"]["value"] or float("nan"),
        f", noisy {result[f'ndcg@{k}_noisy']['value']:.4f}" if noisy is not None else "",
    )
    return result


def retail_eval_inputs(train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, targets) for the test split: history = all train rows, targets = test rows of known users."""
    return train, test.dropna(subset=["user_id"])
