"""Generator `query_rewrites`: rewrites of real training queries that keep their judged items.

Generator 3 (EDA-style edits, contextual substitution, back-translation-style paraphrase). Operations:
- `neighbour`: swap a word for a catalogue-vocabulary neighbour mined from MiniLM word embeddings;
- `mlm`: contextual substitution: a masked-word (cloze) model over catalogue titles and training queries
  proposes words that fit between the neighbours, re-scored by MiniLM similarity to the masked word;
- `drop` / `swap`: drop one word / swap two adjacent words (EDA);
- `split`: split a multi-attribute query into head noun + attributes and recombine a subset;
- `typo`: keyboard-neighbour typos (substitute, drop, double, transpose characters);
- `paraphrase`: through a generation backend: `paraphrase_backend: offline` (default: substitutions learned by
  pivoting on items, fast) or `augment` (`augment.backend`, a language model: one prompt per training query).
Each rewrite inherits its parent query's judged items with relevance x `relevance_scale`.
"""

import hashlib
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from core.encoder import TextEncoder
from core.errors import ShopError
from core.io import atomic_path
from core.paths import shared_root
from pipelines.adapters.judged import query_id
from pipelines.augment.backends import Request, TextGenerator, backend_record, make_backend
from pipelines.augment.backends.offline import norm, words
from pipelines.augment.manifest import Context, GeneratorOutput
from pipelines.augment.search_data import load_search_training, take

log = logging.getLogger(__name__)
GENERATOR = "query_rewrites"
_ROWS = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
KEYBOARD = {
    c: "".join(
        _ROWS[r2][c2]
        for r2 in range(3)
        for c2 in range(len(_ROWS[r2]))
        if (r2, c2) != (r, i) and abs(r2 - r) <= 1 and abs(c2 - i) <= 1
    )
    for r, row in enumerate(_ROWS)
    for i, c in enumerate(row)
}
_SPLITTERS = frozenset({"with", "for", "and", "in", "w/"})
_CLOZE_MIN_SIMILARITY = 0.35  # a contextual substitute must still be about the same thing


