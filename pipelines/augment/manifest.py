"""Write a generator's synthetic table together with the manifest that makes it traceable."""

import datetime as dt
import hashlib
import time
from pathlib import Path

import pandas as pd

from core.io import write_json, write_table


def file_sha256(path: Path | str) -> str:
    """Return the sha256 hex digest of a file (or of a folder's files, in sorted order)."""
    path, digest = Path(path), hashlib.sha256()
    for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def write_synthetic(
    df: pd.DataFrame,
    out: Path | str,
    table: str,
    *,
    generator: str,
    params: dict,
    seed: int,
    inputs: list[Path | str],
    started: float,
    backend: str | None = None,
    model_id: str | None = None,
    model_hash: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Validate and write `df` as canonical `table` at `out`, plus `<out stem>.manifest.json`; return the manifest path.

    `started` is the `time.perf_counter()` value when generation began (for wall time and rows/s).
    """
    out = Path(out)
    rows = df.assign(is_synthetic=True, source=generator)
    write_table(rows, out, table)
    wall = time.perf_counter() - started
    manifest = {
        "generator": generator,
        "table": table,
        "backend": backend,
        "model_id": model_id,
        "model_hash": model_hash,
        "params": params,
        "seed": seed,
        "inputs": {str(p): file_sha256(p) for p in inputs},
        "rows": len(rows),
        "wall_seconds": round(wall, 3),
        "rows_per_second": round(len(rows) / max(wall, 1e-9), 1),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    manifest_path = out.with_name(out.stem + ".manifest.json")
    write_json(manifest, manifest_path)
    return manifest_path
