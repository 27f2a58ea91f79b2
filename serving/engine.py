"""What the endpoints do: recommend, search and similar over the live champion bundles, purchase and click events,
plus champion reload.

Each request reads the live bundle once, so a reload (which swaps whole bundles) never mixes two versions and
never fails a request in flight; the old bundle finishes the requests that already hold it.
"""

import asyncio
import datetime as dt
import functools
import gc
import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from bentoml.exceptions import NotFound

from core.params import ServeParams
from features.client import OnlineFeatureClient
from serving import schemas
from serving.batching import AdaptiveBatcher
from serving.champion import (
    GLOBAL,
    ITEM_COLUMNS,
    Bundle,
    champion_version,
    load_bundle,
    packaged_bundle,
    registry_client,
)
from serving.request_log import RequestLog
from training.hybrid import fuse_candidates, top_positions
from training.lexical import ranked
from training.rerank import Candidates, query_words, top_candidates

logger = logging.getLogger(__name__)

MAX_EVENT_USERS = 100_000  # users whose /events purchases are remembered (least recently written dropped first)


@dataclass
class Live:
    """A bundle, the titles aligned with its index, and the batcher of its encoder."""

    bundle: Bundle
    titles: np.ndarray
    batcher: AdaptiveBatcher


class UserFeatures:
    """Online user features from Feast (features.OnlineFeatureClient), cached for `ttl_s`; None when unavailable."""

    def __init__(self, ttl_s: float, client: Any = None):
        self.ttl_s, self._client = ttl_s, client
        self._cache: OrderedDict[str, tuple[float, pd.DataFrame]] = OrderedDict()
        if client is None:  # opening the store imports Feast (seconds): never inside a request
            threading.Thread(target=self._connect, name="feast-connect", daemon=True).start()

    def lookup(self, user_id: str) -> pd.DataFrame | None:
        """Return a one-row frame of `user_id`'s online features (Feast defaults for unknown ids), or None."""
        hit = self._cache.get(user_id)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        client = self._client
        if client is None:
            return None
        try:
            frame, _defaulted = client.get_user_features([user_id])
        except Exception:
            logger.warning("online features for user %s failed; serving without them", user_id, exc_info=True)
            return None
        if self.ttl_s > 0:
            self._cache[user_id] = (time.monotonic() + self.ttl_s, frame)
            while len(self._cache) > 100_000:
                self._cache.popitem(last=False)
        return frame

    @property
    def connected(self) -> bool:
        return self._client is not None

    def push(self, purchases: list[schemas.Event], prices: pd.Series) -> None:
        """Fold purchases into the online `user_stats` (Feast push source) and drop their users' cached rows; a
        failure is a warning (the purchases still count in serving)."""
        try:
            self._client.push_purchases(purchase_frame(purchases, prices))
        except Exception:
            logger.warning("pushing %d purchase(s) to Feast failed", len(purchases), exc_info=True)
            return
        for event in purchases:
            self._cache.pop(event.user_id, None)

    def _connect(self) -> None:
        try:
            self._client = OnlineFeatureClient()
            logger.info("Feast online store connected")
        except Exception as exc:  # no materialised feature repo here: models get no user features
            logger.warning("Feast online store unavailable (%s); serving without user features", exc)


