"""Stage `split`: canonical tables -> train / valid / test of real data only (data/splits/{retail,search}/).

Retail: one global temporal cutoff. train = every interaction before it (guest rows too); test = each user's
first basket on or after it, for users who bought before it; valid = the same built inside train with
valid_cutoff = cutoff - valid_days. Search: distinct query ids (one per query text) are ranked by a seeded
hash and cut into test / valid / train, so a query's text never appears in two splits; `test_noisy` = the test
queries with one typo, dropped or swapped word or unit variant each and the same judgments (pipelines/noise.py).
"""

import hashlib
import logging
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from core import cli
from core.errors import ShopError
from core.io import atomic_dir, read_table, write_json
from core.tasks import TASKS, tasks_on, write_task_off
from pipelines.noise import noisy_queries

log = logging.getLogger(__name__)
app = cli.stage_app(__doc__)


def first_baskets(interactions: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp | None = None) -> pd.DataFrame:
    """Rows of each known user's first basket with start <= ts (< end), if they bought before `start`."""
    known = interactions[interactions["user_id"].notna()]
    returning = known.loc[known["ts"] < start, "user_id"].unique()
    window = known[(known["ts"] >= start) & ((known["ts"] < end) if end is not None else True)]
    window = window[window["user_id"].isin(returning)]
    first = window.sort_values(["user_id", "ts", "basket_id"]).drop_duplicates("user_id")[["user_id", "basket_id"]]
    targets = window.merge(first, on=["user_id", "basket_id"])
    return targets.sort_values(["ts", "user_id", "item_id"]).reset_index(drop=True)


def split_retail(interactions: pd.DataFrame, cutoff: pd.Timestamp, valid_days: int) -> tuple[dict, dict]:
    """Return ({train, valid, test}, summary) for the global temporal protocol."""
    valid_cutoff = cutoff - pd.Timedelta(days=valid_days)
    train = interactions[interactions["ts"] < cutoff].reset_index(drop=True)
    if train.empty or not (interactions["ts"] >= cutoff).any():
        span = f"{interactions['ts'].min()} .. {interactions['ts'].max()}"
        raise ShopError(f"split.retail.cutoff {cutoff.date()} leaves no rows on one side (data spans {span})")
    parts = {
        "train": train,
        "valid": first_baskets(train, valid_cutoff, cutoff),
        "test": first_baskets(interactions, cutoff),
    }
    summary = {
        "cutoff": cutoff.isoformat(),
        "valid_cutoff": valid_cutoff.isoformat(),
        "counts": {
            name: {
                "rows": len(df),
                "users": int(df["user_id"].nunique()),
                "items": int(df["item_id"].nunique()),
            }
            for name, df in parts.items()
        },
    }
    return parts, summary


def rank_key(query_id: str, seed: int) -> str:
    """A seeded pseudo-random key per query id: its rank does not depend on which other queries exist."""
    return hashlib.sha256(f"{seed}:{query_id}".encode()).hexdigest()


def split_search(queries: pd.DataFrame, valid_frac: float, test_frac: float, seed: int) -> tuple[dict, dict]:
    """Return ({train, valid, test}, summary): whole query ids go to one split, sizes round(frac * n)."""
    ids = sorted(queries["query_id"].unique(), key=lambda q: rank_key(q, seed))
    n_test, n_valid = round(len(ids) * test_frac), round(len(ids) * valid_frac)
    if len(ids) - n_test - n_valid < 1 or n_test < 1:
        raise ShopError(
            f"queries: {len(ids)} distinct queries are too few to split with "
            f"split.search.test_frac={test_frac} and valid_frac={valid_frac}"
        )
    assign = {q: "test" for q in ids[:n_test]} | {q: "valid" for q in ids[n_test : n_test + n_valid]}
    which = queries["query_id"].map(assign).fillna("train")
    parts = {
        name: queries[which == name].sort_values(["query_id", "item_id"]).reset_index(drop=True)
        for name in ("train", "valid", "test")
    }
    summary = {
        "seed": seed,
        "valid_frac": valid_frac,
        "test_frac": test_frac,
        "counts": {name: {"rows": len(df), "queries": int(df["query_id"].nunique())} for name, df in parts.items()},
    }
    return parts, summary


def write_split(parts: dict[str, pd.DataFrame], summary: dict, folder: Path) -> None:
    """Replace `folder` whole with train/valid/test Parquet files and split.json."""
    with atomic_dir(folder) as tmp:
        for name, df in parts.items():
            df.to_parquet(tmp / f"{name}.parquet", index=False)
        write_json(summary, tmp / "split.json")


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    canonical: Annotated[Path, typer.Option(help="folder holding canonical retail/ and search/")] = Path(
        "data/canonical"
    ),
    out: Annotated[Path, typer.Option(help="folder receiving retail/ and search/ splits")] = Path("data/splits"),
    report: Annotated[Path, typer.Option(help="split summary for both tasks (DVC metrics)")] = Path(
        "reports/split.json"
    ),
) -> None:
    """Split the canonical retail interactions (temporal) and search queries (by query text)."""
    config = cli.load(params)
    canonical, out, report = cli.resolve(canonical), cli.resolve(out), cli.resolve(report)
    on = tasks_on(config.data)
    parts, summaries = {}, {}
    if "retail" in on:
        interactions = read_table(canonical / "retail" / "interactions.parquet", "interactions")
        cutoff = pd.Timestamp(config.split.retail.cutoff, tz="UTC")
        parts["retail"], summaries["retail"] = split_retail(interactions, cutoff, config.split.retail.valid_days)
    if "search" in on:
        queries = read_table(canonical / "search" / "queries.parquet", "queries")
        search = config.split.search
        parts["search"], summaries["search"] = split_search(queries, search.valid_frac, search.test_frac, config.seed)
        parts["search"]["test_noisy"] = noisy_queries(parts["search"]["test"], config.seed)
        summaries["search"]["test_noisy_operations"] = (
            parts["search"]["test_noisy"].drop_duplicates("query_id")["noise"].value_counts().to_dict()
        )
    for task in TASKS:
        if task in parts:
            write_split(parts[task], summaries[task], out / task)
            log.info("%s split: %s", task, summaries[task]["counts"])
        else:
            write_task_off(out / task, task)
    write_json(summaries, report)


if __name__ == "__main__":
    cli.run(app)
