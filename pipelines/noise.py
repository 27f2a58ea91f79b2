"""Noisy copies of real queries, for the robustness test set: the judgments stay, the query text is perturbed.

Each query gets one perturbation, chosen by a generator seeded with the query id (the same query always gets
the same noise): a typo in one word (adjacent swap, dropped, doubled or neighbouring-key character), a dropped
word, two neighbouring words swapped, or a unit written another way (ft / feet / ', in. / inch / ").
"""

import hashlib
import re

import numpy as np
import pandas as pd

KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
_NEIGHBOURS = {
    ch: "".join(row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)) for row in KEYBOARD for i, ch in enumerate(row)
}
# (pattern, spellings): a unit found in the query is rewritten as another spelling of the same unit
UNITS = [
    (re.compile(r"(?<=\d)\s*(?:inches|inch|in\.|in\b|\")", re.IGNORECASE), [" in.", " inch", '"', " in"]),
    (re.compile(r"(?<=\d)\s*(?:feet|foot|ft\.|ft\b|')", re.IGNORECASE), [" ft.", " feet", "'", " ft"]),
    (re.compile(r"(?<=\d)\s*(?:gallons|gallon|gal\.?)", re.IGNORECASE), [" gal.", " gallon", " gal"]),
    (re.compile(r"(?<=\d)\s*(?:volts|volt|v\b)", re.IGNORECASE), [" volt", "v", " v"]),
]
OPERATIONS = ("typo", "drop", "swap", "unit")


def _rng(query_id: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{query_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def typo(word: str, rng: np.random.Generator) -> str:
    """One character-level edit of `word` (words shorter than 3 characters are kept)."""
    if len(word) < 3:
        return word
    i = int(rng.integers(1, len(word) - 1))  # the first letter is rarely mistyped
    kind = int(rng.integers(4))
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    if kind == 2:
        return word[:i] + word[i] + word[i:]
    near = _NEIGHBOURS.get(word[i].lower())
    return word[:i] + (near[int(rng.integers(len(near)))] if near else word[i]) + word[i + 1 :]


def _unit_variant(text: str, rng: np.random.Generator) -> str | None:
    for pattern, spellings in UNITS:
        match = pattern.search(text)
        if match:
            others = [s for s in spellings if s.strip().lower() != match.group(0).strip().lower()]
            return text[: match.start()] + others[int(rng.integers(len(others)))] + text[match.end() :]
    return None


def perturb(text: str, query_id: str, seed: int) -> tuple[str, str]:
    """(noisy text, operation) for one query; a unit spelling is rewritten when the query has one."""
    rng = _rng(query_id, seed)
    words = text.split()
    unit = _unit_variant(text, rng)
    options = [op for op in OPERATIONS if op != "unit" or unit is not None]
    if len(words) < 3:
        options = [op for op in options if op != "drop"]
    if len(words) < 2:
        options = [op for op in options if op != "swap"]
    long_words = [i for i, w in enumerate(words) if len(w) >= 3 and w.isalpha()]
    if not long_words:
        options = [op for op in options if op != "typo"]
    if not options:
        return text, "none"
    op = options[int(rng.integers(len(options)))]
    if op == "unit":
        return unit, op
    if op == "typo":
        i = long_words[int(rng.integers(len(long_words)))]
        words[i] = typo(words[i], rng)
    elif op == "drop":
        del words[int(rng.integers(len(words)))]
    else:
        i = int(rng.integers(len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words), op


def noisy_queries(queries: pd.DataFrame, seed: int) -> pd.DataFrame:
    """`queries` (canonical judged rows) with each query's text perturbed once; ids and judgments unchanged,
    the operation in column `noise`."""
    distinct = queries.drop_duplicates("query_id")[["query_id", "query"]]
    pairs = zip(distinct["query_id"], distinct["query"], strict=True)
    noisy = {qid: perturb(str(text), str(qid), seed) for qid, text in pairs}
    return queries.assign(
        query=queries["query_id"].map(lambda q: noisy[q][0]), noise=queries["query_id"].map(lambda q: noisy[q][1])
    )