class ServingEngine:
    """The live recommender and search bundles, their encoder batchers, feature lookups, the request log and
    the event log."""

    def __init__(
        self,
        recommender: Bundle | None,
        search: Bundle | None,
        params: ServeParams,
        request_log: RequestLog | None,
        features: UserFeatures | None = None,
        tracking_uri: str | None = None,
        event_log: RequestLog | None = None,
    ):
        self.params, self.request_log, self.event_log = params, request_log, event_log
        self.features = features or UserFeatures(params.feature_cache_s)
        self.tracking_uri = tracking_uri
        self._unpackaged: dict[str, str] = {}  # task attribute -> the champion version last warned about
        # one model thread: torch already uses the cores inside a batch; more threads would only contend
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self._reload_lock = threading.Lock()
        self._swapping = threading.Event()
        # /events purchases per user, newest last; /recommend adds them to the user's history as bought just now
        self._bought: OrderedDict[str, list[str]] = OrderedDict()
        self._affinity: OrderedDict[tuple[str, str], np.ndarray | None] = OrderedDict()
        # a deployment of one task (data.<task>: null) has no bundle for the other: its endpoints answer 404
        self.rec = self._attach(recommender) if recommender is not None else None
        self.search_live = self._attach(search) if search is not None else None
        for bundle in (recommender, search):
            if bundle is not None:
                warm_up(bundle)

    # -- endpoints -------------------------------------------------------------------------------------------
    async def recommend(self, req: schemas.RecommendRequest) -> schemas.RecommendResponse:
        started, live = time.perf_counter(), self._served(self.rec, "recommend")
        bundle = live.bundle
        bought = [i for i in self._bought.get(req.user_id, []) if i in bundle.index.position]
        rank = self._ranked if hasattr(bundle.model, "rank_user") else self._nearest_to_user
        positions, scores, strategy = await rank(live, req, bought)
        items = self._scored(live, positions, scores)
        return self._respond(
            schemas.RecommendResponse,
            started,
            "recommend",
            strategy,
            bundle,
            items,
            k=req.k,
            user_id=req.user_id,
        )

    async def search(self, req: schemas.SearchRequest) -> schemas.SearchResponse:
        started, live = time.perf_counter(), self._served(self.search_live, "search")
        bundle = live.bundle
        vector = await live.batcher.submit(req.query)
        affinity = await self._search_affinity(req.user_id) if req.user_id else None
        depth = req.k if affinity is None else max(3 * req.k, 50)  # personal: re-rank a wider candidate set
        if bundle.lexical is None:
            positions, scores = self._nearest(bundle, vector, depth)
            strategy = "search"
        else:  # CPU work (BM25, a catalogue-wide dot product, fusion): off the event loop, on the model thread
            loop = asyncio.get_running_loop()
            rerank = self.params.rerank and bundle.words is not None
            positions, scores = await loop.run_in_executor(
                self.executor, hybrid_top, bundle, req.query, vector, depth, rerank
            )
            strategy = "hybrid_reranked" if rerank else "hybrid"
        if affinity is not None:  # personal re-ranking of the candidates by the user's purchase affinity
            w = self.params.personal_weight
            scores = (1 - w) * scores + w * (bundle.index.vectors[positions] @ affinity)
            order = np.argsort(-scores, kind="stable")[: req.k]
            positions, scores, strategy = positions[order], scores[order], f"{strategy}_personalized"
        items = self._scored(live, positions, scores)
        return self._respond(
            schemas.SearchResponse,
            started,
            "search",
            strategy,
            bundle,
            items,
            k=req.k,
            user_id=req.user_id,
            query=req.query,
        )

    async def similar(self, req: schemas.SimilarRequest) -> schemas.SimilarResponse:
        started = time.perf_counter()
        for live in self._lives():
            bundle = live.bundle
            position = bundle.index.position.get(req.item_id)
            if position is not None:
                vector = bundle.index.vectors[position]
                positions, scores = self._nearest(bundle, vector, req.k, exclude={req.item_id})
                items = self._scored(live, positions, scores)
                return self._respond(
                    schemas.SimilarResponse,
                    started,
                    "similar",
                    "item_to_item",
                    bundle,
                    items,
                    k=req.k,
                    item_id=req.item_id,
                    catalogue=bundle.task,
                )
        raise NotFound(f"item_id '{req.item_id}' is in neither catalogue")

    async def events(self, req: schemas.EventsRequest) -> schemas.EventsResponse:
        """Record events: all or none (every item id is checked first). Each goes to the event log (for the next
        training run) and the request log; purchases also join their users' next recommendations at once and are
        pushed to the feature store when reachable."""
        started, request_id = time.perf_counter(), uuid.uuid4().hex
        rec = self._served(self.rec, "events")  # events are purchases and clicks of the recommender's users
        for event in req.events:
            if not any(event.item_id in live.bundle.index.position for live in self._lives()):
                raise NotFound(f"item_id '{event.item_id}' is in neither catalogue")
        purchases = sorted((e for e in req.events if e.event == "purchase"), key=lambda e: e.ts)
        for user_id in dict.fromkeys(e.user_id for e in purchases):
            self._remember(user_id, [e.item_id for e in purchases if e.user_id == user_id])
        pushed = bool(purchases) and self.features.connected
        if pushed:  # blocking store IO, off the event loop and off the request: the answer does not wait for it
            prices = rec.bundle.items["price"]
            asyncio.get_running_loop().run_in_executor(None, self.features.push, purchases, prices)
        elif purchases:
            logger.warning("Feast online store unavailable: %d purchase(s) not pushed", len(purchases))
        if self.event_log is not None:  # every event, as a canonical interaction row: ingest reads them back
            values = purchase_frame(req.events, rec.bundle.items["price"])["value"]
            for n, (event, value) in enumerate(zip(req.events, values, strict=True)):
                self.event_log.record(
                    {
                        "user_id": event.user_id,
                        "item_id": event.item_id,
                        "ts": event.ts.astimezone(dt.UTC),
                        "event": event.event,
                        "quantity": float(event.quantity),
                        "value": float(value),
                        "basket_id": f"serving:{request_id}:{event.user_id}",
                        "source": "serving",
                        "request_id": f"{request_id}-{n}",
                    }
                )
        if self.request_log is not None:
            latency_ms = (time.perf_counter() - started) * 1000
            now = dt.datetime.now(dt.UTC)
            for n, event in enumerate(req.events):
                self.request_log.record(
                    {
                        "ts": now,
                        "request_id": f"{request_id}-{n}",
                        "endpoint": "events",
                        "user_id": event.user_id,
                        "query": None,
                        "item_id": event.item_id,
                        "k": None,
                        "strategy": event.event,
                        "returned_items": [],
                        "scores": [],
                        "latency_ms": latency_ms,
                    }
                )
        return schemas.EventsResponse(
            request_id=request_id, accepted=len(req.events), purchases=len(purchases), feature_push=pushed
        )

    def versions(self) -> schemas.ModelVersions:
        return schemas.ModelVersions(
            recommender=self.rec.bundle.version if self.rec else None,
            search=self.search_live.bundle.version if self.search_live else None,
        )

    @property
    def ready(self) -> bool:
        """False while a new champion is being loaded and swapped in (the readiness probe)."""
        return not self._swapping.is_set()

    # -- reload ----------------------------------------------------------------------------------------------
    def reload(self) -> list[str]:
        """Swap in the version the registry alias points to now, per task, as `python -m serving.package` saved
        it in the BentoML model store (catalogue vectors, index, rankings and query encoder built there, never in
        this process); return the names that changed. A champion not packaged yet is a warning, and the current
        version keeps serving until it is.

        The new bundle is loaded and warmed up before the swap, so requests in flight finish on the old one and
        later requests see the new one.
        """
        if self.tracking_uri is None:
            return []
        with self._reload_lock:
            client = registry_client(self.tracking_uri)
            changed = []
            try:
                for attr in ("rec", "search_live"):
                    if getattr(self, attr) is None:
                        continue
                    bundle = getattr(self, attr).bundle
                    version = champion_version(client, bundle.registered_name, self.params.alias)
                    if version == bundle.version:
                        continue
                    stored = packaged_bundle(bundle.registered_name, version)
                    if stored is None:
                        if self._unpackaged.get(attr) != version:
                            logger.warning(
                                "%s version %s is the %s but not packaged: still serving version %s until "
                                "`python -m serving.package` saves it",
                                bundle.registered_name,
                                version,
                                self.params.alias,
                                bundle.version,
                            )
                            self._unpackaged[attr] = version
                        continue
                    self._swapping.set()
                    started = time.perf_counter()
                    fresh = load_bundle(stored, threads=self.params.torch_threads)
                    warm_up(fresh)
                    setattr(self, attr, self._attach(fresh))
                    logger.info(
                        "reloaded %s: version %s -> %s in %.1f s from %s",
                        bundle.registered_name,
                        bundle.version,
                        version,
                        time.perf_counter() - started,
                        stored,
                    )
                    changed.append(bundle.registered_name)
                if changed:
                    freeze_heap()  # while readiness is false: the one full collection falls in the swap
            finally:
                self._swapping.clear()
            return changed

    def reload_in_background(self) -> bool:
        """Start `reload` in a thread unless one runs already; return whether this call started it."""
        if self._reload_lock.locked():
            return False
        threading.Thread(target=self._reload_logged, name="champion-reload", daemon=True).start()
        return True

    def _reload_logged(self) -> None:
        try:
            logger.info("reload: changed %s", self.reload())
        except Exception:
            logger.exception("reload failed, still serving %s", self.versions())

    def poll_forever(self, stop: threading.Event) -> None:
        """Reload every `reload_poll_s` seconds until `stop` is set; registry outages are logged, not fatal."""
        while not stop.wait(self.params.reload_poll_s):
            try:
                self.reload()
            except Exception as exc:
                logger.warning("champion poll failed, still serving %s (%s)", self.versions(), exc)

    # -- pieces ----------------------------------------------------------------------------------------------
    def _lives(self) -> list[Live]:
        return [live for live in (self.rec, self.search_live) if live is not None]

    @staticmethod
    def _served(live: Live | None, endpoint: str) -> Live:
        """`live`, or a 404 where this deployment has no model for the endpoint (its task is off)."""
        if live is None:
            task = "retail" if endpoint in ("recommend", "events") else "search"
            raise NotFound(f"/{endpoint}: not served here (no {task} champion: data.{task} is null)")
        return live

    def _attach(self, bundle: Bundle) -> Live:
        titles = bundle.items["title"].reindex(bundle.index.item_ids).fillna("").to_numpy(dtype=object)
        encode = functools.partial(ENCODERS[bundle.task], bundle.query_encoder or bundle.model)
        batching = self.params.batching
        size = batching.max_batch_size if batching.enabled else 1
        batcher = AdaptiveBatcher(encode, self.executor, size, batching.max_latency_ms, task=bundle.task)
        return Live(bundle, titles, batcher)

    def _remember(self, user_id: str, item_ids: list[str]) -> None:
        """Add a user's new purchases (oldest first) to what /recommend adds to their history, bounded."""
        bought = self._bought.pop(user_id, [])
        for item_id in item_ids:
            if item_id in bought:
                bought.remove(item_id)
            bought.append(item_id)
        self._bought[user_id] = bought[-self.params.max_recent_items :]
        while len(self._bought) > MAX_EVENT_USERS:
            self._bought.popitem(last=False)

    async def _search_affinity(self, user_id: str) -> np.ndarray | None:
        """Return the unit mean of the search model's vectors of the user's purchased item titles (cached)."""
        if self.rec is None:  # no recommender here: no purchase histories to personalise with
            return None
        rec, search = self.rec.bundle, self.search_live.bundle
        history = rec.histories.get(user_id)
        if not history:
            return None
        key = (search.version, user_id)
        if key not in self._affinity:
            titles = [t for t in rec.items["title"].reindex(history).fillna("").tolist() if t][-20:]
            vectors = (
                await asyncio.get_running_loop().run_in_executor(
                    self.executor, (search.query_encoder or search.model).encode_queries, titles
                )
                if titles
                else None
            )
            mean = None if vectors is None else np.asarray(vectors, dtype=np.float32).mean(0)
            self._affinity[key] = None if mean is None else mean / max(float(np.linalg.norm(mean)), 1e-9)
            while len(self._affinity) > 10_000:
                self._affinity.popitem(last=False)
        return self._affinity[key]

    async def _nearest_to_user(
        self, live: Live, req: schemas.RecommendRequest, bought: list[str]
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """A vector recommender (two-tower): the user vector's nearest items, else popularity for a cold user."""
        bundle = live.bundle
        history = [*bundle.histories.get(req.user_id, []), *bought]
        if history:
            features = None
            if self.features.connected:  # a store read is blocking IO: off the event loop
                features = await asyncio.get_running_loop().run_in_executor(None, self.features.lookup, req.user_id)
            vector = await live.batcher.submit((history, features))
            seen, strategy = set(history) if req.exclude_purchased else set(), "personalized"
            return *self._nearest(bundle, vector, req.k, exclude=seen), strategy
        if req.recent_item_ids:
            self._require_items(bundle, req.recent_item_ids)
            vector = await live.batcher.submit((list(req.recent_item_ids), None))
            seen = set(req.recent_item_ids) if req.exclude_purchased else set()
            return *self._nearest(bundle, vector, req.k, exclude=seen), "cold_start_items"
        country = (req.country or GLOBAL).strip().lower()
        strategy = "popularity_country" if country in bundle.popularity and country != GLOBAL else "popularity_global"
        ranked = bundle.popularity.get(country if strategy == "popularity_country" else GLOBAL, [])
        ids = [i for i, _ in ranked[: req.k] if i in bundle.index.position]
        positions = np.array([bundle.index.position[i] for i in ids], dtype=np.int64)
        scores = np.array([s for i, s in ranked[: req.k] if i in bundle.index.position], dtype=np.float32)
        return positions, scores, strategy

    async def _ranked(
        self, live: Live, req: schemas.RecommendRequest, bought: list[str]
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """The repeat/explore ranker: the user's packaged history, if any, plus their /events purchases (`bought`)
        and the request's recent items as a basket bought now; a user with none of these gets the ranker's choice
        among bestsellers. No feature store read: the ranker works from history alone, so a missing snapshot costs
        nothing."""
        bundle = live.bundle
        recent = [str(i) for i in req.recent_item_ids or []]
        self._require_items(bundle, recent)
        recent = list(dict.fromkeys([*bought, *recent]))
        known = bundle.model.knows(req.user_id)
        seen = set(bundle.histories.get(req.user_id, [])) | set(recent) if req.exclude_purchased else set()
        ranked = await asyncio.get_running_loop().run_in_executor(
            self.executor, bundle.model.rank_user, req.user_id, recent, req.k + len(seen)
        )
        ranked = [(i, s) for i, s in ranked if i not in seen and i in bundle.index.position][: req.k]
        positions = np.array([bundle.index.position[i] for i, _ in ranked], dtype=np.int64)
        scores = np.array([s for _, s in ranked], dtype=np.float32)
        strategy = "repeat_explore" if known else "repeat_explore_session" if recent else "repeat_explore_new_user"
        return positions, scores, strategy

    @staticmethod
    def _require_items(bundle: Bundle, item_ids: list[str]) -> None:
        unknown = [i for i in item_ids if i not in bundle.index.position]
        if unknown:
            raise NotFound(f"recent_item_ids: item_id '{unknown[0]}' is not in the {bundle.task} catalogue")

    @staticmethod
    def _nearest(bundle: Bundle, vector: np.ndarray, k: int, exclude: set[str] = frozenset()):
        scores, positions = bundle.index.search(np.asarray(vector, dtype=np.float32)[None, :], k + len(exclude))
        keep = positions[0] >= 0
        positions, scores = positions[0][keep], scores[0][keep]
        if exclude:
            mask = np.array([bundle.index.item_ids[p] not in exclude for p in positions], dtype=bool)
            positions, scores = positions[mask], scores[mask]
        return positions[:k], scores[:k]

    @staticmethod
    def _scored(live: Live, positions: np.ndarray, scores: np.ndarray) -> list[schemas.ScoredItem]:
        ids = live.bundle.index.item_ids
        return [
            schemas.ScoredItem(item_id=ids[p], title=live.titles[p], score=round(float(s), 6))
            for p, s in zip(positions, scores, strict=True)
        ]

    def _respond(
        self,
        response_cls,
        started: float,
        endpoint: str,
        strategy: str,
        bundle: Bundle,
        items: list[schemas.ScoredItem],
        k: int,
        user_id: str | None = None,
        query: str | None = None,
        item_id: str | None = None,
        **extra,
    ):
        request_id = uuid.uuid4().hex
        fields = {"user_id": user_id, "query": query, "item_id": item_id}
        response = response_cls(
            request_id=request_id,
            strategy=strategy,
            model_version=bundle.version,
            items=items,
            **{key: value for key, value in fields.items() if key in response_cls.model_fields},
            **extra,
        )
        if self.request_log is not None:
            self.request_log.record(
                {
                    "ts": dt.datetime.now(dt.UTC),
                    "request_id": request_id,
                    "endpoint": endpoint,
                    "user_id": user_id,
                    "query": query,
                    "item_id": item_id,
                    "k": k,
                    "strategy": strategy,
                    "returned_items": [i.item_id for i in items],
                    "scores": [i.score for i in items],
                    "latency_ms": (time.perf_counter() - started) * 1000,
                }
            )
        return response


def purchase_frame(purchases: list[schemas.Event], prices: pd.Series) -> pd.DataFrame:
    """Event lines as `features.OnlineFeatureClient.push_purchases` folds them in (and the event log records
    them); value = quantity x catalogue price (`prices` by item id; 0 for an item without one)."""
    frame = pd.DataFrame(
        {
            "user_id": [e.user_id for e in purchases],
            "item_id": [e.item_id for e in purchases],
            "ts": pd.to_datetime([e.ts for e in purchases], utc=True),
            "quantity": [e.quantity for e in purchases],
        }
    )
    price = prices[~prices.index.duplicated()].reindex(frame["item_id"]).fillna(0.0).to_numpy(dtype=float)
    return frame.assign(value=frame["quantity"].astype(float) * price)


def hybrid_top(
    bundle: Bundle, query: str, vector: np.ndarray, k: int, rerank: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, fused scores) of the top `k` items of a hybrid search bundle for one query, as
    `SearchModel.search` ranks them: BM25 over the bundle's catalogue, `training.hybrid` fusion of the two
    sides' top-`depth` candidates. The dense candidates come from the bundle's item index (exact for a flat
    index, HNSW above `serve.flat_index_max_items`) with their inner products; the lexical candidates' dense
    scores are computed from their vectors. `rerank`: the model's re-ranker re-orders the fused top
    `rerank.depth` (training/rerank.py). No request reads every item vector; with an exact index the result is
    `SearchModel.search`'s."""
    hybrid = bundle.model.hybrid
    depth, vector = hybrid["depth"], np.asarray(vector, dtype=np.float32)
    lexical = bundle.lexical.catalogue_scores([query])[0]
    near_scores, nearest = bundle.index.search(vector[None, :], depth)
    found = nearest[0] >= 0
    lexical_top = top_positions(lexical, depth)
    dense = np.zeros(len(lexical), dtype=np.float32)  # only the candidates' entries are read
    dense[lexical_top] = bundle.index.vectors[lexical_top] @ vector
    dense[nearest[0][found]] = near_scores[0][found]
    chosen = np.zeros(len(lexical), dtype=bool)
    chosen[lexical_top] = chosen[nearest[0][found]] = True
    candidates = np.flatnonzero(chosen)
    fused = fuse_candidates(lexical[candidates], dense[candidates], hybrid["weight"])
    if rerank:  # the top `depth` in the re-ranker's order, then the rest of the top k in the fused order
        reranker = bundle.model.reranker
        depth = reranker.depth
        top = top_candidates(lexical[candidates], dense[candidates], fused, max(k, depth))
        picked = candidates[top.positions]  # catalogue positions
        head = Candidates(picked[:depth], top.lexical[:depth], top.dense[:depth], top.fused[:depth])
        positions, scores = reranker.rerank(query_words(bundle.lexical, query), head, bundle.words)
        positions = np.concatenate([positions, picked[depth:]])[:k]
        return positions, np.concatenate([scores, top.fused[depth:]]).astype(np.float32)[:k]
    top = ranked(candidates, fused, k)
    return np.array([p for p, _ in top], dtype=np.int64), np.array([s for _, s in top], dtype=np.float32)


def freeze_heap() -> None:
    """Collect once, then keep every object alive now out of later collections (`gc.freeze`). A serving process
    holds ~730k tracked objects (libraries, models, bundles); a full collection over them took ~0.4 s, during
    which no request is served. Objects frozen earlier (a swapped-out bundle) are collected in this call's
    collection first."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def warm_up(bundle: Bundle) -> None:
    """Run the encoder once before the first request (lazy weights, torch start-up); the recommender also sees
    its whole catalogue, as at packaging, so items newer than its training are known to `encode_users`."""
    if bundle.task == "retail" and hasattr(bundle.model, "rank_user"):
        bundle.model.rank_user("warm-up", [], 1)  # builds the ranker's catalogue statistics
        return
    if bundle.task == "retail":
        bundle.model.encode_items(bundle.items.reset_index(drop=True)[ITEM_COLUMNS])
        bundle.model.encode_users([bundle.index.item_ids[:1].tolist()], None)
    else:
        (bundle.query_encoder or bundle.model).encode_queries(["warm up"])
        if bundle.lexical is not None:
            bundle.lexical.catalogue_scores(["warm up"])


def _encode_queries(model: Any, batch: list[str]) -> np.ndarray:
    """Encode a batch of query texts."""
    return np.asarray(model.encode_queries(list(batch)), dtype=np.float32)


def _encode_users(model: Any, batch: list[tuple[list[str], pd.DataFrame | None]]) -> np.ndarray:
    """Encode (history, features) pairs; requests with and without online features go in separate calls."""
    out: list[np.ndarray | None] = [None] * len(batch)
    for with_features in (True, False):
        idx = [i for i, (_, f) in enumerate(batch) if (f is not None) == with_features]
        if not idx:
            continue
        features = pd.concat([batch[i][1] for i in idx], ignore_index=True) if with_features else None
        vectors = np.asarray(model.encode_users([batch[i][0] for i in idx], features), dtype=np.float32)
        for row, i in enumerate(idx):
            out[i] = vectors[row]
    return np.stack(out)


# what a task's batcher encodes per request: (history, online features) for the recommender, text for search
ENCODERS = {"retail": _encode_users, "search": _encode_queries}
