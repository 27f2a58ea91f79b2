"""Generator `statistical_queries`: synthetic_queries' recipe on the `offline` backend, a statistical query
sampler learned from real TRAINING (query, title) pairs (backends/offline.py): thousands of queries per CPU
second, no language model.

It chooses items exactly as `synthetic_queries` does (same seed, same order; `unqueried_first` as set), so
with a larger `max_items` its items include all of the language model's: the two can be compared head to
head on the same items, and this one supplies the volume. Round-trip filtered the same way.
"""

import logging

from core.paths import shared_root
from pipelines.augment.backends import make_backend
from pipelines.augment.manifest import Context, GeneratorOutput
from pipelines.augment.search_data import load_search_training
from pipelines.augment.synthetic_queries import QuerySettings, generate_synthetic_queries, query_output

log = logging.getLogger(__name__)
GENERATOR = "statistical_queries"


class Settings(QuerySettings):
    """Statistical queries per catalogue item (the offline sampler), kept only if they retrieve their item."""


def generate(ctx: Context) -> GeneratorOutput:
    """Round-trip-filtered queries sampled by the offline model, whatever `augment.backend.name` says."""
    sp, items = ctx.settings, ctx.table("items")
    bp = ctx.params.augment.backend.model_copy(update={"name": "offline"})
    train_df, items_df = load_search_training(ctx.train, items)
    backend = make_backend(bp, ctx.params.seed, shared_root(), train=train_df, items=items_df)
    try:
        rows, stats = generate_synthetic_queries(
            train_df, items_df, sp, backend, ctx.params.seed, ctx.params.encoder.model
        )
    finally:
        backend.close()
    return query_output(GENERATOR, ctx, rows, stats, backend, bp)
