"""Generator `synthetic_queries`: doc2query-style queries for catalogue items, round-trip filtered.

Generators 1+2 (doc2query, InPars, Promptagator): every catalogue item (up to `max_items`, seeded) gets
`queries_per_item` queries from its text plus context (category, price band) through the configured backend;
LLM prompts carry few-shot examples drawn only from real TRAINING (title, query) pairs. A query is kept only
if a retriever over the whole catalogue (BM25 by default, or the MiniLM encoder) ranks its source item in the
top `filter_top_k`; the kept fraction goes into the manifest.
"""

import logging
import time
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from core.encoder import TextEncoder
from core.errors import ShopError
from core.paths import repo_root
from pipelines.adapters.judged import query_id
from pipelines.augment.backends import Request, TextGenerator, make_backend
from pipelines.augment.manifest import Context, GeneratorOutput
from pipelines.augment.retrieval import BM25Index, item_text
from pipelines.augment.search_data import load_search_training, price_band, take

log = logging.getLogger(__name__)
GENERATOR = "synthetic_queries"


class Settings(BaseModel):
    """Generators 1+2: doc2query-style queries per catalogue item, kept only if they retrieve their item."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_items: int | None = Field(ge=1, description="catalogue items that get queries (None = all)")
    queries_per_item: int = Field(ge=1)
    few_shot: int = Field(ge=0, description="real training queries shown per prompt (LLM backends)")
    filter_retriever: Literal["bm25", "encoder", "none"]
    filter_top_k: int = Field(ge=1)
    relevance: float = Field(ge=0, le=1, description="label given to a kept synthetic (query, item) pair")


def few_shot_pool(train: pd.DataFrame, items: pd.DataFrame, min_relevance: float = 0.75) -> list[tuple[str, str]]:
    """(item title, real training query) pairs judged relevant: the only source of few-shot examples."""
    pairs = train[train["relevance"] >= min_relevance].merge(items[["item_id", "title"]], on="item_id")
    pairs = pairs.sort_values(["query_id", "item_id"]).drop_duplicates("query_id")
    return list(zip(pairs["title"].astype(str), pairs["query"].astype(str), strict=True))


def build_requests(items: pd.DataFrame, n: int, pool: list[tuple[str, str]], shots: int, seed: int) -> list[Request]:
    """One `query` request per item with its text, context and `shots` seeded few-shot examples."""
    bands = price_band(items["price"])
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(pool), size=(len(items), shots)) if pool and shots else np.zeros((len(items), 0), int)
    out = []
    for i, row in enumerate(items[["title", "description", "category"]].itertuples(index=False)):
        record = {
            "title": row.title,
            "description": row.description,
            "category": row.category,
            "price_band": bands.iat[i],
        }
        out.append(Request("query", record, n=n, examples=tuple(pool[j] for j in picks[i])))
    return out


def round_trip_ranks(
    queries: list[str],
    item_ids: list[str],
    items: pd.DataFrame,
    retriever: str,
    encoder_model: str = "minilm",
) -> np.ndarray:
    """Rank of each query's source item among the whole catalogue under `retriever` (bm25 or encoder)."""
    if retriever == "bm25":
        return BM25Index(items).rank_of(queries, item_ids)
    if retriever == "encoder":
        encoder = TextEncoder(encoder_model)
        item_vecs = encoder.encode(item_text(items))
        position = {item: i for i, item in enumerate(items["item_id"].astype(str))}
        target = np.array([position[i] for i in item_ids])
        ranks = np.empty(len(queries), dtype=np.int64)
        for start in range(0, len(queries), 2048):
            q = encoder.encode(queries[start : start + 2048])
            scores = q @ item_vecs.T
            own = scores[np.arange(len(q)), target[start : start + len(q)]]
            ranks[start : start + len(q)] = (scores > own[:, None]).sum(1)
        return ranks
    raise ShopError(f"generators.synthetic_queries.settings.filter_retriever: unknown retriever '{retriever}'")


def generate_synthetic_queries(
    train: pd.DataFrame,
    items: pd.DataFrame,
    sp: Settings,
    backend: TextGenerator,
    seed: int,
    encoder_model: str = "minilm",
) -> tuple[pd.DataFrame, dict]:
    """Return (canonical synthetic query rows, stats). Rows: query, item_id (= parent_id), relevance, rank."""
    chosen = take(items, sp.max_items, seed, "item_id")
    requests = build_requests(chosen, sp.queries_per_item, few_shot_pool(train, items), sp.few_shot, seed)
    started = time.perf_counter()
    outputs = backend.generate(requests)
    gen_seconds = time.perf_counter() - started
    ids = chosen["item_id"].astype(str).tolist()
    rows = pd.DataFrame([(q, ids[i]) for i, texts in enumerate(outputs) for q in texts], columns=["query", "item_id"])
    rows = rows[rows["query"].str.strip() != ""].drop_duplicates(["query", "item_id"]).reset_index(drop=True)
    generated = len(rows)
    if rows.empty:
        raise ShopError(f"backend {backend.name} produced no queries for {len(chosen)} items")
    if sp.filter_retriever != "none":
        rows["rank"] = round_trip_ranks(
            rows["query"].tolist(), rows["item_id"].tolist(), items, sp.filter_retriever, encoder_model
        )
        rows = rows[rows["rank"] < sp.filter_top_k].reset_index(drop=True)
    else:
        rows["rank"] = -1
    if rows.empty:
        raise ShopError("generators.synthetic_queries.settings.filter_top_k: round-trip filtering removed every query")
    rows = rows.assign(query_id=rows["query"].map(query_id), relevance=sp.relevance, parent_id=rows["item_id"])
    stats = {
        "items": len(chosen),
        "requested": len(chosen) * sp.queries_per_item,
        "generated": generated,
        "kept": len(rows),
        "kept_fraction": round(len(rows) / generated, 4),
    }
    log.info(
        "synthetic_queries: generated %d queries in %.1f s (%.0f queries/s)",
        generated,
        gen_seconds,
        generated / max(gen_seconds, 1e-9),
    )
    return rows, stats


def generate(ctx: Context) -> GeneratorOutput:
    """Round-trip-filtered synthetic queries for catalogue items (real TRAINING queries as few-shot pool)."""
    sp, bp, items = ctx.settings, ctx.params.augment.backend, ctx.table("items")
    train_df, items_df = load_search_training(ctx.train, items)
    backend = make_backend(bp, ctx.params.seed, repo_root(), train=train_df, items=items_df)
    try:
        rows, stats = generate_synthetic_queries(
            train_df, items_df, sp, backend, ctx.params.seed, ctx.params.encoder.model
        )
    finally:
        backend.close()
    log.info("synthetic_queries: %s; cache %s", stats, backend.stats)
    return GeneratorOutput(
        rows,
        inputs=[ctx.train, items],
        backend=backend.name,
        model_id=backend.model_id,
        model_hash=backend.model_hash,
        settings={"backend": bp.model_dump()},
        extra=stats,
    )
