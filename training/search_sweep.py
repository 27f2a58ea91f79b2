"""Validation-only choices of the search baselines: BM25's k1 / b / variant / analysis and the hybrid weight.

Run: `python -m training.search_sweep --splits data/splits/search --canonical data/canonical/search --out
reports/search_validation.md` (after `dvc repro split`; about 10 CPU minutes). Every setting is scored on the
real validation queries over the whole catalogue, clean and with one perturbation each (pipelines/noise.py);
the test split is never read. Not a DVC stage: it justifies
`baselines.bm25` and `baselines.hybrid` in params.yaml (the search models tune their own hybrid weight on the
same split while training).
"""

import itertools
import logging
from pathlib import Path
from typing import Annotated

import typer

from core import cli
from core.io import atomic_path, read_table
from core.paths import shared_root
from pipelines.noise import noisy_queries
from training.baselines import BM25_DEFAULTS, MiniLMRetriever
from training.harness import evaluate_retriever
from training.hybrid import tune_weight
from training.lexical import BM25Retriever

log = logging.getLogger(__name__)

K1 = [0.3, 0.6, 0.9, 1.2, 1.5]
B = [0.5, 0.75, 1.0]
METHODS = ["lucene", "bm25+"]
ANALYSIS = ["stem", "normalise_units", "single_char_tokens", "correct_typos"]
WEIGHTS = [round(0.1 * i, 1) for i in range(11)]

app = cli.stage_app(__doc__)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    splits: Annotated[Path, typer.Option(help="the search splits (train, valid)")] = Path("data/splits/search"),
    canonical: Annotated[Path, typer.Option(help="the search canonical tables (items)")] = Path(
        "data/canonical/search"
    ),
    out: Annotated[Path, typer.Option(help="markdown table to write")] = Path("reports/search_validation.md"),
) -> None:
    """Score BM25 settings and hybrid weights on the validation split and write the table."""
    config = cli.load(params)
    splits, canonical, out = cli.resolve(splits), cli.resolve(canonical), cli.resolve(out)
    valid = read_table(splits / "valid.parquet", "queries")
    items = read_table(canonical / "items.parquet", "items")
    evaluation = config.evaluation.model_copy(update={"bootstrap_samples": 0})

    noisy = noisy_queries(valid, config.seed)  # validation queries with one typo / dropped word / ... each

    def ndcg(retriever) -> tuple[float, float, float]:
        retriever.fit(valid, items)
        result = evaluate_retriever(retriever, valid, items, evaluation, noisy=noisy)
        recall = result[f"recall@{evaluation.catalogue_recall_k}"]["value"]
        return result["ndcg@10"]["value"], recall, result["ndcg@10_noisy"]["value"]

    rows = [("bm25s defaults (lucene, k1 1.5, b 0.75, no stemming)", *ndcg(BM25Retriever(BM25_DEFAULTS)))]
    full = config.baselines.bm25.model_copy(update=dict.fromkeys(ANALYSIS, True))
    best = None
    for k1, b, method in itertools.product(K1, B, METHODS):
        settings = full.model_copy(update={"k1": k1, "b": b, "method": method})
        rows.append((f"{method}, k1 {k1}, b {b}, full analysis", *ndcg(BM25Retriever(settings))))
        if best is None or rows[-1][1] > best[1]:
            best = (settings, rows[-1][1])
        log.info("%s: %.4f", rows[-1][0], rows[-1][1])
    for switch in ANALYSIS:  # each analysis step off, at the best k1 / b / variant
        rows.append((f"best, without {switch}", *ndcg(BM25Retriever(best[0].model_copy(update={switch: False})))))
    chosen = config.baselines.bm25
    lexical = BM25Retriever(chosen)
    lexical.fit(valid, items)
    e = config.encoder
    dense = MiniLMRetriever(e.model, e.max_length, e.batch_size, shared_root() / config.train.cache_dir)
    dense.fit(valid, items)
    weight, curve = tune_weight(lexical.index, dense, valid, WEIGHTS, config.baselines.hybrid.depth)
    rows += [(f"hybrid: params' BM25 + zero-shot MiniLM, BM25 weight {w}", v, None, None) for w, v in curve.items()]
    header = f"| setting ({valid['query_id'].nunique()} validation queries) | valid NDCG@10 | valid Recall@100 |"
    lines = [header + " valid NDCG@10, noisy queries |", "| --- | --- | --- | --- |"]
    lines += [f"| {label} | {v:.4f} | {_cell(r)} | {_cell(n)} |" for label, v, r, n in rows]
    lines += ["", f"best BM25: {best[0].model_dump()}; best hybrid weight for params' BM25: {weight}"]
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    cli.run(app)
