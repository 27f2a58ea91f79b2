"""BM25 over the catalogue (bm25s) for round-trip filtering and hard-negative mining."""

import re

import bm25s
import numpy as np
import pandas as pd
from bm25s.stopwords import STOPWORDS_EN

from core.errors import ShopError

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_STOP = frozenset(STOPWORDS_EN)


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased word tokens of `text` with English stopwords removed (the tokenisation bm25s uses)."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOP]


def item_text(items: pd.DataFrame) -> list[str]:
    """The searchable text of each catalogue item: title, category and description."""
    cols = [c for c in ("title", "category", "description") if c in items.columns]
    return items[cols].fillna("").astype(str).agg(" ".join, axis=1).tolist()


class BM25Index:
    """A BM25 index of catalogue items (bm25s): each query scores every item at once (`BM25.get_scores_from_ids`),
    so the rank of a given item needs no full sort (`rank_of`: 12k-19k queries/s on 2 shared cores, Home Depot).
    """

    def __init__(self, items: pd.DataFrame, k1: float = 1.5, b: float = 0.75):
        if items.empty:
            raise ShopError("items: the catalogue is empty, nothing to index for BM25")
        self.item_ids = items["item_id"].astype(str).to_numpy()
        self.position = {item: i for i, item in enumerate(self.item_ids)}
        corpus = [bm25_tokens(t) or ["__empty__"] for t in item_text(items)]
        self.model = bm25s.BM25(k1=k1, b=b)
        self.model.index(corpus, show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every item for `query`, each distinct query term counted once (0: no shared term)."""
        return self.model.get_scores_from_ids(list(dict.fromkeys(self.model.get_tokens_ids(bm25_tokens(query)))))

    def rank_of(self, queries: list[str], item_ids: list[str]) -> np.ndarray:
        """Return the 0-based BM25 rank of `item_ids[i]` for `queries[i]` (items scoring strictly higher).

        A query sharing no term with its item gets rank len(catalogue). Refuses unknown item ids.
        """
        missing = [i for i in item_ids if i not in self.position]
        if missing:
            raise ShopError(f"item_id '{missing[0]}' is not in the indexed catalogue")
        ranks = np.empty(len(queries), dtype=np.int64)
        for i, (query, item) in enumerate(zip(queries, item_ids, strict=True)):
            scores = self.scores(query)
            own = scores[self.position[item]]
            ranks[i] = np.count_nonzero(scores > own) if own > 0 else len(self.item_ids)
        return ranks

    def top_k(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        """Return the top-`k` (item_id, score) per query, best first (ties broken by catalogue order)."""
        out: list[list[tuple[str, float]]] = []
        for query in queries:
            scores = self.scores(query)
            hits = np.flatnonzero(scores)
            if len(hits) > k:  # keep the k best scores (and their ties) before the ordered sort
                hits = hits[scores[hits] >= np.partition(scores[hits], len(hits) - k)[len(hits) - k]]
            best = hits[np.lexsort((hits, -scores[hits]))[:k]]
            out.append([(self.item_ids[c], float(scores[c])) for c in best])
        return out
