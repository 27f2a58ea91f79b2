"""Stage `features`: compute user/item snapshot tables, register the Feast definitions, materialise online."""

import logging
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from core import cli
from core.io import atomic_dir, read_table, write_json
from core.tasks import tasks_on, write_task_off
from features import compute, definitions
from features.store import config_path, local_registry_dir, materialize, open_store

log = logging.getLogger(__name__)
app = cli.stage_app(__doc__)
ENRICHED_ITEMS = "rows.parquet"  # item_enrichment's rows: the enriched items table (item_id, category, ...)


def compute_tables(
    train: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    enrichment: pd.DataFrame | None,
    cutoff,
    snapshot_days: int = 1,
    cold_start_days: int = 30,
    max_basket_items: int = 200,
    seed: int = 42,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (user snapshots, item snapshots) computed from the training interactions only."""
    cutoff = compute.cutoff_timestamp(cutoff)
    attrs = compute.item_attributes(items, enrichment, seed=seed)
    user_table = compute.user_features(train, attrs, users, cutoff, snapshot_days)
    item_table = compute.item_features(
        train,
        attrs,
        cutoff,
        snapshot_days,
        cold_start_days=cold_start_days,
        max_basket_items=max_basket_items,
    )
    return user_table, item_table


def apply_definitions(store) -> None:
    """Register entities, sources, views and services of features/definitions.py (what `feast apply` does)."""
    store.apply(definitions.ALL_OBJECTS)


def load_to_store(out_dir: Path, config: str | Path | None) -> dict:
    """feast apply + materialise the tables in `out_dir` into the online store; return timings in seconds."""
    store = open_store(config)
    started = time.perf_counter()
    apply_definitions(store)
    applied = time.perf_counter()
    stamps = pd.concat(
        [
            pd.read_parquet(out_dir / f"{name}_features.parquet", columns=["event_timestamp"])
            for name in ("user", "item")
        ]
    )["event_timestamp"]
    materialize(store, stamps.min().to_pydatetime(), (stamps.max() + pd.Timedelta(seconds=1)).to_pydatetime())
    done = time.perf_counter()
    return {"apply_s": round(applied - started, 3), "materialize_s": round(done - applied, 3)}


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    splits: Annotated[Path, typer.Option(help="retail splits folder (its train.parquet)")] = Path("data/splits/retail"),
    canonical: Annotated[Path, typer.Option(help="canonical retail tables (items, users: optional)")] = Path(
        "data/canonical/retail"
    ),
    enrichment: Annotated[
        Path,
        typer.Option(help="item_enrichment's folder (rows.parquet: enriched items); absent = categories from items"),
    ] = Path("data/synthetic/item_enrichment"),
    out: Annotated[Path, typer.Option(help="folder for the snapshot tables (the Feast file sources)")] = Path(
        "data/features"
    ),
    config: Annotated[
        str | None, typer.Option(help="Feast yaml; default $SHOP_FEAST_CONFIG or features.store_config")
    ] = None,
    online: Annotated[bool, typer.Option(help="run feast apply and materialise after computing")] = True,
) -> None:
    """Compute user/item feature snapshots from the training split, then feast apply and materialise."""
    conf = cli.load(params)
    settings = conf.features
    splits, canonical, enrichment, out_dir = (cli.resolve(p) for p in (splits, canonical, enrichment, out))
    if "retail" not in tasks_on(conf.data):  # no users to describe: markers where the snapshots and store would be
        for folder in (out_dir, local_registry_dir(config_path(config or settings.store_config))):
            if folder is not None:
                write_task_off(folder, "retail")
        return
    started = time.perf_counter()
    train_df = read_table(splits / "train.parquet", "interactions")
    items_df = read_table(canonical / "items.parquet", "items")
    users_path = canonical / "users.parquet"
    users_df = read_table(users_path, "users") if users_path.exists() else None
    enrichment_path = enrichment / ENRICHED_ITEMS
    enrichment_df = pd.read_parquet(enrichment_path) if enrichment_path.exists() else None
    log.info(
        "computing features from %d training rows (enrichment: %s)",
        len(train_df),
        enrichment_path if enrichment_df is not None else "absent, categories from items",
    )
    user_table, item_table = compute_tables(
        train_df,
        items_df,
        users_df,
        enrichment_df,
        conf.split.retail.cutoff,
        settings.snapshot_days,
        settings.cold_start_days,
        settings.max_basket_items,
        conf.seed,
    )
    computed = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        user_table.to_parquet(tmp / "user_features.parquet", index=False)
        item_table.to_parquet(tmp / "item_features.parquet", index=False)
    log.info(
        "wrote %d user and %d item snapshot rows to %s in %.1fs",
        len(user_table),
        len(item_table),
        out_dir,
        computed - started,
    )
    timings = {"compute_s": round(computed - started, 3)}
    if online:
        yaml_path = config_path(config or settings.store_config)
        timings.update(load_to_store(out_dir, yaml_path))
        log.info(
            "feast apply %.1fs, materialise %.1fs (%s)",
            timings["apply_s"],
            timings["materialize_s"],
            yaml_path.name,
        )
    write_json(
        {
            "cutoff": str(conf.split.retail.cutoff),
            "snapshot_days": settings.snapshot_days,
            "rows": {"user_features": len(user_table), "item_features": len(item_table)},
            "entities": {
                "users": int(user_table["user_id"].nunique()),
                "items": int(item_table["item_id"].nunique()),
            },
            "enrichment_used": enrichment_df is not None,
            "timings": timings,
        },
        out_dir / "manifest.json",
    )


if __name__ == "__main__":
    cli.run(app)