class Settings(BaseModel):
    """Generator 3: rewrites of real training queries (substitution, drop/swap, split, typos, paraphrase)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_queries: int | None = Field(ge=1, description="distinct training queries rewritten (None = all)")
    rewrites_per_query: int = Field(ge=1)
    operations: list[Literal["neighbour", "mlm", "drop", "swap", "split", "typo", "paraphrase"]]
    neighbours: int = Field(ge=1, description="embedding neighbours per catalogue word")
    min_similarity: float = Field(ge=-1, le=1)
    typo_rate: float = Field(ge=0, le=1, description="per-character keyboard-typo probability")
    relevance_scale: float = Field(ge=0, le=1, description="rewrite relevance = parent relevance x this")
    paraphrase_backend: Literal["offline", "augment"] = Field(
        description="offline: learned substitutions; augment: augment.backend (a language model, costly on CPU)"
    )


def keyboard_typo(query: str, rate: float, rng: np.random.Generator) -> str:
    """At least one typo; each letter is hit with probability `rate` (neighbour key, drop, double, transpose)."""
    chars = list(query)
    letters = [i for i, c in enumerate(chars) if c.isalpha()]
    if not letters:
        return query
    hits = {i for i in letters if rng.random() < rate} or {letters[int(rng.integers(len(letters)))]}
    out: list[str] = []
    i = 0
    while i < len(chars):
        c = chars[i]
        if i in hits:
            kind = int(rng.integers(4))
            if kind == 0 and c.lower() in KEYBOARD:
                near = KEYBOARD[c.lower()]
                out.append(near[int(rng.integers(len(near)))])
            elif kind == 1:
                pass  # dropped letter
            elif kind == 2:
                out.extend([c, c])
            elif i + 1 < len(chars) and chars[i + 1].isalpha() and chars[i + 1] != c:
                out.extend([chars[i + 1], c])
                i += 1
            else:
                out.extend([c, c])  # no distinct next letter to transpose with: double instead
        else:
            out.append(c)
        i += 1
    return "".join(out)


def split_recombine(tokens: list[str], rng: np.random.Generator) -> str | None:
    """Head noun plus a non-empty proper subset of the attributes, e.g. `white 36 in vanity` -> `white vanity`."""
    cut = next((i for i, t in enumerate(tokens) if t in _SPLITTERS and i > 0), len(tokens))
    head_part, rest = tokens[:cut], tokens[cut + 1 :]
    if len(head_part) < 2 and not rest:
        return None
    head, attributes = head_part[-1], head_part[:-1] + rest
    if not attributes:
        return None
    size = int(rng.integers(1, len(attributes))) if len(attributes) > 1 else 1
    keep = sorted(rng.choice(len(attributes), size=size, replace=False).tolist()) if len(attributes) > 1 else []
    pre = [a for j, a in enumerate(head_part[:-1]) if j in keep]
    post = [a for j, a in enumerate(rest, start=len(head_part) - 1) if j in keep]
    out = " ".join(pre + [head] + post)
    return out if out != " ".join(tokens) else None


def word_vectors(vocab: list[str], encoder_model: str, cache_dir: Path | None) -> np.ndarray:
    """MiniLM vectors of single words; cached per (encoder, word) under `cache_dir` so re-runs skip the encoder."""
    cache = (
        Path(cache_dir) / f"word_vectors-{hashlib.sha256(encoder_model.encode()).hexdigest()[:12]}.npz"
        if cache_dir
        else None
    )
    known: dict[str, np.ndarray] = {}
    if cache and cache.exists():
        with np.load(cache) as stored:
            known = dict(zip(stored["words"].tolist(), stored["vectors"], strict=True))
    missing = [w for w in vocab if w not in known]
    if missing:
        fresh = TextEncoder(encoder_model, max_length=12, batch_size=512).encode(missing)
        known.update(zip(missing, fresh, strict=True))
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            names = sorted(known)
            with atomic_path(cache) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, words=np.array(names), vectors=np.stack([known[w] for w in names]))
    return np.stack([known[w] for w in vocab]).astype(np.float32) if vocab else np.zeros((0, 384), np.float32)


class WordSpace:
    """Catalogue vocabulary with MiniLM word vectors (neighbours) and a masked-word cloze model (context)."""

    def __init__(
        self,
        items: pd.DataFrame,
        train_queries: list[str],
        neighbours: int,
        min_similarity: float,
        encoder_model: str = "minilm",
        min_count: int = 10,
        cache_dir: Path | None = None,
    ):
        titles = items["title"].astype(str).tolist()
        doc_freq = Counter(w for t in titles for w in set(words(t)) if w.isalpha() and len(w) >= 3)
        query_words = {w for q in train_queries for w in words(q)}
        vocab = sorted(w for w, c in doc_freq.items() if c >= min_count or (c >= 2 and w in query_words))
        vectors = word_vectors(vocab, encoder_model, cache_dir)
        self.index = {w: i for i, w in enumerate(vocab)}
        self.vocab, self.vectors = vocab, vectors
        self.neighbours: dict[str, list[tuple[str, float]]] = {}
        sources = [w for w in vocab if w in query_words]
        for start in range(0, len(sources), 1024):
            part = sources[start : start + 1024]
            sims = vectors[[self.index[w] for w in part]] @ vectors.T
            top = np.argsort(-sims, axis=1)[:, : neighbours + 6]
            for row, word in enumerate(part):
                found = [
                    (vocab[j], float(sims[row, j]))
                    for j in top[row]
                    if norm(vocab[j]) != norm(word) and sims[row, j] >= min_similarity
                ][:neighbours]
                if found:
                    self.neighbours[word] = found
        # cloze counts: which words appear between a left and a right neighbour in real text
        self.after: dict[str, Counter] = defaultdict(Counter)
        self.before: dict[str, Counter] = defaultdict(Counter)
        for text in titles + list(train_queries):
            seq = ["<s>", *words(text), "</s>"]
            for a, b in zip(seq, seq[1:], strict=False):
                if b in self.index:
                    self.after[a][b] += 1
                if a in self.index:
                    self.before[b][a] += 1
        self.encoder_model = encoder_model

    def cloze(self, tokens: list[str], i: int, rng: np.random.Generator, top: int = 8) -> str | None:
        """A word that fits position `i` given its neighbours (P(w|left) * P(right|w)), close in meaning."""
        left = tokens[i - 1] if i > 0 else "<s>"
        right = tokens[i + 1] if i + 1 < len(tokens) else "</s>"
        fwd, bwd = self.after.get(left, Counter()), self.before.get(right, Counter())
        candidates = {w for w, _ in fwd.most_common(200)} | {w for w, _ in bwd.most_common(200)}
        vec = self.vectors[self.index[tokens[i]]]
        candidates = [w for w in sorted(candidates) if norm(w) != norm(tokens[i])]
        similarity = self.vectors[[self.index[w] for w in candidates]] @ vec if candidates else np.zeros(0)
        candidates = [w for w, s in zip(candidates, similarity, strict=True) if s >= _CLOZE_MIN_SIMILARITY]
        if not candidates:
            return None
        similarity = similarity[similarity >= _CLOZE_MIN_SIMILARITY]
        n_fwd, n_bwd = sum(fwd.values()) + 1, sum(bwd.values()) + 1
        score = np.array([np.log((fwd[w] + 0.1) / n_fwd) + np.log((bwd[w] + 0.1) / n_bwd) for w in candidates])
        score = score + 8.0 * similarity
        best = np.argsort(-score)[:top]
        weights = np.exp(score[best] - score[best].max())
        return candidates[int(best[rng.choice(len(best), p=weights / weights.sum())])]


def rewrite(
    query: str, operation: str, rng: np.random.Generator, space: WordSpace | None, typo_rate: float
) -> str | None:
    """One rewrite of `query` by `operation` (not paraphrase), or None when the operation does not apply."""
    tokens = words(query)
    if operation == "typo":
        return keyboard_typo(" ".join(tokens), typo_rate, rng)
    if operation == "drop" and len(tokens) >= 2:
        gone = int(rng.integers(len(tokens)))
        return " ".join(t for j, t in enumerate(tokens) if j != gone)
    if operation == "swap" and len(tokens) >= 2:
        j = int(rng.integers(len(tokens) - 1))
        tokens[j], tokens[j + 1] = tokens[j + 1], tokens[j]
        return " ".join(tokens)
    if operation == "split":
        return split_recombine(tokens, rng)
    if operation == "neighbour" and space is not None:
        slots = [j for j, t in enumerate(tokens) if t in space.neighbours]
        if slots:
            j = slots[int(rng.integers(len(slots)))]
            options = space.neighbours[tokens[j]]
            tokens[j] = options[int(rng.integers(len(options)))][0]
            return " ".join(tokens)
    if operation == "mlm" and space is not None:
        slots = [j for j, t in enumerate(tokens) if t in space.index]
        if not slots:
            return None
        j = slots[int(rng.integers(len(slots)))]
        word = space.cloze(tokens, j, rng)
        if word:
            tokens[j] = word
            return " ".join(tokens)
    return None


def _rng(seed: int, text: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)])


def generate_query_rewrites(
    train: pd.DataFrame,
    items: pd.DataFrame,
    rp: Settings,
    backend: TextGenerator | None,
    seed: int,
    encoder_model: str = "minilm",
    cache_dir: Path | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Return (canonical rows, stats): `rewrites_per_query` distinct rewrites per training query, expanded to
    the parent's judged items. Refuses `paraphrase` without a backend."""
    if "paraphrase" in rp.operations and backend is None:
        raise ShopError("generators.query_rewrites.settings.operations: paraphrase needs a generation backend")
    distinct = train.drop_duplicates("query_id")[["query_id", "query"]]
    parents = take(distinct, rp.max_queries, seed, "query_id")
    texts = parents["query"].astype(str).tolist()
    needs_space = {"neighbour", "mlm"} & set(rp.operations)
    space = (
        WordSpace(
            items,
            train["query"].astype(str).unique().tolist(),
            rp.neighbours,
            rp.min_similarity,
            encoder_model,
            cache_dir=cache_dir,
        )
        if needs_space
        else None
    )
    real = {" ".join(words(q)) for q in train["query"].astype(str)}
    paraphrases: dict[str, list[str]] = {}
    if "paraphrase" in rp.operations:
        examples = _paraphrase_examples(train)
        requests = [Request("paraphrase", {"query": q}, n=rp.rewrites_per_query, examples=examples) for q in texts]
        paraphrases = dict(zip(texts, backend.generate(requests), strict=True))
    out, op_counts = [], Counter()
    for qid, text in zip(parents["query_id"].astype(str), texts, strict=True):
        rng, made = _rng(seed, text), []
        for _ in range(6 * rp.rewrites_per_query):
            if len(made) == rp.rewrites_per_query:
                break
            op = rp.operations[int(rng.integers(len(rp.operations)))]
            if op == "paraphrase":
                pool = [p for p in paraphrases.get(text, []) if p not in [m[0] for m in made]]
                new = pool[0] if pool else None
            else:
                new = rewrite(text, op, rng, space, rp.typo_rate)
            new = " ".join(str(new or "").lower().split())
            if new and new not in real and new not in [m[0] for m in made]:
                made.append((new, op))
        for new, op in made:
            out.append((qid, new, op))
            op_counts[op] += 1
    if not out:
        raise ShopError("generators.query_rewrites.settings.operations: no operation produced a rewrite")
    rewrites = pd.DataFrame(out, columns=["parent_id", "query", "operation"])
    judged = train[["query_id", "item_id", "relevance"]].rename(columns={"query_id": "parent_id"})
    rows = rewrites.merge(judged, on="parent_id", how="inner")
    rows = rows.assign(query_id=rows["query"].map(query_id), relevance=rows["relevance"] * rp.relevance_scale)
    rows = rows.drop_duplicates(["query", "item_id"]).reset_index(drop=True)
    stats = {
        "parent_queries": len(parents),
        "rewrites": len(rewrites),
        "by_operation": dict(sorted(op_counts.items())),
        "neighbour_vocabulary": len(space.neighbours) if space else 0,
    }
    return rows, stats


