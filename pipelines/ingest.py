"""Stage `ingest`: raw retail and search files -> checked canonical tables (data/canonical/{retail,search}/).

With `data.serving_events` set, the purchases the service logged from `/events` join the retail interactions
(pipelines/serving_events.py, provenance `source=serving`). All tables are built and validated in memory
first; each output folder is then replaced whole, so a bad input leaves the previous outputs untouched. The rows
each cleaning rule removed go to reports/ingest.json.
"""

import json
import logging
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from core import cli
from core.errors import ShopError
from core.io import atomic_dir, write_json
from core.schema import TABLES, validate_table
from core.tasks import TASKS, tasks_on, write_task_off
from pipelines.adapters import TASK_TABLES, load_source
from pipelines.fetch import SOURCE_MANIFEST
from pipelines.serving_events import add_serving_events

log = logging.getLogger(__name__)
app = cli.stage_app(__doc__)


def raw_input(folder: Path, task: str) -> Path:
    """The one file or folder that `fetch` put in data/raw/<task>/."""
    if not folder.is_dir():
        raise ShopError(f"{folder}: raw {task} data not found; run `python -m pipelines.fetch` first")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if len(entries) != 1:
        raise ShopError(f"{folder}: expected exactly one raw file or folder, found {[p.name for p in entries]}")
    return entries[0]


def raw_adapter(folder: Path, configured: str) -> str:
    """The adapter `fetch` recorded for data/raw/<task>/ (its fallback's, when it used one), else `configured`."""
    manifest = folder / SOURCE_MANIFEST
    return json.loads(manifest.read_text())["adapter"] if manifest.is_file() else configured


def slice_retail(tables: dict[str, pd.DataFrame], max_users: int | None, seed: int) -> dict[str, pd.DataFrame]:
    """Keep `max_users` customers drawn with `seed` (all their rows) and the same share of guest baskets."""
    inter = tables["interactions"]
    users = np.sort(inter["user_id"].dropna().unique().astype(str))
    if max_users is None or max_users >= len(users):
        return tables
    rng = np.random.default_rng(seed)
    kept_users = set(rng.choice(users, size=max_users, replace=False))
    guest_baskets = np.sort(inter.loc[inter["user_id"].isna(), "basket_id"].unique().astype(str))
    n_guest = round(len(guest_baskets) * max_users / len(users))
    kept_guests = set(rng.choice(guest_baskets, size=n_guest, replace=False)) if n_guest else set()
    mask = inter["user_id"].isin(kept_users) | (inter["user_id"].isna() & inter["basket_id"].isin(kept_guests))
    inter = inter[mask]
    return {
        "interactions": inter,
        "items": tables["items"][tables["items"]["item_id"].isin(inter["item_id"])],
        "users": tables["users"][tables["users"]["user_id"].isin(kept_users)],
    }


def slice_search(tables: dict[str, pd.DataFrame], max_queries: int | None, seed: int) -> dict[str, pd.DataFrame]:
    """Keep `max_queries` distinct queries drawn with `seed`, their judged pairs and the items they judge."""
    queries = tables["queries"]
    ids = np.sort(queries["query_id"].unique().astype(str))
    if max_queries is None or max_queries >= len(ids):
        return tables
    kept = set(np.random.default_rng(seed).choice(ids, size=max_queries, replace=False))
    queries = queries[queries["query_id"].isin(kept)]
    return {"queries": queries, "items": tables["items"][tables["items"]["item_id"].isin(queries["item_id"])]}


def retail_counts(tables: dict[str, pd.DataFrame]) -> dict[str, int]:
    return {
        "users_with_purchases": int(tables["interactions"]["user_id"].nunique()),
        "baskets": int(tables["interactions"]["basket_id"].nunique()),
    }


def search_counts(tables: dict[str, pd.DataFrame]) -> dict[str, int]:
    return {"distinct_queries": int(tables["queries"]["query_id"].nunique())}


