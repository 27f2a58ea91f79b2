"""Validation-only choice of `train.search.rerank.max_queries`: how many training queries the re-ranker learns from.

Run: `python -m training.rerank_sweep --model models/search/aug --data data/fused/search/aug --out
reports/rerank_validation.md` (after `dvc repro train@search-aug`; about 6 CPU minutes). The trained model's
hybrid first stage scores every training query's candidates once; then one re-ranker per sample size learns from
the queries `training.rerank.sample_queries` draws with the params' seed (what training draws), early-stopped
and scored on the real validation split over the whole catalogue. The test split is never read. Not a DVC
stage: it justifies `train.search.rerank.max_queries` in params.yaml.
"""

import logging
from pathlib import Path
from typing import Annotated

import typer

from core import cli
from core.io import atomic_path, read_table
from training.data import training_table
from training.holdout import load_trained
from training.rerank import examples, sample_queries, train_reranker, valid_ndcg

log = logging.getLogger(__name__)

SIZES = [None, 10000, 5000, 2500]  # None: every training query

app = cli.stage_app(__doc__)


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
    first = load_trained(model, config).first_stage()
    rows, _ = training_table(data, splits, "search", variant)
    valid = read_table(splits / "valid.parquet", "queries")
    valid = valid.assign(item_id=valid["item_id"].astype(str))
    valid = valid.groupby(["query", "item_id"], as_index=False)["relevance"].mean()
    args = (first.stage_scores, first.lexical(), first.words(), first.item_ids, settings.depth)
    train_all, valid_all = examples(rows, *args, "train candidates"), examples(valid, *args, "valid candidates")
    texts = sorted(set(rows["query"]))  # examples' qid is the position of the query in this order
    lines = [
        f"| re-ranker training queries ({variant}; {len(texts)} in all) | rounds | valid NDCG@10 |",
        "| --- | --- | --- |",
        f"| none (the hybrid first stage) | | {valid_ndcg(first, valid):.4f} |",
    ]
    for size in SIZES:
        kept = set(sample_queries(rows, size, config.seed)["query"])
        qids = [i for i, text in enumerate(texts) if text in kept]
        reranker, info = train_reranker(train_all[train_all["qid"].isin(qids)], valid_all, settings, config.seed)
        ranked = load_trained(model, config).first_stage()
        ranked.reranker, ranked.config["rerank"] = reranker, {"depth": settings.depth}
        label = "all" if size is None or size >= len(texts) else f"{size} (sampled, seed {config.seed})"
        lines.append(f"| {label} | {info['rerank_rounds']} | {valid_ndcg(ranked, valid):.4f} |")
        log.info(lines[-1])
    lines += ["", f"params.yaml: train.search.rerank.max_queries = {settings.max_queries}"]
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    cli.run(app)
