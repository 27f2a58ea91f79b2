"""What a generator gets (`Context`), gives back (`GeneratorOutput`) and leaves on disk: its folder
`data/synthetic/<name>/` with `rows.parquet`, extra tables and a `manifest.json` that makes it traceable.

The manifest holds lineage (generator, backend, model id/hash, settings, seed, input hashes, counts) and no
wall-clock times, so unchanged inputs give an identical folder (durations go to the log).
"""

import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import pandas as pd
from pydantic import BaseModel, ValidationError

from core.errors import ShopError
from core.io import atomic_dir, write_json, write_table
from core.params import Params
from core.paths import repo_root

ROWS_FILE = "rows.parquet"
MANIFEST_FILE = "manifest.json"
SettingsModel = TypeVar("SettingsModel", bound=BaseModel)


@dataclass(frozen=True)
class Context:
    """The inputs of one generator run: params, its validated settings and the task's data folders."""

    name: str
    params: Params
    settings: BaseModel
    splits: Path  # data/splits/<task>: train.parquet is the only split a generator reads
    canonical: Path  # data/canonical/<task>: items (and users) tables

    @property
    def train(self) -> Path:
        return self.splits / "train.parquet"

    def table(self, name: str) -> Path:
        return self.canonical / f"{name}.parquet"


@dataclass
class GeneratorOutput:
    """A generator's rows (canonical table `table`), extra tables and the facts its manifest records."""

    rows: pd.DataFrame
    inputs: list[Path] = field(default_factory=list)  # files read: their sha256 goes into the manifest
    backend: str | None = None
    model_id: str | None = None
    model_hash: str | None = None
    settings: dict = field(default_factory=dict)  # settings beyond the generator's own (backend, other rows)
    extra: dict = field(default_factory=dict)  # deterministic counts and facts
    tables: dict[str, tuple[str, pd.DataFrame]] = field(default_factory=dict)  # file stem -> (table, frame)


def load_settings(params: Params, name: str, model: type[SettingsModel]) -> SettingsModel:
    """`params.generators[name].settings` validated by the generator's `Settings`; ShopError names the key."""
    if name not in params.generators:
        raise ShopError(f"generators.{name}: no such generator in params.yaml ({', '.join(params.generators)})")
    try:
        return model.model_validate(params.generators[name].settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ShopError(
            f"params.yaml: generators.{name}.settings.{key}: {first['msg']} ({len(exc.errors())} problem(s))"
        ) from None


def generator_module(name: str) -> ModuleType:
    """The module `pipelines.augment.<name>` of a registry row (it defines `Settings` and `generate`)."""
    try:
        return importlib.import_module(f"pipelines.augment.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"pipelines.augment.{name}":
            raise
        raise ShopError(f"generators.{name}: no generator module pipelines/augment/{name}.py") from None


def check_generators(params: Params) -> dict[str, BaseModel]:
    """Every registry row's settings validated by its module's `Settings`; ShopError names the first bad key."""
    return {name: load_settings(params, name, generator_module(name).Settings) for name in params.generators}


def file_sha256(path: Path | str) -> str:
    """Return the sha256 hex digest of a file (or of a folder's files, in sorted order)."""
    path, digest = Path(path), hashlib.sha256()
    for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def shown(path: Path | str) -> str:
    """`path` relative to the repository when inside it, else as given (manifests must not name the checkout)."""
    path = Path(path)
    return str(path.relative_to(repo_root()) if path.is_absolute() and path.is_relative_to(repo_root()) else path)


def write_generator(
    output: GeneratorOutput,
    out: Path | str,
    *,
    generator: str,
    table: str,
    settings: dict,
    seed: int,
) -> dict:
    """Replace folder `out` with `rows.parquet` (validated canonical `table`, tagged `is_synthetic`/`source`),
    the extra tables and `manifest.json`; return the manifest."""
    tables = {ROWS_FILE.removesuffix(".parquet"): (table, output.rows), **output.tables}
    counts = {}
    with atomic_dir(out) as tmp:
        for stem, (kind, frame) in tables.items():
            written = write_table(frame.assign(is_synthetic=True, source=generator), tmp / f"{stem}.parquet", kind)
            counts[stem] = len(written)
        manifest = {
            "generator": generator,
            "table": table,
            "backend": output.backend,
            "model_id": output.model_id,
            "model_hash": output.model_hash,
            "settings": {**settings, **output.settings},
            "seed": seed,
            "inputs": {shown(p): file_sha256(p) for p in output.inputs},
            "rows": counts.pop("rows"),
            **({"tables": counts} if counts else {}),
            **output.extra,
        }
        write_json(manifest, tmp / MANIFEST_FILE)
    return manifest
