"""The model API between training and serving: `SearchModel` and `RecommenderModel` (saved and loaded by
training.model_store).

Scores are dot products of `encode_queries`/`encode_users` and `encode_items` (search: fused with BM25 over the
item text when the model is a hybrid). Both classes also implement the
harness protocols (`Retriever`, `Recommender`), so a trained or registered model is scored like a baseline.
"""

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import features
from core.encoder import TextEncoder, resolve_encoder
from core.errors import ShopError
from core.params import Bm25Params
from training.data import user_context, user_histories, user_history_features
from training.hybrid import fuse
from training.lexical import LexicalIndex, pair_scores, search_catalogue
from training.models import (
    ITEM_FEATURES,
    BiEncoder,
    TwoTower,
    bucketize,
    history_inputs,
    history_state,
    item_codes,
    item_context_features,
    item_texts,
    user_context_inputs,
)
from training.rerank import ItemWords, Reranker

log = logging.getLogger(__name__)


def _fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class FrozenTextVectors:
    """Pretrained-encoder unit vectors for texts, cached on disk by (weights fingerprint, max_length, texts)."""

    def __init__(self, model: str, max_length: int, cache_dir: str | Path | None = None, batch_size: int = 256):
        self.model, self.max_length, self.batch_size = resolve_encoder(model), max_length, batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._encoder: TextEncoder | None = None
        self._fingerprint: str | None = None

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            self._encoder = TextEncoder(self.model, self.max_length, self.batch_size)
            self._fingerprint = _fingerprint(self._encoder.model)
        return self._encoder

    def _path(self, texts: list[str]) -> Path | None:
        if self.cache_dir is None:
            return None
        fingerprint = self._fingerprint or _fingerprint(self.encoder.model)
        key = hashlib.sha256("\n".join([fingerprint, str(self.max_length), *texts]).encode()).hexdigest()[:24]
        return self.cache_dir / f"{key}.npy"

    def remember(self, texts: list[str], vectors: np.ndarray) -> None:
        """Store vectors computed elsewhere with the same encoder and max_length (e.g. the baselines' cache)."""
        path = self._path(texts)
        if path is not None and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".{path.stem}.{np.random.randint(1 << 30)}.npy"
            np.save(tmp, np.asarray(vectors, dtype=np.float32))
            tmp.replace(path)

    def __call__(self, texts: list[str]) -> np.ndarray:
        path = self._path(texts)
        if path is not None and path.exists():
            return np.load(path)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths per batch: little padding
        vectors = np.empty((len(texts), self.encoder.dim), dtype=np.float32)
        vectors[order] = self.encoder.encode([texts[i] for i in order], progress=len(texts) > 5000)
        self.remember(texts, vectors)
        return vectors


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


