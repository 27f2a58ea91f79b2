"""Generator `synthetic_queries`: doc2query queries for catalogue items from a language model, round-trip filtered.

Generators 1+2 (doc2query, InPars, Promptagator). Items without a real training query come first, then the
others, up to `max_items` (seeded); each gets `queries_per_item` queries through `augment.backend`. With the
huggingface backend and `fine_tune_steps` > 0 (the default: the packaged SmolLM2-135M), the model is first
fine-tuned on real TRAINING (title, query) pairs (pipelines/augment/doc2query.py) and then continues
`Product: {title}\nQuery:`; with `fine_tune_steps: 0` (or a served model, backend `openai`) it is prompted
with `few_shot` real training pairs instead (InPars). A query is kept only if a retriever over the whole
catalogue (BM25 by default, or the MiniLM encoder) ranks its source item in the top `filter_top_k`; the kept
fraction goes into the manifest. The statistical twin on the same items: `statistical_queries`.
"""

import logging
import time
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from core.encoder import TextEncoder
from core.errors import ShopError
from core.params import BackendParams
from core.paths import shared_root
from pipelines.adapters.judged import query_id
from pipelines.augment.backends import (
    HuggingFaceBackend,
    Request,
    TextGenerator,
    backend_record,
    cache_folder,
    generation_settings,
    make_backend,
    open_cache,
)
from pipelines.augment.doc2query import FineTune, TunedModel, fine_tuned_model, training_pairs
from pipelines.augment.manifest import Context, GeneratorOutput
from pipelines.augment.retrieval import BM25Index, item_text
from pipelines.augment.search_data import load_search_training, price_band

log = logging.getLogger(__name__)
GENERATOR = "synthetic_queries"


class QuerySettings(BaseModel):
    """What every query generator of this recipe shares: which items, how many queries, the round-trip filter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_items: int | None = Field(ge=1, description="catalogue items that get queries (None = all)")
    unqueried_first: bool = Field(description="items without a real training query are chosen first")
    queries_per_item: int = Field(ge=1)
    filter_retriever: Literal["bm25", "encoder", "none"]
    filter_top_k: int = Field(ge=1)
    relevance: float = Field(ge=0, le=1, description="label given to a kept synthetic (query, item) pair")


class Settings(QuerySettings):
    """Generators 1+2: language-model (doc2query-tuned or few-shot) queries per item, kept if they retrieve it."""

    few_shot: int = Field(ge=0, description="real training queries shown per prompt (without fine-tuning)")
    min_relevance: float = Field(ge=0, le=1, description="training pairs used to fine-tune / as examples")
    fine_tune_steps: int = Field(ge=0, description="doc2query fine-tuning steps (huggingface); 0 = few-shot")
    fine_tune_batch_size: int = Field(ge=1)
    fine_tune_lr: float = Field(gt=0, le=0.01)
    max_new_tokens: int = Field(ge=1, le=256, description="tokens per query (augment.backend's sizes free text)")


def few_shot_pool(train: pd.DataFrame, items: pd.DataFrame, min_relevance: float = 0.75) -> list[tuple[str, str]]:
    """(item title, real training query) pairs judged relevant: the only source of few-shot examples."""
    pairs = train[train["relevance"] >= min_relevance].merge(items[["item_id", "title"]], on="item_id")
    pairs = pairs.sort_values(["query_id", "item_id"]).drop_duplicates("query_id")
    return list(zip(pairs["title"].astype(str), pairs["query"].astype(str), strict=True))


def choose_items(train: pd.DataFrame, items: pd.DataFrame, limit: int | None, seed: int, unqueried_first: bool):
    """At most `limit` catalogue items in item_id order: a seeded random order, items without a real training
    query first when `unqueried_first`. A smaller `limit` picks a prefix of a larger one's choice (same seed)."""
    df = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    if limit is None or limit >= len(df):
        return df
    draw = np.random.default_rng(seed).random(len(df))
    queried = df["item_id"].astype(str).isin(set(train["item_id"].astype(str))).to_numpy()
    order = np.lexsort((draw, queried)) if unqueried_first else np.argsort(draw, kind="stable")
    return df.iloc[np.sort(order[:limit])].reset_index(drop=True)


