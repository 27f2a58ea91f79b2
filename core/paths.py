"""Where things live: the repository, the raw-data directory and the pipeline's data folders."""

import os
from pathlib import Path

DATA_DIR_ENV = "SHOP_DATA_DIR"


def repo_root() -> Path:
    """The project root (the folder holding params.yaml)."""
    return Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The directory holding raw upstream files: $SHOP_DATA_DIR, else `data/external` (downloads land there)."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured).expanduser().resolve() if configured else repo_root() / "data" / "external"
