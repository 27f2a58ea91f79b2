"""Generator `hard_negatives`: graded-label smoothing plus BM25-mined hard negatives for training queries.

Generator 4 (output augmentation). For every real training query (up to `max_queries`, seeded):
- `smoothed` rows: each judged (query, item) pair with relevance (1 - s) * r + s * mean training relevance,
  a softer target for graded labels (label smoothing); fusion lets these rows replace their real pair;
- `hard_negative` rows: catalogue items BM25 ranks high for the query but nobody judged for it, after
  skipping the top `skip_top` unjudged hits (the likeliest false negatives), with relevance
  `negative_relevance` (the ANCE / DPR practice of training on retriever-mined negatives).
"""

import logging

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from core.errors import ShopError
from pipelines.augment.manifest import Context, GeneratorOutput
from pipelines.augment.retrieval import BM25Index
from pipelines.augment.search_data import load_search_training, take

log = logging.getLogger(__name__)
GENERATOR = "hard_negatives"


class Settings(BaseModel):
    """Generator 4: graded-label smoothing of training pairs plus BM25-mined unjudged hard negatives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_queries: int | None = Field(ge=1, description="training queries mined (None = all)")
    negatives_per_query: int = Field(ge=0)
    mine_top_k: int = Field(ge=1, description="BM25 depth searched for negatives")
    skip_top: int = Field(ge=0, description="top unjudged hits skipped (likely false negatives)")
    smoothing: float = Field(ge=0, le=1, description="relevance -> (1-s)*relevance + s*mean_relevance")
    negative_relevance: float = Field(ge=0, le=1)


def generate_hard_negatives(
    train: pd.DataFrame, items: pd.DataFrame, hp: Settings, seed: int
) -> tuple[pd.DataFrame, dict]:
    """Return (canonical rows with a `kind` column: smoothed | hard_negative, stats)."""
    distinct = take(train.drop_duplicates("query_id")[["query_id", "query"]], hp.max_queries, seed, "query_id")
    chosen = train[train["query_id"].isin(set(distinct["query_id"]))]
    frames = []
    if hp.smoothing > 0:
        mean = float(train["relevance"].mean())
        smoothed = chosen[["query_id", "query", "item_id", "relevance"]].assign(
            relevance=lambda d: (1 - hp.smoothing) * d["relevance"] + hp.smoothing * mean,
            kind="smoothed",
            bm25_rank=-1,
        )
        frames.append(smoothed)
    negatives = 0
    if hp.negatives_per_query > 0:
        judged = chosen.groupby("query_id")["item_id"].agg(lambda s: set(s.astype(str))).to_dict()
        hits = BM25Index(items).top_k(distinct["query"].astype(str).tolist(), hp.mine_top_k)
        rows = []
        for qid, text, ranked in zip(distinct["query_id"], distinct["query"], hits, strict=True):
            unjudged = [(rank, item) for rank, (item, _) in enumerate(ranked) if item not in judged.get(qid, ())]
            for rank, item in unjudged[hp.skip_top : hp.skip_top + hp.negatives_per_query]:
                rows.append((qid, text, item, hp.negative_relevance, "hard_negative", rank))
        negatives = len(rows)
        if rows:
            frames.append(
                pd.DataFrame(rows, columns=["query_id", "query", "item_id", "relevance", "kind", "bm25_rank"])
            )
    if not frames:
        raise ShopError(
            "generators.hard_negatives.settings: smoothing and negatives_per_query are both 0; nothing to generate"
        )
    out = pd.concat(frames, ignore_index=True)
    out = out.assign(parent_id=out["query_id"]).reset_index(drop=True)
    stats = {
        "queries": len(distinct),
        "smoothed": int((out["kind"] == "smoothed").sum()),
        "hard_negatives": negatives,
        "queries_without_negatives": int(len(distinct) - out.loc[out["kind"] == "hard_negative", "query_id"].nunique())
        if hp.negatives_per_query
        else None,
    }
    return out, stats


def generate(ctx: Context) -> GeneratorOutput:
    """Smooth graded labels and mine BM25 hard negatives for real training queries."""
    items = ctx.table("items")
    train_df, items_df = load_search_training(ctx.train, items)
    rows, stats = generate_hard_negatives(train_df, items_df, ctx.settings, ctx.params.seed)
    log.info("hard_negatives: %s", stats)
    return GeneratorOutput(
        rows, inputs=[ctx.train, items], backend=None, model_id="bm25 (bm25s, k1=1.5, b=0.75)", extra=stats
    )
