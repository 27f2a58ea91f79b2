"""Ranking metrics per user or query (binary and graded), seeded bootstrap CIs, and metric lookups in results.

Implemented with numpy rather than ranx: ranx stores qrels as integers, so graded relevance in 0..1
(Home Depot's (r-1)/2) would be truncated to 0/1, and its numba compile adds ~15 s to a cold start.
Binary metrics are cross-checked against ranx in tests/training/test_metrics.py.

Conventions (one place, so every model is scored the same way):
- A ranking is a list of item ids, best first; duplicates after the first occurrence are ignored.
- NDCG uses linear gain (the relevance itself) and log2(rank + 1) discount; the ideal ranking sorts the
  judged gains. Unjudged items have gain 0.
- Recall@k = hits in the top k / min(k, number of relevant items) (the Recall@R of Liang et al. 2018, as in
  EVALUATION.md): a perfect top-k scores 1 even when a wholesale basket holds more than k items. It equals
  the textbook hits/|relevant| whenever |relevant| <= k (always so for search).
- A user/query with nothing relevant gets NaN (undefined) and is left out of means and bootstraps.
- An empty ranking scores 0 on every metric.
"""

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd


def _dedupe(ranked: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in ranked:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, n + 2))


def ndcg_at_k(ranked: Iterable[str], gains: Mapping[str, float], k: int) -> float:
    """Graded NDCG@k with linear gains (unjudged items gain 0); NaN when no judged item has positive gain."""
    ideal = np.sort(np.array([g for g in gains.values() if g > 0], dtype=float))[::-1][:k]
    if ideal.size == 0:
        return float("nan")
    top = _dedupe(ranked)[:k]
    got = np.array([float(gains.get(item, 0.0)) for item in top], dtype=float)
    dcg = float((got * _discounts(len(got))).sum()) if got.size else 0.0
    return dcg / float((ideal * _discounts(len(ideal))).sum())


def binary_metrics(ranked: Iterable[str], relevant: set[str], k: int, recall_ks: Iterable[int]) -> dict[str, float]:
    """HR@k, Recall@each of recall_ks, NDCG@k and MRR (over the whole given list) for a set of relevant items.

    All values are NaN when `relevant` is empty.
    """
    recall_ks = list(recall_ks)
    names = [f"hr@{k}", *[f"recall@{r}" for r in recall_ks], f"ndcg@{k}", "mrr"]
    if not relevant:
        return dict.fromkeys(names, float("nan"))
    top = _dedupe(ranked)
    hits = np.array([item in relevant for item in top], dtype=bool)
    out = {f"hr@{k}": float(hits[:k].any())}
    for r in recall_ks:
        out[f"recall@{r}"] = float(hits[:r].sum()) / min(r, len(relevant))
    out[f"ndcg@{k}"] = ndcg_at_k(top, dict.fromkeys(relevant, 1.0), k)
    first = np.flatnonzero(hits)
    out["mrr"] = 1.0 / (first[0] + 1) if first.size else 0.0
    return out


def recall_at_k(ranked: Iterable[str], relevant: set[str], k: int) -> float:
    """Hits of `relevant` in the top k / min(k, |relevant|); NaN when `relevant` is empty."""
    if not relevant:
        return float("nan")
    return len(set(_dedupe(ranked)[:k]) & relevant) / min(k, len(relevant))


def rerank(item_ids: list[str], scores: Iterable[float]) -> list[str]:
    """Order judged candidates by score, best first; ties broken by item id (never by relevance)."""
    order = sorted(zip(item_ids, scores, strict=True), key=lambda pair: (-float(pair[1]), pair[0]))
    return [item for item, _ in order]


def pairwise_accuracy(relevance: Iterable[float], scores: Iterable[float]) -> float:
    """Share of pairs with different relevance that the scores order correctly (a score tie counts 1/2).

    NaN when all relevances are equal (no pair to judge).
    """
    rel = np.asarray(list(relevance), dtype=float)
    sc = np.asarray(list(scores), dtype=float)
    drel = rel[:, None] - rel[None, :]
    dsc = sc[:, None] - sc[None, :]
    judged = drel > 0  # each unordered pair with different relevance counted once
    if not judged.any():
        return float("nan")
    correct = (dsc[judged] > 0).sum() + 0.5 * (dsc[judged] == 0).sum()
    return float(correct / judged.sum())


def bootstrap_ci(values: np.ndarray, samples: int, seed: int, level: float = 0.95) -> dict[str, float]:
    """Mean of the defined (non-NaN) values and its percentile bootstrap CI over them.

    Returns {"value", "ci_low", "ci_high", "n"}; the CI equals the value when `samples` is 0 or n < 2,
    and everything is NaN (n = 0) when no value is defined.
    """
    vals = np.asarray(values, dtype=float)
    vals = vals[~np.isnan(vals)]
    n = int(vals.size)
    if n == 0:
        return {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    mean = float(vals.mean())
    if samples == 0 or n < 2:
        return {"value": mean, "ci_low": mean, "ci_high": mean, "n": n}
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 200):  # chunks keep memory at 200 x n
        stop = min(samples, start + 200)
        means[start:stop] = vals[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return {"value": mean, "ci_low": float(low), "ci_high": float(high), "n": n}


def paired_difference_ci(a: pd.DataFrame, b: pd.DataFrame, key: str, samples: int, seed: int) -> dict[str, float]:
    """Mean per-user/query difference a - b of `key` over the units both define, with a paired bootstrap CI
    (the same units resampled for both models). `a` and `b` are harness per-unit tables (index = unit id);
    `cold_users.<metric>` compares cold users only (column `cold_user` of `a`)."""
    segment, _, metric = key.rpartition(".")
    rows = a.index[a["cold_user"]] if segment == "cold_users" else a.index
    diff = (a.loc[rows, metric] - b.reindex(rows)[metric]).to_numpy(float)
    return bootstrap_ci(diff, samples, seed)


def metric_stats(result: dict, key: str) -> dict:
    """The stats ({value, ci_low, ci_high, n}) of `ndcg@10` or a segment metric `cold_users.ndcg@10` in a
    harness result ({} if absent)."""
    node: object = result.get(key)
    if node is None and "." in key:
        segment, metric = key.split(".", 1)
        node = (result.get("segments") or {}).get(segment, {}).get(metric)
    return node if isinstance(node, dict) else ({} if node is None else {"value": node})


def metric_value(result: dict, key: str) -> float | None:
    """Read `ndcg@10` or a segment metric `cold_users.ndcg@10` from a harness result (None if absent)."""
    value = metric_stats(result, key).get("value")
    return None if value is None else float(value)
