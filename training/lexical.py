"""BM25 over item text (bm25s), with the analysis short product titles need: units normalised, one-character
tokens kept (sizes like "2 x 4"), Porter stemming (nltk), misspelled query words corrected against the item
text's words, k1 / b / variant from params (chosen on validation).

The same analyser runs on item text and queries. `catalogue_scores` gives every item's score for a batch of
queries (what hybrid retrieval fuses); `search` / `score` make it a `Retriever` (training/protocols.py).
"""

import re
from collections import Counter

import bm25s
import numpy as np
import pandas as pd
from nltk.stem import PorterStemmer

from core.errors import ShopError
from core.params import Bm25Params

# Unit spellings in queries and titles -> one token each ("3/4 in." and "3/4 inch" and 3/4" match).
_UNITS = [
    (r"(?<=\d)\s*(?:\"|''|inches|inch|in\.|in\b)", " in "),
    (r"(?<=\d)\s*(?:'|feet|foot|ft\.|ft\b)", " ft "),
    (r"(?<=\d)\s*(?:pounds|pound|lbs\.?|lb\.?)", " lb "),
    (r"(?<=\d)\s*(?:gallons|gallon|gal\.?)", " gal "),
    (r"(?<=\d)\s*(?:ounces|ounce|oz\.?)", " oz "),
    (r"(?<=\d)\s*(?:volts|volt|v\b)", " volt "),
    (r"(?<=\d)\s*(?:watts|watt|w\b)", " watt "),
    (r"(?<=\d)\s*(?:amps|amp|a\b)", " amp "),
    (r"(?<=\d)\s*(?:millimeters|millimeter|mm\b)", " mm "),
    (r"(?<=\d)\s*(?:degrees|degree|deg\.?|°)", " deg "),
    (r"\bsq\.?\s*(?:ft|feet)\b", "sqft"),
    (r"\bcu\.?\s*(?:ft|feet)\b", "cuft"),
    (r"(?<=\d)\s*x\s*(?=\d)", " x "),  # 2x4 -> 2 x 4
]
_UNIT_PATTERNS = [(re.compile(p, re.IGNORECASE), r) for p, r in _UNITS]
_TOKEN_PATTERN = r"(?u)\b\w+\b"
_WORD = re.compile(_TOKEN_PATTERN)


def normalise_units(text: str) -> str:
    """Rewrite unit spellings to one token each: `3/4"` / `3/4 inch` / `3/4 in.` -> `3/4 in`."""
    for pattern, replacement in _UNIT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


class TypoCorrector:
    """Replaces a query word that no item text contains by the most frequent item-text word one edit away
    (deletion, insertion, substitution or adjacent swap: the delete-1 neighbourhood of SymSpell, Garbe 2012).
    Only alphabetic words of at least `min_chars` characters are corrected; sizes, codes and brands-like
    tokens that an item contains stay as typed."""

    def __init__(self, texts: list[str], min_chars: int = 4):
        self.min_chars = min_chars
        self.counts = Counter(w for text in texts for w in _WORD.findall(text.lower()))
        self.by_delete: dict[str, str] = {}
        for word, count in self.counts.items():
            if len(word) < min_chars or not word.isalpha():
                continue
            for variant in _deletes(word) | {word}:
                best = self.by_delete.get(variant)
                if best is None or (self.counts[best], best) < (count, word):
                    self.by_delete[variant] = word

    def word(self, word: str) -> str:
        if word in self.counts or len(word) < self.min_chars or not word.isalpha():
            return word
        found = [self.by_delete[v] for v in _deletes(word) | {word} if v in self.by_delete]
        return max(found, key=lambda w: (self.counts[w], w)) if found else word

    def __call__(self, text: str) -> str:
        return _WORD.sub(lambda m: self.word(m.group(0)), text.lower())


