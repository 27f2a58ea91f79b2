"""Where things live: the repository, the raw-data directory and the pipeline's data folders."""

import os
from pathlib import Path

from core.errors import ShopError

DATA_DIR_ENV = "SHOP_DATA_DIR"


def repo_root() -> Path:
    """The project root (the folder holding params.yaml)."""
    return Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """The folder that state shared across runs is relative to (MLflow's SQLite store and artifacts, the
    embedding and generation caches): `$DVC_ROOT`, which DVC sets to the user's repository even when a queued
    experiment runs in a temporary copy (`dvc exp run --queue` / `--temp`); else the repository root."""
    return Path(os.environ.get("DVC_ROOT") or repo_root())


def data_dir() -> Path:
    """The directory holding raw upstream files: $SHOP_DATA_DIR, else `data/external` (downloads land there)."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured).expanduser().resolve() if configured else repo_root() / "data" / "external"


def data_file(relative: str | Path) -> Path:
    """A file in the data directory; ShopError naming it and $SHOP_DATA_DIR when it is not there."""
    path = data_dir() / relative
    if not path.is_file():
        setting = os.environ.get(DATA_DIR_ENV)
        where = f"{DATA_DIR_ENV}={setting}" if setting else f"{DATA_DIR_ENV} is not set; default {data_dir()}"
        raise ShopError(f"{path}: file not found ({where}); export {DATA_DIR_ENV} as the folder holding the raw files")
    return path
