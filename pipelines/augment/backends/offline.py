"""The offline backend: a query model learned from real training (query, item title) pairs, fast on one CPU.

Why this model and not a small seq2seq: the budget is >= 2,000 queries/s on 2 CPU cores with no download.
Autoregressive decoding of even a tiny transformer runs at a few hundred sequences/s on CPU, and a model
trained in the pipeline on ~40k pairs mostly learns to copy title words. Real Home Depot queries *are*
mostly title words kept, a few dropped, a few added ("angle bracket" for "Simpson Strong-Tie 12-Gauge
Angle"). So the model estimates exactly that from training pairs: per-token keep probability by word and by
token features (position, segment before "in/with/for", shape, catalogue rarity), the joint distribution of
(kept, added) counts by title length, the words shoppers add given the item's words, and the word order.
Sampling from it costs microseconds per query and is seeded per request.
"""

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from functools import lru_cache

import numpy as np
import pandas as pd

from core.errors import ShopError
from pipelines.augment.backends.base import Request, TextGenerator

_WORD = re.compile(r"[a-z0-9]+(?:[.'/-][a-z0-9]+)*")
_BOUNDARY = frozenset({"in", "with", "for", "by"})
_LEN_EDGES = (3, 6, 9, 12)  # title-length buckets: <=3, <=6, <=9, <=12, more
_SMOOTH = 5.0  # pseudo-count pulling a word's keep rate toward its feature bucket's rate


def words(text: str) -> list[str]:
    """Lower-cased word tokens (keeps 1/2, 3-1/2, 1-gal as one token)."""
    return _WORD.findall(str(text).lower())


@lru_cache(maxsize=1 << 18)
def norm(token: str) -> str:
    """A crude singular form so `brackets` in a query matches `bracket` in a title."""
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 4 and token.endswith(("ches", "shes", "xes", "sses")):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


@lru_cache(maxsize=1 << 18)
def _shape(token: str) -> int:
    digits = sum(c.isdigit() for c in token)
    return 0 if digits == 0 else (1 if digits == len(token.replace(".", "").replace("/", "").replace("-", "")) else 2)


def _len_bucket(n: int) -> int:
    return next((i for i, edge in enumerate(_LEN_EDGES) if n <= edge), len(_LEN_EDGES))


def _top(counter: Counter, n: int) -> list[tuple[str, float]]:
    """The `n` most frequent entries, ties broken alphabetically (Counter.most_common keeps insertion order)."""
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


@lru_cache(maxsize=1 << 16)
def _title_tokens(title: str) -> tuple[tuple[str, str, int, int], ...]:
    """Distinct title tokens as (surface, norm, position, segment) in title order."""
    seen, out, segment = set(), [], 0
    for token in words(title):
        if token in _BOUNDARY and out:
            segment = 1
        key = norm(token)
        if key not in seen:
            seen.add(key)
            out.append((token, key, len(out), segment))
    return tuple(out)


