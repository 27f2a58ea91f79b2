"""Shared basics every folder may import: typed params, paths, canonical schema, safe IO, CLI errors."""

from pipelines.core.config import Params, load_params
from pipelines.core.errors import ShopError, run_cli
from pipelines.core.io import atomic_dir, atomic_path, read_table, write_json, write_table
from pipelines.core.paths import data_dir, repo_root
from pipelines.core.schema import TABLES, validate_table

__all__ = [
    "Params",
    "ShopError",
    "TABLES",
    "atomic_dir",
    "atomic_path",
    "data_dir",
    "load_params",
    "read_table",
    "repo_root",
    "run_cli",
    "validate_table",
    "write_json",
    "write_table",
]
