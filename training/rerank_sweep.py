"""Validation-only choice of `train.search.rerank.max_queries`: how many training queries the re-ranker learns from.

Run: `python -m training.rerank_sweep --model models/search/aug --data data/fused/search/aug --out
reports/rerank_validation.md` (after `dvc repro train@search-aug`; about 6 CPU minutes). The trained model's
hybrid first stage scores every training query's candidates once; then one re-ranker per sample size learns from
the queries `training.rerank.sample_queries` draws with the params' seed (what training draws), early-stopped
and scored on the real validation split over the whole catalogue, as training does. That score is optimistic:
early stopping picked the round on the same queries. So each size is also cross-validated on two halves of the
validation queries (early-stopped on one half, scored on the other, and the reverse): the mean gain over the
first stage on the held-out halves is what the re-ranker adds to queries it never saw. The test split is never
read. Not a DVC stage: it justifies `train.search.rerank` (`enabled`, `max_queries`) in params.yaml.
"""

import logging
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from core import cli
from core.io import atomic_path, read_table
from training.data import training_table
from training.holdout import load_trained
from training.rerank import examples, sample_queries, train_reranker, valid_ndcg

log = logging.getLogger(__name__)

SIZES = [None, 10000, 5000, 2500]  # None: every training query

app = cli.stage_app(__doc__)


def halves(valid: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The graded validation rows split into two halves of the queries, drawn with `seed`."""
    texts = np.asarray(sorted(set(valid["query"])), dtype=object)
    first = set(np.random.default_rng(seed).permutation(texts)[: len(texts) // 2])
    return valid[valid["query"].isin(first)], valid[~valid["query"].isin(first)]


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    model: Annotated[Path, typer.Option(help="a trained search model folder (its first stage is used)")] = Path(
        "models/search/aug"
    ),
    data: Annotated[Path, typer.Option(help="the model's fused variant folder (train.parquet)")] = Path(
        "data/fused/search/aug"
    ),
    splits: Annotated[Path, typer.Option(help="the search splits (valid)")] = Path("data/splits/search"),
    out: Annotated[Path, typer.Option(help="markdown table to write")] = Path("reports/rerank_validation.md"),
) -> None:
    """Train the re-ranker on samples of the training queries and write their validation NDCG@10."""
    config = cli.load(params)
    model, data, splits, out = cli.resolve(model), cli.resolve(data), cli.resolve(splits), cli.resolve(out)
    settings, variant = config.train.search.rerank, data.name
    trained = load_trained(model, config).remember_queries()  # loaded once; each query encoded once
    first = trained.first_stage()
    rows, _ = training_table(data, splits, "search", variant)
    valid = read_table(splits / "valid.parquet", "queries")
    valid = valid.assign(item_id=valid["item_id"].astype(str))
    valid = valid.groupby(["query", "item_id"], as_index=False)["relevance"].mean()
    args = (first.stage_scores, first.lexical(), first.words(), first.item_ids, settings.depth)
    parts = [valid, *halves(valid, config.seed)]
    train_all = examples(rows, *args, "train candidates")
    stop_on = [examples(part, *args, "valid candidates") for part in parts]
    base = [valid_ndcg(first, part) for part in parts]
    texts = sorted(set(rows["query"]))  # examples' qid is the position of the query in this order

    def reranked(train: pd.DataFrame, stop: int, score: int) -> tuple[int, float]:
        """(rounds, NDCG@10 on parts[score]) of a re-ranker early-stopped on parts[stop]."""
        reranker, info = train_reranker(train, stop_on[stop], settings, config.seed)
        ranked = trained.first_stage()
        ranked.reranker, ranked.config["rerank"] = reranker, {"depth": settings.depth}
        return info["rerank_rounds"], valid_ndcg(ranked, parts[score])

    lines = [
        f"| re-ranker training queries ({variant}; {len(texts)} in all) | rounds | valid NDCG@10 (early-stopped on "
        "it) | rounds on half 1 / 2 | cross-validated gain over the first stage |",
        "| --- | --- | --- | --- | --- |",
        f"| none (the hybrid first stage) | | {base[0]:.4f} | | |",
    ]
    for size in SIZES:
        kept = set(sample_queries(rows, size, config.seed)["query"])
        train = train_all[train_all["qid"].isin([i for i, text in enumerate(texts) if text in kept])]
        rounds, score = reranked(train, 0, 0)
        (rounds_1, on_2), (rounds_2, on_1) = reranked(train, 1, 2), reranked(train, 2, 1)
        gain = (on_2 - base[2] + on_1 - base[1]) / 2
        label = "all" if size is None or size >= len(texts) else f"{size} (sampled, seed {config.seed})"
        lines.append(f"| {label} | {rounds} | {score:.4f} | {rounds_1} / {rounds_2} | {gain:+.4f} |")
        log.info(lines[-1])
    lines += [
        "",
        f"Validation halves (seed {config.seed}): {parts[1]['query'].nunique()} and {parts[2]['query'].nunique()} "
        f"queries, first stage {base[1]:.4f} and {base[2]:.4f}.",
        "",
        f"params.yaml: train.search.rerank.enabled = {settings.enabled}, max_queries = {settings.max_queries}",
    ]
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    cli.run(app)