# --------------------------------------------------------------------------------------------- search
class SearchModel:
    """Bi-encoder for catalogue search, fused with BM25 over the item text when `config["hybrid"]` is set
    (training/hybrid.py), its top candidates re-ordered by `reranker` when it has one (training/rerank.py); a
    `Retriever` once `fit` has indexed a catalogue."""

    def __init__(
        self,
        net: BiEncoder,
        items: pd.DataFrame,
        config: dict,
        item_text: FrozenTextVectors | None,
        reranker: Reranker | None = None,
        query_memo: dict[str, np.ndarray] | None = None,
    ):
        self.net, self.config, self.item_text, self.reranker = net.eval(), config, item_text, reranker
        self.name = config.get("name", "bi_encoder")
        self._query_memo = query_memo  # query text -> vector, when `remember_queries` is on (shared by siblings)
        self.fit(pd.DataFrame(), items)

    def remember_queries(self) -> "SearchModel":
        """Keep each encoded query's vector from now on, shared with `dense_only` and `first_stage` models made
        after this call (offline scoring encodes the same test queries in every pass; never for serving, where
        the memo would grow without bound)."""
        if self._query_memo is None:
            self._query_memo = {}
        return self

    @torch.inference_mode()
    def encode_queries(self, texts: list[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        memo = self._query_memo
        if memo is None or not texts:
            return self.net.query_tower.encode(texts)
        new = [t for t in dict.fromkeys(texts) if t not in memo]
        if new:
            memo.update(zip(new, self.net.query_tower.encode(new), strict=True))
        return np.stack([memo[t] for t in texts])

    @torch.inference_mode()
    def encode_items(self, items: pd.DataFrame) -> np.ndarray:
        texts = item_texts(items)
        if self.item_text is None:  # shared tower: items go through the fine-tuned encoder
            raw = torch.from_numpy(self.net.query_tower.encode(texts))
        else:
            raw = torch.from_numpy(self.item_text(texts))
        device = self.net.item_adapter.weight.device
        return self.net.item_vectors(raw.to(device)).cpu().numpy().astype(np.float32)

    # Retriever protocol
    def fit(self, queries: pd.DataFrame, items: pd.DataFrame) -> None:
        """Index `items` (the model is trained already; `queries` are not used). A hybrid's BM25 text column
        (the expanded `search_text`) is carried over by item id when `items` lack it, else the title is used."""
        items = items.reset_index(drop=True)
        column = (self.hybrid or {}).get("text_column")
        if column and column not in items.columns:
            known = getattr(self, "items", pd.DataFrame(columns=["item_id", column]))
            text = known.set_index(known["item_id"].astype(str))[column]
            items[column] = items["item_id"].astype(str).map(text).fillna(items["title"]).astype(str)
        self.items = items
        self.item_ids = self.items["item_id"].astype(str).tolist()
        self._index: np.ndarray | None = None
        self._lexical: LexicalIndex | None = None
        self._words: ItemWords | None = None

    @property
    def hybrid(self) -> dict | None:
        """{"weight", "depth", "bm25", "text_column"} when BM25 is fused in, else None."""
        return self.config.get("hybrid")

    def dense_only(self) -> "SearchModel":
        """The same bi-encoder without the BM25 side (what the hybrid adds is measured against it)."""
        config = {k: v for k, v in self.config.items() if k not in ("hybrid", "rerank")}
        config["name"] = self.name.replace("reranked_", "").replace("hybrid", "bi_encoder")
        return self._sibling(config)

    def first_stage(self) -> "SearchModel":
        """The same hybrid without its re-ranker (what the re-ranker adds is measured against it)."""
        config = {k: v for k, v in self.config.items() if k != "rerank"}
        config["name"] = self.name.replace("reranked_", "")
        return self._sibling(config)

    def _sibling(self, config: dict) -> "SearchModel":
        """A model of `config` on the same network and items, sharing this one's query memo."""
        return SearchModel(self.net, self.items, config, self.item_text, query_memo=self._query_memo)

    def _vectors(self) -> np.ndarray:
        if self._index is None:
            self._index = self.encode_items(self.items)
        return self._index

    def lexical(self) -> LexicalIndex:
        """BM25 over the indexed items' `hybrid.text_column` (built on first use)."""
        if self._lexical is None:
            h = self.hybrid
            texts = self.items[h["text_column"]].astype(str).tolist()
            self._lexical = LexicalIndex(Bm25Params(**h["bm25"])).fit(self.item_ids, texts)
        return self._lexical

    def words(self) -> ItemWords:
        """The indexed items' analysed title and text words (the re-ranker's features; built on first use)."""
        if self._words is None:
            column = self.hybrid["text_column"]
            titles, texts = self.items["title"].astype(str).tolist(), self.items[column].astype(str).tolist()
            self._words = ItemWords.build(self.lexical(), titles, texts)
        return self._words

    def dense_scores(self, queries: list[str]) -> np.ndarray:
        return self.encode_queries(queries) @ self._vectors().T

    def stage_scores(self, queries: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(BM25, dense, fused) (len(queries), n_items) scores of a hybrid; fused is -inf off its candidates."""
        h, dense = self.hybrid, self.dense_scores(queries)
        lexical = self.lexical().catalogue_scores(queries)
        return lexical, dense, fuse(lexical, dense, h["weight"], h["depth"], True)

    def catalogue_scores(self, queries: list[str], candidates_only: bool = False) -> np.ndarray:
        """(len(queries), n_items) scores: dense, or fused with BM25 (`candidates_only`: -inf off the fused set),
        the top `rerank.depth` re-scored by the re-ranker when the model has one."""
        h = self.hybrid
        if not h:
            return self.dense_scores(queries)
        if self.reranker is None:
            return fuse(
                self.lexical().catalogue_scores(queries),
                self.dense_scores(queries),
                h["weight"],
                h["depth"],
                candidates_only,
            )
        lexical, dense, candidates = self.stage_scores(queries)
        out = candidates if candidates_only else fuse(lexical, dense, h["weight"], h["depth"], False)
        return self.reranker.rerank_rows(queries, self.lexical(), self.words(), (lexical, dense, candidates), out)

    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        return search_catalogue(self, queries, k)

    def score(self, queries: list[str], item_ids: list[str]) -> list[float]:
        known = set(self.item_ids)
        missing = sorted({i for i in item_ids if i not in known})
        if missing:
            raise ShopError(f"item '{missing[0]}' is not in the indexed catalogue ({len(missing)} missing)")
        return pair_scores(self, queries, item_ids)


# --------------------------------------------------------------------------------------------- recommendation
class RecommenderModel:
    """Two-tower recommender; a `Recommender` whose catalogue and item context come from the history it is given."""

    def __init__(
        self,
        net: TwoTower,
        items: pd.DataFrame,
        config: dict,
        item_text: FrozenTextVectors,
        text_vectors: np.ndarray,
        buckets: np.ndarray,
    ):
        self.net, self.config, self.item_text = net.eval(), config, item_text
        self.name = config.get("name", "two_tower")
        self.items = items.reset_index(drop=True)
        self.item_ids: list[str] = self.items["item_id"].astype(str).tolist()
        self.text_vectors, self.buckets = text_vectors, buckets  # training catalogue, at the training cutoff
        self.edges = config["edges"]
        self.feature_store = None  # Feast store for user context in `recommend`; None = the configured one
        self._content: dict[str, np.ndarray] = {}
        self._remember(self.item_ids, self._content_vectors(text_vectors, buckets))

    def _content_vectors(self, text: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        device = self.net.log_scale.device
        with torch.inference_mode():
            return (
                self.net.item_vectors(torch.from_numpy(text).to(device), torch.from_numpy(buckets).to(device))
                .cpu()
                .numpy()
            )

    def _remember(self, ids: list[str], vectors: np.ndarray) -> None:
        self._content.update(zip(ids, vectors, strict=True))

    def encode_items(self, items: pd.DataFrame, item_features: pd.DataFrame | None = None) -> np.ndarray:
        """[content | repeat code] per item row; context from `item_features` (item_id + ITEM_FEATURES), else the
        snapshot taken at the end of training (unknown bucket for new items)."""
        ids = items["item_id"].astype(str).tolist()
        known = {item: i for i, item in enumerate(self.item_ids)}
        text = np.zeros((len(ids), self.text_vectors.shape[1]), dtype=np.float32)
        hit = [i for i, item in enumerate(ids) if item in known]
        text[hit] = self.text_vectors[[known[ids[i]] for i in hit]]
        miss = [i for i, item in enumerate(ids) if item not in known]
        if miss:
            text[miss] = self.item_text(item_texts(items.iloc[miss]))
        if item_features is not None:
            feats = item_features.assign(item_id=item_features["item_id"].astype(str)).set_index("item_id")
            buckets = bucketize(feats.reindex(ids)[ITEM_FEATURES], self.edges)
        else:
            unknown = bucketize(pd.DataFrame({c: [np.nan] for c in ITEM_FEATURES}), self.edges)[0]
            buckets = (
                np.stack([self.buckets[known[item]] if item in known else unknown for item in ids])
                if ids
                else np.zeros((0, len(ITEM_FEATURES)), dtype=np.int64)
            )
        content = self._content_vectors(text, buckets)
        self._remember(ids, content)
        codes = item_codes(ids, self.config["repeat_dims"])
        return np.concatenate([content, codes], axis=1).astype(np.float32)

    @torch.inference_mode()
    def encode_users(self, histories: list[list[str]], user_features: pd.DataFrame | None = None) -> np.ndarray:
        """[user tower | weighted repeat codes] per chronological history; items never seen by `encode_items`
        or training only enter the repeat path. `user_features`: row-aligned Feast `user_stats` (models trained
        with user context; None = no snapshot for anyone)."""
        cfg, dim = self.config, self.net.user_token.shape[0]
        length = max(1, cfg["history_len"])
        hist = np.zeros((len(histories), length, dim), dtype=np.float32)
        mask = np.zeros((len(histories), length), dtype=bool)
        user_feats, repeat = [], np.zeros((len(histories), cfg["repeat_dims"]), dtype=np.float32)
        for row, items in enumerate(histories):
            state = history_state([str(i) for i in items])
            recent, rep, feats = history_inputs(state, cfg["history_len"], cfg["repeat_history"])
            vecs = [self._content[i] for i in recent if i in self._content]
            if vecs:
                hist[row, : len(vecs)], mask[row, : len(vecs)] = np.stack(vecs), True
            user_feats.append(user_history_features(len(items), len(state)))
            if cfg["repeat_dims"] and rep:
                weights = self.net.repeat_weights(torch.from_numpy(feats), torch.ones(len(rep))).numpy()
                repeat[row] = weights @ item_codes(rep, cfg["repeat_dims"])
        user_feats = np.asarray(user_feats, dtype=np.float32).reshape(len(histories), -1)
        if cfg.get("user_context"):
            user_feats = np.concatenate([user_feats, user_context_inputs(user_features, len(histories))], axis=1)
        device = self.net.log_scale.device
        users = self.net.user_vectors(
            torch.from_numpy(hist).to(device),
            torch.from_numpy(mask).to(device),
            torch.from_numpy(user_feats).to(device),
        )
        return np.concatenate([users.cpu().numpy(), repeat], axis=1).astype(np.float32)

    # Recommender protocol
    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> None:
        """Remember the item table (text and price of catalogue items); the model is trained already."""
        extra = items[~items["item_id"].astype(str).isin(self.item_ids)]
        self.items = pd.concat([self.items, extra], ignore_index=True)

    def recommend(
        self, history: pd.DataFrame, user_ids: list[str], k: int, user_features: pd.DataFrame | None = None
    ) -> dict[str, list[str]]:
        """Top-k over the items seen in `history`, with item and user context as of the end of `history`.

        User context: `user_features` (row-aligned with `user_ids`), else Feast point-in-time lookups.
        """
        ids = sorted(history["item_id"].astype(str).unique())
        table = self.items.assign(item_id=self.items["item_id"].astype(str)).drop_duplicates("item_id")
        cat = table.set_index("item_id").reindex(ids).reset_index()
        cat[["title", "description", "category"]] = cat[["title", "description", "category"]].fillna("")
        at = history["ts"].max() + pd.Timedelta(seconds=1)
        items = self.encode_items(cat, item_context_features(history, cat, at).reset_index())
        if user_features is None and self.config.get("user_context"):
            user_features = self._user_context(user_ids, at)
        users = self.encode_users(user_histories(history, user_ids), user_features)
        out = {}
        for start in range(0, len(users), 512):
            top = top_k(users[start : start + 512] @ items.T, k)
            out.update({u: [ids[j] for j in row] for u, row in zip(user_ids[start : start + 512], top, strict=True)})
        return out

    def _user_context(self, user_ids: list[str], at: pd.Timestamp) -> pd.DataFrame | None:
        """Feast user context as of `at` from `feature_store` or the configured store; None (with a warning)
        when no store can be read, e.g. scoring a dataset the feature store was never built for."""
        try:
            if self.feature_store is None:
                self.feature_store = features.open_store()
            return user_context(user_ids, at, self.feature_store)
        except ShopError as exc:
            log.warning("%s: scoring users without user context", exc)
            return None
