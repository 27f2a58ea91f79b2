"""The BentoML service: the registry's champion recommender and search models behind recommend, search, similar.

Serve the packaged champion with `bentoml serve serving.service:Shopaug` (see README, "Serving").
"""

import hmac
import logging
import os
import threading
from http import HTTPStatus
from pathlib import Path

import bentoml
from bentoml.exceptions import BentoMLException

from core.logfolder import is_uri
from core.paths import repo_root
from core.tasks import tasks_on
from serving.champion import load_bundle, tracking_uri
from serving.engine import ServingEngine, freeze_heap
from serving.errors import OneLineErrors
from serving.overload import LoadShedding
from serving.request_log import EVENT_LOG_SCHEMA, RequestLog
from serving.schemas import (
    EventsRequest,
    EventsResponse,
    ModelVersions,
    RecommendRequest,
    RecommendResponse,
    ReloadResponse,
    SearchRequest,
    SearchResponse,
    SimilarRequest,
    SimilarResponse,
    load_serving_params,
)

logger = logging.getLogger(__name__)
logging.getLogger("serving").setLevel(logging.INFO)  # reloads and Feast fallbacks reach the `bentoml serve` log

# params.yaml (packaged with the Bento) with $SHOPAUG_SERVE over `serve`
PARAMS = load_serving_params()
# BentoML model names = the registered model names (what `python -m serving.package` saves), for the tasks on
TASKS_ON = tasks_on(PARAMS.data)
RECOMMENDER, SEARCH = PARAMS.mlflow.recommender_model, PARAMS.mlflow.search_model
# the endpoints behind the in-flight limit and deadline (health, metrics, docs, ping and admin stay outside)
SHED_PATHS = ("/recommend", "/search", "/similar", "/events")


@bentoml.service(
    name="shopaug",
    workers=1,
    traffic={"timeout": 30},
    metrics={"enabled": True},
)
class Shopaug:
    # the champion versions, saved into the BentoML model store by `python -m serving.package`; `bentoml build`
    # packages exactly these into the Bento; a task that is off (data.<task>: null) has none and its endpoints 404
    recommender_model = bentoml.models.BentoModel(f"{RECOMMENDER}:latest") if "retail" in TASKS_ON else None
    search_model = bentoml.models.BentoModel(f"{SEARCH}:latest") if "search" in TASKS_ON else None

    def __init__(self) -> None:
        import torch

        params = PARAMS
        torch.set_num_threads(params.serve.torch_threads)
        log = params.serve.request_log
        # the request log is where monitoring.drift reads it (monitoring.drift.log_dir), unless the env says; a
        # relative folder is under the repo, an object-store location (s3://...) is used as it is
        log_dir = os.environ.get("SHOPAUG_REQUEST_LOG_DIR") or params.monitoring.drift.log_dir
        log_dir = log_dir if is_uri(log_dir) else repo_root() / log_dir
        self.request_log = RequestLog(
            log_dir,
            log.sample_rate,
            log.rows_per_file,
            log.flush_s,
            log.max_files,
            log.max_buffered_rows,
            replica=os.environ.get("SHOPAUG_REPLICA_ID"),  # a stable id (StatefulSet pod name) keeps pruning its files
        )
        events = params.serve.event_log
        self.event_log = RequestLog(
            events.dir if is_uri(events.dir) else repo_root() / events.dir,  # an absolute dir stays as it is
            1.0,  # every event: they are training data, not a sample
            events.rows_per_file,
            events.flush_s,
            None,  # never pruned
            events.max_buffered_rows,
            replica=self.request_log.replica,
            schema=EVENT_LOG_SCHEMA,
            prefix="events",
        )
        serve = params.serve
        threads = params.serve.torch_threads
        self.engine = ServingEngine(
            load_bundle(Path(self.recommender_model.path)) if self.recommender_model else None,
            load_bundle(Path(self.search_model.path), threads=threads) if self.search_model else None,
            serve,
            self.request_log,
            tracking_uri=tracking_uri(params.mlflow.tracking_uri),
            event_log=self.event_log,
        )
        self._stop = threading.Event()
        if serve.reload_poll_s > 0:
            threading.Thread(
                target=self.engine.poll_forever, args=(self._stop,), name="champion-poll", daemon=True
            ).start()
        freeze_heap()  # models and libraries are loaded: later garbage collections skip them
        logger.info("serving %s", self.engine.versions())

    @bentoml.api
    async def recommend(self, request: RecommendRequest, /) -> RecommendResponse:
        """Top-k items for a user: personal for known users, cold start from recent items or popularity otherwise."""
        return await self.engine.recommend(request)

    @bentoml.api
    async def search(self, request: SearchRequest, /) -> SearchResponse:
        """Top-k catalogue items for a query, re-ranked by the user's purchases when `user_id` is known."""
        return await self.engine.search(request)

    @bentoml.api
    async def similar(self, request: SimilarRequest, /) -> SimilarResponse:
        """Top-k items closest to an item of either catalogue."""
        return await self.engine.similar(request)

    @bentoml.api
    async def events(self, request: EventsRequest, /) -> EventsResponse:
        """Purchase and click events, all or none: logged; purchases shape their users' next recommendations at
        once and are pushed to the feature store when it is reachable."""
        return await self.engine.events(request)

    @bentoml.api
    async def ping(self) -> ModelVersions:
        """The framework floor for the benchmark: no model work, just the versions being served."""
        return self.engine.versions()

    @bentoml.api(route="/admin/reload")
    def admin_reload(self, ctx: bentoml.Context) -> ReloadResponse:
        """Start switching to the versions the champion alias points to now (Bearer $SHOPAUG_ADMIN_TOKEN), as
        `python -m serving.package` saved them in the model store: loaded in the background and swapped in whole,
        so no request fails."""
        token = os.environ.get("SHOPAUG_ADMIN_TOKEN", "")
        given = ctx.request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            raise BentoMLException("admin token missing or wrong", error_code=HTTPStatus.UNAUTHORIZED)
        started = self.engine.reload_in_background()
        return ReloadResponse(status="started" if started else "already_running", versions=self.engine.versions())

    def __is_ready__(self) -> bool:
        """Readiness (/readyz): false while a new champion is being swapped in, so traffic goes to other replicas."""
        return self.engine.ready

    @bentoml.on_shutdown
    def _close(self) -> None:
        self._stop.set()
        self.request_log.close()
        self.event_log.close()


# 4xx bodies become {"error": "<one line naming the field and the reason>"}
Shopaug.add_asgi_middleware(OneLineErrors)
# over `serve.max_in_flight` requests, or past `serve.deadline_ms`: 503 with Retry-After
Shopaug.add_asgi_middleware(
    LoadShedding,
    paths=SHED_PATHS,
    max_in_flight=PARAMS.serve.max_in_flight,
    deadline_s=PARAMS.serve.deadline_ms / 1000,
)