def _paraphrase_examples(train: pd.DataFrame, k: int = 3) -> tuple[tuple[str, str], ...]:
    """A few (query, other query for the same item) pairs from real training data, for LLM few-shot prompts."""
    good = train[train["relevance"] >= 0.75].sort_values(["item_id", "query_id"])
    pairs = []
    for _, group in good.groupby("item_id", sort=True):
        texts = list(dict.fromkeys(group["query"].astype(str)))
        if len(texts) >= 2:
            pairs.append((texts[0], texts[1]))
        if len(pairs) == k:
            break
    return tuple(pairs)


def generate(ctx: Context) -> GeneratorOutput:
    """Rewrite real training queries (substitution, drop/swap, split, typos, paraphrase)."""
    rp, bp, items = ctx.settings, ctx.params.augment.backend, ctx.table("items")
    if rp.paraphrase_backend == "offline":
        bp = bp.model_copy(update={"name": "offline"})
    train_df, items_df = load_search_training(ctx.train, items)
    backend = (
        make_backend(bp, ctx.params.seed, shared_root(), train=train_df, items=items_df)
        if "paraphrase" in rp.operations
        else None
    )
    cache_dir = None
    if bp.cache:
        cache_dir = Path(bp.cache_dir) if Path(bp.cache_dir).is_absolute() else shared_root() / bp.cache_dir
    try:
        rows, stats = generate_query_rewrites(
            train_df, items_df, rp, backend, ctx.params.seed, ctx.params.encoder.model, cache_dir
        )
    finally:
        if backend:
            backend.close()
    described = backend.describe() if backend else {"backend": None, "model_id": None, "model_hash": None}
    log.info("query_rewrites: %s", stats)
    return GeneratorOutput(
        rows,
        inputs=[ctx.train, items],
        backend=described["backend"],
        model_id=described["model_id"],
        model_hash=described["model_hash"],
        settings={"backend": backend_record(bp)},
        extra={**stats, "encoder": ctx.params.encoder.model},
    )
