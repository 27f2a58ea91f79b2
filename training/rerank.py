"""The re-ranking stage of search: LightGBM LambdaRank over a hybrid's top `depth` candidates.

The first stage (training/hybrid.py) gives each query a candidate list with three scores: BM25, the bi-encoder's
and their fused score. The re-ranker reads those and the words the query shares with each candidate's title and
indexed (expanded) text, and learns the order from graded (query, item) judgments: the variant's training rows,
real and synthetic, so an augmented model's re-ranker also learns from the language model's queries. It is
early-stopped on the real validation split. Candidates keep their first-stage set; only their order changes.

A learned ranker over cheap features, not a cross-encoder: on 2 CPU cores MiniLM as a cross-encoder scores about
60-120 (query, title) pairs/s, minutes per evaluation pass and far over a 20 ms request budget (docs/training.md).
"""

import logging
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core.errors import ShopError
from core.params import RerankParams
from training.metrics import ndcg_at_k

log = logging.getLogger(__name__)

FEATURES = [
    "fused",
    "lexical",
    "dense",
    "lexical_norm",
    "dense_norm",
    "fused_rank",
    "lexical_rank",
    "dense_rank",
    "query_words",
    "title_words",
    "title_cover",
    "text_cover",
    "last_word_in_title",
    "numbers_cover",
]
TIE_STEP = 1e-5  # re-ranked scores of one query differ by at least this (float32 keeps it at scores < 64)
GRADES = 4  # judged relevance in [0, 1] -> integer labels 0..3 (LambdaRank), linear gains as the harness uses


@dataclass
class Candidates:
    """One query's first-stage candidates: item positions and their BM25, dense and fused scores."""

    positions: np.ndarray
    lexical: np.ndarray
    dense: np.ndarray
    fused: np.ndarray


def _norm(values: np.ndarray) -> np.ndarray:
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def _rank(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(-values, kind="stable"), kind="stable").astype(np.float32)


@dataclass
class ItemWords:
    """Analysed words (the BM25 analyser: units, stems) of each item's title and indexed (expanded) text, rows
    aligned with the catalogue the first stage scores; kept as space-joined strings, which load in a fraction of
    the time sets of words take (the service unpickles them during a champion swap)."""

    titles: list[str]
    texts: list[str]

    @classmethod
    def build(cls, lexical, titles: list[str], texts: list[str]) -> "ItemWords":
        analysed = [" ".join(t) for t in lexical.analyse(titles)]
        return cls(analysed, analysed if texts == titles else [" ".join(t) for t in lexical.analyse(texts)])

    def title(self, position: int) -> set[str]:
        return set(self.titles[position].split())

    def text(self, position: int) -> set[str]:
        return set(self.texts[position].split())


def query_words(lexical, text: str) -> list[str]:
    """A query's analysed words, typo-corrected as BM25 reads it."""
    corrector = lexical.corrector
    return lexical.analyse([corrector(text) if corrector is not None else text])[0]


def features(query: list[str], cands: Candidates, words: ItemWords) -> np.ndarray:
    """(len(candidates), len(FEATURES)) float32 features of one query's candidates."""
    n, q = len(cands.positions), set(query)
    numbers = {w for w in q if any(c.isdigit() for c in w)}
    out = np.zeros((n, len(FEATURES)), dtype=np.float32)
    out[:, 0], out[:, 1], out[:, 2] = cands.fused, cands.lexical, cands.dense
    out[:, 3], out[:, 4] = _norm(cands.lexical), _norm(cands.dense)
    out[:, 5], out[:, 6], out[:, 7] = _rank(cands.fused), _rank(cands.lexical), _rank(cands.dense)
    out[:, 8] = len(query)
    for row, p in enumerate(cands.positions):
        title, text = words.title(p), words.text(p)
        out[row, 9] = len(title)
        out[row, 10] = len(q & title) / len(q) if q else 0.0
        out[row, 11] = len(q & text) / len(q) if q else 0.0
        out[row, 12] = float(bool(query) and query[-1] in title)
        out[row, 13] = len(numbers & title) / len(numbers) if numbers else -1.0
    return out


class Reranker:
    """A LambdaRank booster over `FEATURES` that re-orders a query's top `depth` first-stage candidates."""

    def __init__(self, booster: lgb.Booster, depth: int):
        self.booster, self.depth = booster, depth

    def rerank(self, query: list[str], cands: Candidates, words: ItemWords) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) of the candidates in the re-ranker's order (ties: the fused order), best first; the
        scores are the booster's, shifted to lie above 1 (above every fused score, so a re-ranked row still sorts
        first) and made strictly decreasing (TIE_STEP apart at least), so every ranking of them agrees."""
        if len(cands.positions) == 0:
            return cands.positions, cands.fused
        scores = self.booster.predict(features(query, cands, words), num_threads=1)
        order = np.argsort(-scores, kind="stable")
        steps = TIE_STEP * np.arange(len(order), 0, -1)
        return cands.positions[order], (2.0 + scores[order] - scores.min() + steps).astype(np.float32)

    def rerank_rows(self, queries: list[str], lexical, words: ItemWords, stages: tuple, out: np.ndarray) -> np.ndarray:
        """A copy of `out` (n_queries, n_items) with each query's top `depth` candidates re-scored by `rerank`;
        `stages` = the first stage's (BM25, dense, fused with -inf off its candidates) score matrices."""
        out = out.copy()
        for row, text in enumerate(queries):
            cands = top_candidates(stages[0][row], stages[1][row], stages[2][row], self.depth)
            positions, scores = self.rerank(query_words(lexical, text), cands, words)
            out[row, positions] = scores
        return out


