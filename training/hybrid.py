"""Hybrid retrieval: a convex combination of min-max normalised lexical (BM25) and dense scores.

Bruch, Gai and Ingber (ACM TOIS 2023) find this beats reciprocal rank fusion once its one weight is tuned. Per
query, each side is min-max normalised over the union of both sides' top `depth` items; items outside that
union are not retrieved. `weight` = the lexical share (1 = BM25 alone, 0 = the dense model alone), chosen on the
validation split (`tune_weight`). Any two retrievers with `item_ids` and `catalogue_scores(queries)` over the
same catalogue can be fused; `HybridRetriever` is the result as a `Retriever` (training/protocols.py).
"""

import numpy as np
import pandas as pd

from core.errors import ShopError
from training.lexical import pair_scores, ranked, search_catalogue
from training.metrics import ndcg_at_k


def _normalised(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    lo = np.where(candidates, scores, np.inf).min(axis=1, keepdims=True)
    hi = np.where(candidates, scores, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (scores - lo) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


def _top_mask(scores: np.ndarray, depth: int) -> np.ndarray:
    depth = min(depth, scores.shape[1])
    mask = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(mask, np.argpartition(-scores, depth - 1, axis=1)[:, :depth], True, axis=1)
    return mask


def fuse(lexical: np.ndarray, dense: np.ndarray, weight: float, depth: int, candidates_only: bool = True) -> np.ndarray:
    """Fused (n_queries, n_items) scores. `candidates_only`: items outside both top-`depth` lists get -inf
    (retrieval); otherwise every item keeps its fused score (scoring judged pairs)."""
    if lexical.shape != dense.shape:
        raise ShopError(f"hybrid: lexical scores {lexical.shape} and dense scores {dense.shape} differ in shape")
    candidates = _top_mask(lexical, depth) | _top_mask(dense, depth)
    fused = weight * _normalised(lexical, candidates) + (1.0 - weight) * _normalised(dense, candidates)
    return np.where(candidates, fused, -np.inf) if candidates_only else fused


def top_positions(scores: np.ndarray, depth: int) -> np.ndarray:
    """Positions of one query's top-`depth` scores (unordered), chosen as `fuse` chooses candidates."""
    return np.argpartition(-scores, min(depth, len(scores)) - 1)[:depth]


def fuse_candidates(lexical: np.ndarray, dense: np.ndarray, weight: float) -> np.ndarray:
    """`fuse` for one query, given both sides' scores on its candidate set only (the union of the two top-`depth`
    lists, in any order): the same fused scores, without scoring the whole catalogue on the dense side."""
    candidates = np.ones((1, len(lexical)), dtype=bool)
    return (
        weight * _normalised(lexical[None, :], candidates) + (1.0 - weight) * _normalised(dense[None, :], candidates)
    )[0]


class HybridRetriever:
    """`weight` x lexical + (1 - weight) x dense, both fitted on the same catalogue; a `Retriever`."""

    def __init__(self, lexical, dense, weight: float, depth: int, name: str = "hybrid"):
        if not 0.0 <= weight <= 1.0:
            raise ShopError(f"hybrid: weight must be within [0, 1], got {weight}")
        self.lexical, self.dense, self.weight, self.depth, self.name = lexical, dense, weight, depth, name

    @property
    def item_ids(self) -> list[str]:
        return self.dense.item_ids

    def fit(self, queries: pd.DataFrame, items: pd.DataFrame) -> None:
        self.lexical.fit(queries, items)
        self.dense.fit(queries, items)
        if list(self.lexical.item_ids) != list(self.dense.item_ids):
            raise ShopError("hybrid: the lexical and dense sides indexed different catalogues")

    def catalogue_scores(self, queries: list[str], candidates_only: bool = False) -> np.ndarray:
        lexical, dense = self.lexical.catalogue_scores(queries), self.dense.catalogue_scores(queries)
        return fuse(lexical, dense, self.weight, self.depth, candidates_only)

    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        return search_catalogue(self, queries, k)

    def score(self, queries: list[str], item_ids: list[str]) -> list[float]:
        return pair_scores(self, queries, item_ids)


def tune_weight(
    lexical, dense, valid: pd.DataFrame, grid: list[float], depth: int, k: int = 10
) -> tuple[float, dict[float, float]]:
    """The weight in `grid` with the best mean NDCG@k on `valid` (query, item_id, relevance rows; graded,
    whole catalogue), ties to the smaller weight; returns (weight, {weight: NDCG@k})."""
    if valid.empty or not grid:
        raise ShopError("hybrid: tuning the weight needs validation queries and a non-empty grid")
    groups = list(valid.assign(item_id=valid["item_id"].astype(str)).groupby("query", sort=True))
    texts = [text for text, _ in groups]
    gains = [dict(zip(g["item_id"], g["relevance"], strict=True)) for _, g in groups]
    ids = list(dense.item_ids)
    totals = {w: [] for w in grid}
    for start in range(0, len(texts), 256):
        chunk = texts[start : start + 256]
        lex, den = lexical.catalogue_scores(chunk), dense.catalogue_scores(chunk)
        for w in grid:
            fused = fuse(lex, den, w, depth)
            for row, g in zip(fused, gains[start:], strict=False):
                top = [item for item, score in ranked(ids, row, k) if np.isfinite(score)]
                totals[w].append(ndcg_at_k(top, g, k))
    curve = {w: float(np.nanmean(values)) for w, values in totals.items()}
    best = max(grid, key=lambda w: (curve[w], -w))
    return best, curve
