"""Request and response bodies of the service; limits come from params.yaml `serve` (checked at the edge)."""

import json
import os
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from core.params import Params, load_params


def load_serving_params() -> Params:
    """Return params.yaml with `$SHOPAUG_SERVE` (JSON, e.g. '{"batching": {"enabled": false}}') over `serve`."""
    return load_params(overrides={"serve": json.loads(os.environ.get("SHOPAUG_SERVE") or "{}")})


LIMITS = load_serving_params().serve  # params.yaml is packaged with the Bento (bentofile.yaml `include`)

Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
QueryText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=LIMITS.max_query_chars)]
TopK = Annotated[int, Field(ge=1, le=LIMITS.max_k, description=f"number of items, 1..{LIMITS.max_k}")]


class Request(BaseModel):
    # strict: "5" is not a k and 1 is not a user id; unknown fields are refused rather than ignored
    model_config = ConfigDict(strict=True, extra="forbid")


class RecommendRequest(Request):
    user_id: Identifier
    k: TopK = 10
    exclude_purchased: bool = True
    recent_item_ids: list[Identifier] = Field(
        default_factory=list,
        max_length=LIMITS.max_recent_items,
        description="items a user unknown to the system just viewed or bought (cold start)",
    )
    country: Identifier | None = Field(None, description="context for the cold-start popularity fallback")


class SearchRequest(Request):
    query: QueryText
    k: TopK = 10
    user_id: Identifier | None = Field(None, description="known user: results re-ranked by their purchases")


class SimilarRequest(Request):
    item_id: Identifier
    k: TopK = 10


class Event(Request):
    user_id: Identifier
    item_id: Identifier
    ts: AwareDatetime = Field(description="when it happened: ISO 8601 with a timezone, e.g. 2011-12-09T12:50:00Z")
    quantity: int = Field(1, ge=1)
    event: Literal["purchase", "click"]


class EventsRequest(Request):
    events: list[Event] = Field(min_length=1, max_length=LIMITS.max_events)


class ScoredItem(BaseModel):
    item_id: str
    title: str
    score: float


RecommendStrategy = Literal[
    "repeat_explore",  # repeat/explore ranker: a known user's history (+ recent items)
    "repeat_explore_session",  # ... an unknown user's recent items
    "repeat_explore_new_user",  # ... a user with nothing known: the ranker's bestsellers
    "personalized",  # two-tower: known user
    "cold_start_items",  # two-tower: unknown user's recent items
    "popularity_country",
    "popularity_global",
]


class RecommendResponse(BaseModel):
    request_id: str
    user_id: str
    strategy: RecommendStrategy
    model_version: str
    items: list[ScoredItem]


SearchStrategy = Literal[
    "search",  # dense search model: the query vector's nearest items
    "search_personalized",  # ... re-ranked by the user's purchase affinity
    "hybrid",  # hybrid search model: BM25 fused with the dense scores (training/hybrid.py)
    "hybrid_personalized",  # ... re-ranked by the user's purchase affinity
    "hybrid_reranked",  # ... its top candidates re-ordered by the model's re-ranker (training/rerank.py)
    "hybrid_reranked_personalized",  # ... and by the user's purchase affinity
]


class SearchResponse(BaseModel):
    request_id: str
    query: str
    strategy: SearchStrategy
    model_version: str
    items: list[ScoredItem]


class SimilarResponse(BaseModel):
    request_id: str
    item_id: str
    catalogue: Literal["retail", "search"]
    strategy: Literal["item_to_item"] = "item_to_item"
    model_version: str
    items: list[ScoredItem]


class EventsResponse(BaseModel):
    request_id: str
    accepted: int = Field(description="events recorded (all of the request's)")
    purchases: int = Field(description="purchases among them, now part of their users' recommendations")
    feature_push: bool = Field(description="purchases handed to the Feast push source (false: none, or no store)")


class ModelVersions(BaseModel):
    recommender: str | None = Field(description="champion version served; null where the retail task is off")
    search: str | None = Field(description="champion version served; null where the search task is off")


class ReloadResponse(BaseModel):
    status: Literal["started", "already_running"]
    versions: ModelVersions = Field(description="versions served now; poll /ping to see the switch")