def top_candidates(lexical: np.ndarray, dense: np.ndarray, fused: np.ndarray, depth: int) -> Candidates:
    """The `depth` best fused items of one query (finite scores only), best first."""
    finite = np.flatnonzero(np.isfinite(fused))
    order = finite[np.argsort(-fused[finite], kind="stable")[:depth]]
    return Candidates(order, lexical[order], dense[order], fused[order])


def sample_queries(rows: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """The rows of at most `limit` distinct queries of `rows`, drawn with `seed` (all rows when `limit` is None
    or not smaller than the number of queries); a query keeps all its judged rows."""
    texts = np.asarray(sorted(set(rows["query"])), dtype=object)
    if limit is None or limit >= len(texts):
        return rows
    kept = np.random.default_rng(seed).choice(texts, limit, replace=False)
    return rows[rows["query"].isin(set(kept))]


def examples(
    queries: pd.DataFrame, first_stage, lexical, words: ItemWords, item_ids: list[str], depth: int, desc: str
) -> pd.DataFrame:
    """Labelled candidate lists for graded `queries` (query, item_id, relevance[, weight]): one row per (query,
    candidate) with FEATURES, `label` (0..3) and `qid`; lists without a judged positive teach nothing and are
    dropped. `first_stage(texts)` -> (BM25, dense, fused) score matrices over `item_ids`; `lexical` the BM25
    index (its analyser reads the queries)."""
    queries = queries.assign(item_id=queries["item_id"].astype(str))
    gains = queries.groupby(["query", "item_id"])["relevance"].mean()
    texts = sorted(set(queries["query"]))
    position = {item: i for i, item in enumerate(item_ids)}
    frames = []
    for start in tqdm(range(0, len(texts), 256), desc=desc, unit="256 queries"):
        chunk = texts[start : start + 256]
        lex, den, fus = first_stage(chunk)
        for row, text in enumerate(chunk):
            cands = top_candidates(lex[row], den[row], fus[row], depth)
            graded = gains.loc[text]
            label = np.zeros(len(cands.positions), dtype=np.int32)
            judged = {position[i]: g for i, g in graded.items() if i in position}
            for k, p in enumerate(cands.positions):
                label[k] = int(round((GRADES - 1) * judged.get(int(p), 0.0)))
            if label.max() == 0:
                continue
            frame = pd.DataFrame(features(query_words(lexical, text), cands, words), columns=FEATURES)
            frames.append(frame.assign(label=label, qid=start + row))
    if not frames:
        raise ShopError(f"re-ranker: no {desc} query has a judged relevant item among its top {depth} candidates")
    return pd.concat(frames, ignore_index=True)


def _dataset(table: pd.DataFrame) -> lgb.Dataset:
    groups = table.groupby("qid", sort=False).size().to_numpy()
    return lgb.Dataset(table[FEATURES], table["label"], group=groups, free_raw_data=False)


def train_reranker(train: pd.DataFrame, valid: pd.DataFrame, settings: RerankParams, seed: int) -> tuple:
    """LambdaRank on `train` examples, early-stopped on `valid` (both from `examples`); returns (Reranker,
    {"rerank_rounds", "curve": the candidate-list validation NDCG@10 by round})."""
    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "label_gain": list(range(GRADES)),
        "learning_rate": settings.learning_rate,
        "num_leaves": settings.num_leaves,
        "min_data_in_leaf": settings.min_data_in_leaf,
        "feature_fraction": settings.feature_fraction,
        "num_threads": settings.threads,
        "seed": seed,
        "deterministic": True,
        "verbosity": -1,
    }
    curve: dict = {}
    booster = lgb.train(
        params,
        _dataset(train),
        settings.rounds,
        valid_sets=[_dataset(valid)],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(settings.early_stopping, verbose=False), lgb.record_evaluation(curve)],
    )
    rounds = booster.best_iteration or settings.rounds
    log.info("re-ranker: %d rounds, candidate-list valid NDCG@10 %.4f", rounds, curve["valid"]["ndcg@10"][rounds - 1])
    return Reranker(booster, settings.depth), {"rerank_rounds": rounds, "curve": curve["valid"]["ndcg@10"]}


def valid_ndcg(retriever, judged: pd.DataFrame, k: int = 10) -> float:
    """Mean whole-catalogue NDCG@k of `retriever.search` over the graded (query, item_id, relevance) rows."""
    groups = list(judged.assign(item_id=judged["item_id"].astype(str)).groupby("query", sort=True))
    found = retriever.search([text for text, _ in groups], k)
    gains = [dict(zip(g["item_id"], g["relevance"], strict=True)) for _, g in groups]
    return float(np.nanmean([ndcg_at_k([i for i, _ in top], g, k) for top, g in zip(found, gains, strict=True)]))