def doc2query_requests(items: pd.DataFrame, n: int) -> list[Request]:
    """One `doc2query` request (the title only: what the tuned model was trained on) per item."""
    return [Request("doc2query", {"title": title}, n=n) for title in items["title"].astype(str)]


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
    sp: QuerySettings,
    backend: TextGenerator,
    seed: int,
    encoder_model: str = "minilm",
    *,
    doc2query: bool = False,
    few_shot: int = 0,
    min_relevance: float = 0.75,
) -> tuple[pd.DataFrame, dict]:
    """Return (canonical synthetic query rows, stats). Rows: query, item_id (= parent_id), relevance, rank.

    `doc2query`: the backend holds a doc2query-tuned model (title prompts); else item prompts with `few_shot`
    real training pairs of relevance >= `min_relevance` (LLM backends; the offline backend ignores them)."""
    chosen = choose_items(train, items, sp.max_items, seed, sp.unqueried_first)
    if doc2query:
        requests = doc2query_requests(chosen, sp.queries_per_item)
    else:
        pool = few_shot_pool(train, items, min_relevance) if few_shot else []
        requests = build_requests(chosen, sp.queries_per_item, pool, few_shot, seed)
    started, fresh = time.perf_counter(), backend.stats["generated"]
    outputs = backend.generate(requests)
    gen_seconds, fresh = time.perf_counter() - started, backend.stats["generated"] - fresh
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
        "unqueried_items": int((~chosen["item_id"].astype(str).isin(set(train["item_id"].astype(str)))).sum()),
        "requested": len(chosen) * sp.queries_per_item,
        "generated": generated,
        "kept": len(rows),
        "kept_fraction": round(len(rows) / generated, 4),
    }
    log.info(
        "%s: %d queries for %d items in %.1f s (%d prompts generated, %.2f prompts/s; %d from the cache), "
        "%d kept (%.1f%%)",
        backend.model_id,
        generated,
        len(chosen),
        gen_seconds,
        fresh,
        fresh / max(gen_seconds, 1e-9),
        len(requests) - fresh,
        len(rows),
        100 * len(rows) / generated,
    )
    return rows, stats


def doc2query_backend(bp: BackendParams, tuned: TunedModel, seed: int) -> HuggingFaceBackend:
    """The huggingface backend on the tuned weights, labelled `<model>+doc2query`, keyed by their hash."""
    return HuggingFaceBackend(
        f"{bp.model}+doc2query",
        generation_settings(bp),
        open_cache(bp, shared_root()),
        seed,
        batch_size=bp.batch_size,
        device=bp.device,
        dtype=bp.dtype,
        source=tuned.source,
        model_hash=tuned.record["weights_sha256"],
    )


def generate(ctx: Context) -> GeneratorOutput:
    """Round-trip-filtered language-model queries for catalogue items (doc2query-tuned on real TRAINING pairs)."""
    sp, seed, items = ctx.settings, ctx.params.seed, ctx.table("items")
    bp = ctx.params.augment.backend.model_copy(update={"max_new_tokens": sp.max_new_tokens})
    train_df, items_df = load_search_training(ctx.train, items)
    tuned = None
    if sp.fine_tune_steps and bp.name == "openai":
        raise ShopError(
            "generators.synthetic_queries.settings.fine_tune_steps: a served model (augment.backend.name openai) "
            "cannot be fine-tuned here; set 0 (few-shot prompts) or use the huggingface backend"
        )
    if sp.fine_tune_steps and bp.name == "huggingface":
        pairs = training_pairs(train_df, items_df, sp.min_relevance)
        recipe = FineTune(sp.fine_tune_steps, sp.fine_tune_batch_size, sp.fine_tune_lr)
        tuned = fine_tuned_model(bp.model, pairs, recipe, seed, cache_folder(bp, shared_root()), bp.device)
        backend = doc2query_backend(bp, tuned, seed)
    else:  # few-shot prompts (huggingface / openai), or the offline sampler (fits on the training pairs itself)
        backend = make_backend(bp, seed, shared_root(), train=train_df, items=items_df)
    try:
        rows, stats = generate_synthetic_queries(
            train_df,
            items_df,
            sp,
            backend,
            seed,
            ctx.params.encoder.model,
            doc2query=tuned is not None,
            few_shot=sp.few_shot,
            min_relevance=sp.min_relevance,
        )
    finally:
        backend.close()
    if tuned is not None:  # the facts of the tuned weights (their durations stay in the log and the cache)
        timing = ("load_seconds", "fine_tune_seconds", "seconds_per_step", "device")
        stats["doc2query"] = {k: v for k, v in tuned.record.items() if k not in timing}
    return query_output(GENERATOR, ctx, rows, stats, backend, bp)


def query_output(
    name: str, ctx: Context, rows: pd.DataFrame, stats: dict, backend: TextGenerator, bp: BackendParams
) -> GeneratorOutput:
    """A query generator's rows with their lineage: inputs, backend, model and its hash, settings, stats."""
    log.info("%s: %s; cache %s", name, stats, backend.stats)
    return GeneratorOutput(
        rows,
        inputs=[ctx.train, ctx.table("items")],
        backend=backend.name,
        model_id=backend.model_id,
        model_hash=backend.model_hash,
        settings={"backend": backend_record(bp)},
        extra=stats,
    )