class OfflineQueryModel:
    """Keep/drop/add/order model of shopper queries, estimated from real (query, title) training pairs."""

    def fit(self, pairs: pd.DataFrame, catalogue_titles: list[str], min_relevance: float = 0.75) -> "OfflineQueryModel":
        """Estimate the model from `pairs` (columns query, title, relevance); refuses an empty training set."""
        pairs = pairs[pairs["relevance"] >= min_relevance]
        if pairs.empty:
            raise ShopError(
                f"offline backend: no training (query, title) pairs with relevance >= {min_relevance} to learn from"
            )
        df = Counter(k for t in catalogue_titles for k in {norm(w) for w in words(t)})
        logs = np.log1p(np.array(sorted(df.values()), dtype=float))
        self.idf_edges = [float(np.quantile(logs, q)) for q in (0.5, 0.8, 0.95)]
        self.rarity = {k: sum(math.log1p(c) > e for e in self.idf_edges) for k, c in df.items()}
        bucket_n, bucket_k = Counter(), Counter()
        word_n, word_k = Counter(), Counter()
        joint: dict[int, Counter] = defaultdict(Counter)
        cooc: dict[str, Counter] = defaultdict(Counter)
        title_n, added_total, added_rel = Counter(), Counter(), defaultdict(list)
        pair_dist, pair_inv = [], []
        for query, title in zip(pairs["query"].astype(str), pairs["title"].astype(str), strict=True):
            tokens, q = _title_tokens(title), words(query)
            if not tokens or not q:
                continue
            qnorm = [norm(w) for w in q]
            qpos = {k: i for i, k in reversed(list(enumerate(qnorm)))}
            kept_pos = []
            for surface, key, pos, seg in tokens:
                bucket = self._bucket(surface, key, pos, seg)
                kept = key in qpos
                bucket_n[bucket] += 1
                bucket_k[bucket] += kept
                word_n[key] += 1
                word_k[key] += kept
                if kept:
                    kept_pos.append((pos, qpos[key]))
            title_order = [key for _, key, _, _ in tokens]  # a list, not a set: insertion order must not
            title_keys = set(title_order)  # depend on PYTHONHASHSEED, or ties in counts differ per process
            added = [w for w, k in zip(q, qnorm, strict=True) if k not in title_keys]
            joint[_len_bucket(len(tokens))][(len(kept_pos), len(added))] += 1
            for key in title_order:
                title_n[key] += 1
            for i, word in enumerate(q):
                if qnorm[i] not in title_keys:
                    added_total[word] += 1
                    added_rel[word].append(i / max(len(q) - 1, 1))
                    for key in title_order:
                        cooc[key][word] += 1
            for a in range(len(kept_pos)):
                for b in range(a + 1, len(kept_pos)):
                    pair_dist.append(abs(kept_pos[b][0] - kept_pos[a][0]))
                    pair_inv.append(kept_pos[b][1] < kept_pos[a][1])
        prior = sum(bucket_k.values()) / max(sum(bucket_n.values()), 1)
        self.bucket_rate = {b: (bucket_k[b] + 2 * prior) / (bucket_n[b] + 2) for b in bucket_n}
        self.prior = prior
        self.word_stats = {w: (word_k[w], word_n[w]) for w in word_n}
        self.joint = {
            b: (
                np.array(list(c.keys()), dtype=int).reshape(-1, 2),
                np.cumsum(list(c.values())) / sum(c.values()),
            )
            for b, c in joint.items()
        }
        # Added words must be real words (in the catalogue, or added by several shoppers), not one-off typos.
        known = {w for w, c in added_total.items() if c >= 5 or df.get(norm(w), 0) >= 3}
        total = sum(added_total.values())
        self.added_global = [(w, norm(w), c / total) for w, c in _top(added_total, 100)]
        self.cooc = {}
        for key, counter in cooc.items():
            top = [
                (w, norm(w), round(c / (title_n[key] + 5), 6)) for w, c in _top(counter, 30) if c >= 2 and w in known
            ][:15]
            if top:
                self.cooc[key] = top
        mean_rel = float(np.mean([r for rs in added_rel.values() for r in rs])) if added_rel else 0.5
        self.added_rel = {w: (sum(rs) + 2 * mean_rel) / (len(rs) + 2) for w, rs in added_rel.items() if len(rs) >= 3}
        self.mean_rel = mean_rel
        self.order_sigma = self._fit_order_noise(np.array(pair_dist, float), np.array(pair_inv, float))
        self.pairs_used = int(len(pairs))
        self._prepare()
        return self

    def _bucket(self, surface: str, key: str, pos: int, seg: int) -> tuple:
        return (min(pos, 7), seg, _shape(surface), self.rarity.get(key, 0))

    @staticmethod
    def _fit_order_noise(dist: np.ndarray, inverted: np.ndarray) -> float:
        """Noise scale on title positions that reproduces the observed rate of reordered kept-word pairs."""
        if len(dist) == 0:
            return 0.0
        from scipy.special import ndtr

        target = inverted.mean()
        values, counts = np.unique(dist, return_counts=True)
        weights = counts / counts.sum()
        grid = np.linspace(0.0, 6.0, 61)
        rates = [0.0 if s == 0 else float(ndtr(-values / (s * math.sqrt(2))) @ weights) for s in grid]
        return float(grid[int(np.argmin(np.abs(np.array(rates) - target)))])

    def _prepare(self) -> None:
        """Lookup tables for fast sampling: global added-word scores and added words by their singular form."""
        self._global = {w: 0.05 * p for w, _, p in self.added_global}
        self._by_norm: dict[str, list[str]] = defaultdict(list)
        for entries in [self.added_global, *self.cooc.values()]:
            for word, word_norm, _ in entries:
                if word not in self._by_norm[word_norm]:
                    self._by_norm[word_norm].append(word)
        self._keep_cache: dict[tuple, float] = {}

    def keep_logodds(self, tokens) -> np.ndarray:
        """Log-odds that a shopper keeps each title token: the word's own rate shrunk toward its bucket's."""
        out = np.empty(len(tokens))
        cache = self._keep_cache
        for i, token in enumerate(tokens):
            value = cache.get(token)
            if value is None:
                surface, key, pos, seg = token
                base = self.bucket_rate.get(self._bucket(surface, key, pos, seg), self.prior)
                k, n = self.word_stats.get(key, (0, 0))
                p = min(max((k + _SMOOTH * base) / (n + _SMOOTH), 1e-4), 1 - 1e-4)
                value = cache[token] = math.log(p / (1 - p))
            out[i] = value
        return out

    def added_candidates(self, keys) -> tuple[list[str], np.ndarray]:
        """Words shoppers add for an item with these title words, with log-scores (title words excluded)."""
        scores = dict(self._global)
        for key in keys:
            for word, _, p in self.cooc.get(key, ()):
                scores[word] = scores.get(word, 0.0) + p
        for key in keys:
            for word in self._by_norm.get(key, ()):
                scores.pop(word, None)
        return list(scores), np.log(np.fromiter(scores.values(), float, len(scores)) + 1e-12)

    def sample_queries(self, title: str, n: int, rng: np.random.Generator, context: str = "") -> list[str]:
        """Up to `n` distinct sampled queries for an item (title words plus optional context words).

        All randomness for 4n candidate draws is taken in a few vectorised calls, then assembled in Python.
        """
        tokens = _title_tokens(f"{title} {context}".strip())
        if not tokens:
            return []
        logodds = self.keep_logodds(tokens)
        cand, cand_logp = self.added_candidates([t[1] for t in tokens])
        sizes, cdf = self.joint.get(_len_bucket(len(tokens)), next(iter(self.joint.values())))
        draws = 4 * n
        pick = np.minimum(np.searchsorted(cdf, rng.random(draws)), len(sizes) - 1)
        kept_n = np.minimum(sizes[pick, 0], len(tokens)).tolist()
        added_n = np.minimum(sizes[pick, 1], len(cand)).tolist()
        keep_order = np.argsort(-(logodds + rng.gumbel(size=(draws, len(tokens)))), axis=1).tolist()
        most = max(added_n)
        add_order = (
            np.argsort(-(cand_logp + rng.gumbel(size=(draws, len(cand)))), axis=1)[:, :most].tolist()
            if most
            else [[]] * draws
        )
        noise = rng.normal(size=(draws, len(tokens) + most)).tolist()
        sigma, rel, mean_rel = self.order_sigma, self.added_rel, self.mean_rel
        out: list[str] = []
        for t in range(draws):
            m, a = kept_n[t], added_n[t]
            if m + a == 0:
                m = 1
            z = noise[t]
            keyed = [(i + sigma * z[j], tokens[i][0]) for j, i in enumerate(sorted(keep_order[t][:m]))]
            for j, c in enumerate(add_order[t][:a]):
                word = cand[c]
                keyed.append((rel.get(word, mean_rel) * max(m, 1) + 0.5 * z[m + j], word))
            keyed.sort(key=lambda kv: kv[0])
            query = " ".join(w for _, w in keyed)
            if query not in out:
                out.append(query)
                if len(out) == n:
                    break
        return out

    def state(self) -> dict:
        return {
            "bucket_rate": {str(k): round(v, 6) for k, v in sorted(self.bucket_rate.items())},
            "word_stats": dict(sorted(self.word_stats.items())),
            "cooc": dict(sorted(self.cooc.items())),
            "joint": {str(b): [s.tolist(), c.round(6).tolist()] for b, (s, c) in sorted(self.joint.items())},
            "added_rel": dict(sorted(self.added_rel.items())),
            "order_sigma": self.order_sigma,
            "idf_edges": self.idf_edges,
            "pivot": dict(sorted(getattr(self, "pivot", {}).items())),
        }

    def fingerprint(self) -> str:
        """sha256 of the learned statistics: the offline model's 'weight hash' in manifests."""
        blob = json.dumps(self.state(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    # --- paraphrase: word substitutions learned by pivoting on items with several real queries ---
    def fit_paraphrases(self, queries: pd.DataFrame, min_relevance: float = 0.75) -> "OfflineQueryModel":
        """Learn substitution pairs (a -> b) from distinct training queries judged relevant for the same item."""
        pivot: dict[str, Counter] = defaultdict(Counter)
        good = queries.loc[queries["relevance"] >= min_relevance, ["item_id", "query"]].drop_duplicates()
        good = good[good["item_id"].duplicated(keep=False)]
        by_item: dict[str, list[str]] = defaultdict(list)
        for item, text in zip(good["item_id"].astype(str), good["query"].astype(str), strict=True):
            by_item[item].append(text)
        for texts in by_item.values():
            for i in range(len(texts)):
                for j in range(len(texts)):
                    if i == j:
                        continue
                    a = {norm(w): w for w in words(texts[i])}
                    b = {norm(w): w for w in words(texts[j])}
                    only_a, only_b = set(a) - set(b), set(b) - set(a)
                    if not only_a or not only_b or len(only_a) > 2 or len(only_b) > 2:
                        continue
                    for x in sorted(only_a):
                        for y in sorted(only_b):
                            pivot[x][b[y]] += 1.0 / (len(only_a) * len(only_b))
        self.pivot = {x: [(w, round(c, 4)) for w, c in _top(cnt, 10)] for x, cnt in sorted(pivot.items())}
        return self

    def paraphrase(self, query: str, n: int, rng: np.random.Generator) -> list[str]:
        """Up to `n` rewordings: a learned substitution (pivot table), else a learned drop/add of a word."""
        tokens = words(query)
        if not tokens:
            return []
        out: list[str] = []
        pivot = getattr(self, "pivot", {})
        for _ in range(4 * n):
            if len(out) == n:
                break
            new = list(tokens)
            subs = [i for i, w in enumerate(tokens) if norm(w) in pivot]
            if subs and rng.random() < 0.8:
                i = subs[int(rng.integers(len(subs)))]
                options = pivot[norm(tokens[i])]
                weights = np.array([c for _, c in options])
                new[i] = options[int(rng.choice(len(options), p=weights / weights.sum()))][0]
            else:
                title_like = _title_tokens(query)
                if len(new) > 1 and rng.random() < 0.5:
                    logodds = self.keep_logodds(title_like)
                    drop = int(np.argmin(logodds + rng.gumbel(size=len(logodds))))
                    new = [t[0] for i, t in enumerate(title_like) if i != drop]
                else:
                    cand, logp = self.added_candidates([t[1] for t in title_like])
                    if not cand:
                        continue
                    word = cand[int(np.argmax(logp + rng.gumbel(size=len(cand))))]
                    new.insert(int(rng.integers(len(new) + 1)), word)
            text = " ".join(new)
            if text != query and text not in out:
                out.append(text)
        return out


class OfflineBackend(TextGenerator):
    """Generates queries (and paraphrases) by sampling the learned OfflineQueryModel; CPU only, no download."""

    name = "offline"

    def __init__(self, model: OfflineQueryModel, model_id: str, settings: dict, cache=None, seed: int = 0):
        super().__init__(model_id, settings, cache, seed)
        self.model = model
        self.model_hash = model.fingerprint()

    def cache_text(self, request: Request) -> str:
        return json.dumps([request.task, request.record], sort_keys=True, default=str)

    def _generate(self, requests: list[Request], keys: list[str]) -> list[list[str]]:
        out = []
        for request, key in zip(requests, keys, strict=True):
            rng = np.random.default_rng(self.request_seed(self.seed, key))
            if request.task == "query":
                record = request.record
                context = " ".join(str(record.get(k) or "") for k in ("category",))
                out.append(self.model.sample_queries(str(record.get("title", "")), request.n, rng, context))
            elif request.task == "paraphrase":
                out.append(self.model.paraphrase(str(request.record["query"]), request.n, rng))
            else:
                raise ShopError(
                    f"augment.backend.name: the offline backend cannot do task '{request.task}'; "
                    "use huggingface or openai for free-text generation"
                )
        return out