class LexicalIndex:
    """BM25 (bm25s) over `texts`, one document per item id, analysed as set by `Bm25Params`."""

    def __init__(self, settings: Bm25Params):
        self.settings = settings
        self.item_ids: list[str] = []
        self.model: bm25s.BM25 | None = None
        self.corrector: TypoCorrector | None = None
        self._stemmer = PorterStemmer()
        self._stems: dict[str, str] = {}

    def _stem(self, words: list[str]) -> list[str]:
        for word in words:
            if word not in self._stems:
                self._stems[word] = self._stemmer.stem(word)
        return [self._stems[w] for w in words]

    def analyse(self, texts: list[str]) -> list[list[str]]:
        """Tokens per text: units normalised (optional), lower-cased, English stopwords dropped, stemmed."""
        s = self.settings
        texts = [normalise_units(t) if s.normalise_units else t for t in texts]
        return bm25s.tokenize(
            texts,
            lower=True,
            token_pattern=_TOKEN_PATTERN if s.single_char_tokens else r"(?u)\b\w\w+\b",
            stopwords="en",
            stemmer=self._stem if s.stem else None,
            return_ids=False,
            show_progress=False,
        )

    def fit(self, item_ids: list[str], texts: list[str]) -> "LexicalIndex":
        if len(item_ids) != len(texts) or not item_ids:
            raise ShopError("bm25: needs one text per item and at least one item")
        s = self.settings
        self.item_ids = [str(i) for i in item_ids]
        self.model = bm25s.BM25(k1=s.k1, b=s.b, method=s.method, delta=s.delta)
        self.model.index(self.analyse(texts), show_progress=False)
        self.corrector = TypoCorrector(texts) if s.correct_typos else None
        return self

    def catalogue_scores(self, queries: list[str]) -> np.ndarray:
        """(len(queries), n_items) float32 BM25 scores; a query without indexable words scores 0 everywhere."""
        if self.model is None:
            raise ShopError("bm25: call fit() before scoring")
        out = np.zeros((len(queries), len(self.item_ids)), dtype=np.float32)
        if self.corrector is not None:
            queries = [self.corrector(q) for q in queries]
        for row, tokens in enumerate(self.analyse(queries)):
            if tokens:
                out[row] = self.model.get_scores(tokens)
        return out


class BM25Retriever:
    """The BM25 baseline as a `Retriever` over item titles (or any text column named by `text_column`)."""

    def __init__(self, settings: Bm25Params, name: str = "bm25", text_column: str = "title"):
        self.name, self.text_column = name, text_column
        self.index = LexicalIndex(settings)

    def fit(self, queries: pd.DataFrame, items: pd.DataFrame) -> None:
        self.index.fit(items["item_id"].astype(str).tolist(), items[self.text_column].astype(str).tolist())

    @property
    def item_ids(self) -> list[str]:
        return self.index.item_ids

    def catalogue_scores(self, queries: list[str]) -> np.ndarray:
        return self.index.catalogue_scores(queries)

    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        out = []
        for start in range(0, len(queries), 256):
            scores = self.catalogue_scores(queries[start : start + 256])
            out += [ranked(self.item_ids, row, k, positive_only=True) for row in scores]
        return out

    def score(self, queries: list[str], item_ids: list[str]) -> list[float]:
        return pair_scores(self, queries, item_ids)


def ranked(item_ids: list[str], scores: np.ndarray, k: int, positive_only: bool = False) -> list[tuple[str, float]]:
    """The top `k` (item id, score) of one score row, best first (ties by position); `positive_only` drops
    items scoring 0 or less (BM25: no query word in the text)."""
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(item_ids[i], float(scores[i])) for i in top if not positive_only or scores[i] > 0]


def search_catalogue(model, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
    """`Retriever.search` for a model with `item_ids` and `catalogue_scores(queries, candidates_only=True)`:
    the top `k` per query, 256 queries at a time, items outside the model's candidates (-inf) left out."""
    out = []
    for start in range(0, len(queries), 256):
        scores = model.catalogue_scores(queries[start : start + 256], candidates_only=True)
        out += [[(i, s) for i, s in ranked(model.item_ids, row, k) if np.isfinite(s)] for row in scores]
    return out


def pair_scores(model, queries: list[str], item_ids: list[str]) -> list[float]:
    """Scores of (query, item) pairs from a model's `catalogue_scores` (each distinct query scored once)."""
    position = {item: i for i, item in enumerate(model.item_ids)}
    distinct = list(dict.fromkeys(queries))
    rows = {q: i for i, q in enumerate(distinct)}
    row_of = np.array([rows[q] for q in queries], dtype=np.int64)
    column = np.array([position.get(i, -1) for i in item_ids], dtype=np.int64)
    out = np.zeros(len(queries), dtype=np.float64)
    for start in range(0, len(distinct), 256):
        chunk = distinct[start : start + 256]
        scores = model.catalogue_scores(chunk)
        take = (row_of >= start) & (row_of < start + len(chunk)) & (column >= 0)
        out[take] = scores[row_of[take] - start, column[take]]
    return out.tolist()
