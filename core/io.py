"""Safe reading and writing: validated Parquet tables, JSON, and all-or-nothing outputs (temp path, then rename)."""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow

from core.errors import ShopError
from core.schema import validate_table

# mkstemp/mkdtemp create private (0600/0700) paths; outputs get the modes a plain open()/mkdir() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` as a whole only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_UMASK)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def read_table(path: Path | str, table: str) -> pd.DataFrame:
    """Read a canonical Parquet table and validate it; raise ShopError naming the file if absent or unreadable."""
    path = Path(path)
    if not path.exists():
        raise ShopError(f"{path}: file not found")
    try:
        df = pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        raise ShopError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    return validate_table(df, table, path.name)


def write_table(df: pd.DataFrame, path: Path | str, table: str) -> pd.DataFrame:
    """Validate `df` as `table` and write it to `path` atomically; return the validated frame."""
    checked = validate_table(df, table, Path(path).name)
    with atomic_path(path) as tmp:
        checked.to_parquet(tmp, index=False)
    return checked


def write_json(obj: object, path: Path | str) -> None:
    """Write `obj` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
