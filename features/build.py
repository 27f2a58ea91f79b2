"""Stage `features`: compute user/item snapshot tables, register the Feast definitions, materialise online."""

import logging
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from core import cli
from core.io import atomic_dir, read_table, write_json
from core.params import load_params
from core.paths import repo_root
from features import compute
from features.store import apply_definitions, config_path, materialize, open_store

log = logging.getLogger(__name__)
app = typer.Typer(add_completion=False, help=__doc__)


def _path(value: str | Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else repo_root() / path


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
    params_file: Annotated[Path | None, typer.Option("--params", help="params.yaml to read `features.*` from")] = None,
    train: Annotated[Path, typer.Option(help="training interactions")] = Path("data/splits/retail/train.parquet"),
    items: Annotated[Path, typer.Option(help="canonical items")] = Path("data/canonical/retail/items.parquet"),
    users: Annotated[Path, typer.Option(help="canonical users (country); optional")] = Path(
        "data/canonical/retail/users.parquet"
    ),
    out: Annotated[Path, typer.Option(help="folder for the snapshot tables (the Feast file sources)")] = Path(
        "data/features"
    ),
    config: Annotated[
        str | None, typer.Option(help="Feast yaml; default $SHOP_FEAST_CONFIG or features.store_config")
    ] = None,
    online: Annotated[bool, typer.Option(help="run feast apply and materialise after computing")] = True,
) -> None:
    """Compute user/item feature snapshots from the training split, then feast apply and materialise."""
    params = load_params(params_file)
    settings = params.features
    started = time.perf_counter()
    train_df = read_table(_path(train), "interactions")
    items_df = read_table(_path(items), "items")
    users_df = read_table(_path(users), "users") if _path(users).exists() else None
    enrichment_path = _path(settings.enrichment)
    enrichment = pd.read_parquet(enrichment_path) if enrichment_path.exists() else None
    log.info(
        "computing features from %d training rows (enrichment: %s)",
        len(train_df),
        enrichment_path if enrichment is not None else "absent, categories from items",
    )
    user_table, item_table = compute_tables(
        train_df,
        items_df,
        users_df,
        enrichment,
        params.split.retail.cutoff,
        settings.snapshot_days,
        settings.cold_start_days,
        settings.max_basket_items,
        params.seed,
    )
    computed = time.perf_counter()
    out_dir = _path(out)
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
            "cutoff": str(params.split.retail.cutoff),
            "snapshot_days": settings.snapshot_days,
            "rows": {"user_features": len(user_table), "item_features": len(item_table)},
            "entities": {
                "users": int(user_table["user_id"].nunique()),
                "items": int(item_table["item_id"].nunique()),
            },
            "enrichment_used": enrichment is not None,
            "timings": timings,
        },
        out_dir / "manifest.json",
    )


if __name__ == "__main__":
    cli.run(app)
