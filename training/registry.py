"""Where MLflow lives: tracking/registry URIs from params (MLFLOW_* environment variables win), alias names,
and the registry version behind a `models:/` URI."""

import os
import re
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from core.errors import ShopError
from core.params import MlflowParams, load_params
from core.paths import shared_root

CHALLENGER = "challenger"
CHAMPION = "champion"
DVC_EXPERIMENT_ENV = "DVC_EXP_NAME"  # set by `dvc exp run`

# What configure() left in os.environ (MLflow exports the URIs it is given) and whether the user had set it.
_APPLIED: dict[str, tuple[str | None, bool]] = {}


def resolve_uri(uri: str | None, root: Path | None = None) -> str | None:
    """Return `uri` with a relative SQLite file or local path made absolute against `root` (core.paths.shared_root)."""
    if not uri:
        return uri
    root = root or shared_root()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///") :]
        return f"sqlite:///{(root / rel).resolve()}" if rel and rel != ":memory:" else uri
    if "://" not in uri and not uri.startswith("file:"):
        return (root / uri).resolve().as_uri()
    return uri


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
    `mlflow.set_tracking_uri` exports $MLFLOW_TRACKING_URI, so the variable is set in both cases.
    """
    if not os.environ.get("MLFLOW_TRACKING_URI"):
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