SLICE = {"retail": slice_retail, "search": slice_search}  # keep `max_rows` users / queries
COUNTS = {"retail": retail_counts, "search": search_counts}  # task-specific row counts for the report


def check_references(tables: dict[str, pd.DataFrame], task: str, name: str) -> None:
    """Every item an interaction or judged pair names must be in the catalogue."""
    facts = tables[TASKS[task].table]
    unknown = ~facts["item_id"].isin(tables["items"]["item_id"])
    if unknown.any():
        raise ShopError(
            f"{name}: item_id {facts['item_id'][unknown].iloc[0]!r} is not in the items table "
            f"({int(unknown.sum())} rows)"
        )
    if not tables["items"]["item_id"].is_unique:
        dup = tables["items"]["item_id"][tables["items"]["item_id"].duplicated()].iloc[0]
        raise ShopError(f"{name}: item_id {dup!r} appears more than once in the items table")


def build_task(task: str, adapter: str, path: Path, max_rows: int | None, seed: int) -> tuple[dict, dict]:
    """Run the adapter, slice, validate; return (validated tables, report)."""
    report: dict = {}
    tables = load_source(adapter, path, report=report)
    missing = [t for t in TASK_TABLES[task] if t not in tables]
    if missing:
        raise ShopError(
            f"{path}: data.{task}.adapter '{adapter}' gives no {missing} table(s); "
            f"{task} needs {list(TASK_TABLES[task])}"
        )
    tables = {t: tables[t] for t in TASK_TABLES[task]}
    tables = SLICE[task](tables, max_rows, seed)
    checked = {t: validate_table(df.reset_index(drop=True), t, f"{path.name} ({t})") for t, df in tables.items()}
    check_references(checked, task, path.name)
    counts = {f"{t}_rows": len(df) for t, df in checked.items()} | COUNTS[task](checked)
    return checked, {
        "adapter": adapter,
        "file": path.name,
        "cleaning": report,
        "output": counts,
        "sliced_to": max_rows,
    }


def write_tables(tables: dict[str, pd.DataFrame], folder: Path) -> None:
    """Replace `folder` whole with one Parquet file per table."""
    with atomic_dir(folder) as tmp:
        for name, df in tables.items():
            columns = [c for c in TABLES[name] if c in df] + [c for c in df if c not in TABLES[name]]
            df[columns].to_parquet(tmp / f"{name}.parquet", index=False)


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    raw: Annotated[Path, typer.Option(help="folder holding retail/ and search/ from `fetch`")] = Path("data/raw"),
    out: Annotated[Path, typer.Option(help="folder receiving canonical retail/ and search/")] = Path("data/canonical"),
    report: Annotated[Path, typer.Option(help="cleaning and row-count report (DVC metrics)")] = Path(
        "reports/ingest.json"
    ),
) -> None:
    """Build the canonical retail and search tables from the fetched raw files."""
    config = cli.load(params)
    raw, out, report = cli.resolve(raw), cli.resolve(out), cli.resolve(report)
    built, reports = {}, {}
    max_rows = {"retail": config.data.max_users, "search": config.data.max_queries}
    for task in tasks_on(config.data):
        path = raw_input(raw / task, task)
        adapter = raw_adapter(raw / task, getattr(config.data, task).adapter)
        log.info("ingest %s: adapter %s on %s", task, adapter, path)
        built[task], reports[task] = build_task(task, adapter, path, max_rows[task], config.seed)
    if config.data.serving_events and "retail" in built:  # the closed loop: purchases logged by /events
        built["retail"], reports["retail"]["serving_events"] = add_serving_events(
            built["retail"], cli.resolve(Path(config.data.serving_events))
        )
    for task, tables in built.items():
        write_tables(tables, out / task)
        log.info("wrote %s: %s", out / task, reports[task]["output"])
    for task in [name for name in TASKS if name not in built]:
        write_task_off(out / task, task)
    write_json(reports, report)


if __name__ == "__main__":
    cli.run(app)
