"""Validation-only choices of the repeat/explore ranker: windows, synthetic users, LightGBM settings.

Run: `python -m training.ranker_sweep --splits data/splits/retail --synthetic data/synthetic/sequence_aug --out
reports/ranker_validation.md` (after `dvc repro`; about 15 CPU minutes). Every setting is trained on the
training windows and scored on the real validation split (full-catalogue NDCG@10 of the early-stopped model,
before the refit sees the validation window), next to TIFU-KNN with the same history. The test split is never
read. Not a DVC stage: it justifies `train.retail.ranker` and `generators.sequence_aug.weight` in params.yaml.
"""

import logging
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from core import cli
from core.io import atomic_path, read_table
from training.baselines import TifuKnnRecommender
from training.data import valid_cutoff
from training.repeat_explore import HISTORY_COLUMNS, train_repeat_explore, valid_ndcg

log = logging.getLogger(__name__)

# (label, variant, the real split plus the synthetic views, settings changed)
SETTINGS = [
    ("newest window only (the twin)", "noaug", False, {}),
    ("4 windows", "aug", False, {"windows": 4}),
    ("8 windows", "aug", False, {"windows": 8}),
    ("10 windows", "aug", False, {"windows": 10}),
    ("8 windows + sequence_aug views as extra users", "aug", True, {"windows": 8}),
    ("8 windows, num_leaves 63", "aug", False, {"windows": 8, "num_leaves": 63}),
    (
        "8 windows, learning rate 0.03, min_data_in_leaf 20",
        "aug",
        False,
        {"windows": 8, "learning_rate": 0.03, "min_data_in_leaf": 20},
    ),
]

app = cli.stage_app(__doc__)


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    splits: Annotated[Path, typer.Option(help="the retail splits (train, valid, split.json)")] = Path(
        "data/splits/retail"
    ),
    synthetic: Annotated[Path, typer.Option(help="the sequence_aug generator's folder (rows.parquet)")] = Path(
        "data/synthetic/sequence_aug"
    ),
    out: Annotated[Path, typer.Option(help="markdown table to write")] = Path("reports/ranker_validation.md"),
) -> None:
    """Train the ranker under each setting and write its validation NDCG@10, with TIFU-KNN's, as a table."""
    config = cli.load(params)
    splits, synthetic, out = cli.resolve(splits), cli.resolve(synthetic), cli.resolve(out)
    train = read_table(splits / "train.parquet", "interactions")
    targets = read_table(splits / "valid.parquet", "interactions")
    before = valid_cutoff(splits)
    history = train[train["ts"] < before][HISTORY_COLUMNS]
    tifu = TifuKnnRecommender(**config.baselines.tifu_knn.model_dump())
    tifu.fit(history, pd.DataFrame())
    rows = [("TIFU-KNN baseline (reference)", valid_ndcg(tifu, history, targets))]
    views = read_table(synthetic / "rows.parquet", "interactions")
    with_views = pd.concat([train.assign(is_synthetic=False), views[views["ts"] < before]], ignore_index=True)
    for label, variant, use_views, changes in SETTINGS:
        settings = config.train.retail.ranker.model_copy(update=changes)
        data = with_views if use_views else train
        _, metrics = train_repeat_explore(data, train, targets, before, settings, variant, config.seed)
        rows.append((label, metrics["valid_ndcg@10"]))
        log.info("%s: valid NDCG@10 %.4f", label, rows[-1][1])
    users = len(set(targets["user_id"]) & set(history["user_id"].dropna()))
    lines = [f"| setting ({users} validation users) | valid NDCG@10 |", "| --- | --- |"]
    lines += [f"| {label} | {value:.4f} |" for label, value in rows]
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    cli.run(app)
