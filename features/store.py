"""Opening the Feast store by configuration, materialising, point-in-time joins.

Feast is imported when a store is opened, not with this module: training stages that never open one (search
models) start without it.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from core.errors import ShopError
from core.params import load_params
from core.paths import repo_root

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

# Which feature_store.yaml to use: this variable, else params.yaml `features.store_config`, else the default.
CONFIG_ENV = "SHOP_FEAST_CONFIG"
DEFAULT_CONFIG = "features/feature_store.yaml"
# Defaults for the variables the production profile (feature_store.production.yaml) reads.
PRODUCTION_ENV_DEFAULTS = {
    "SHOP_FEAST_PROJECT": "shopaug",
    "SHOP_FEAST_REGISTRY_URL": "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
    "SHOP_FEAST_REDIS": "127.0.0.1:6379",
}


def config_path(configured: str | Path | None = None) -> Path:
    """Return the Feast yaml in use: $SHOP_FEAST_CONFIG, else `configured`, else the embedded default."""
    chosen = os.environ.get(CONFIG_ENV) or configured or _configured_in_params()
    path = Path(chosen).expanduser()
    path = path if path.is_absolute() else repo_root() / path
    if not path.is_file():
        raise ShopError(f"{path}: Feast configuration not found (set {CONFIG_ENV} or features.store_config)")
    return path


def local_registry_dir(yaml_path: Path) -> Path | None:
    """The folder of the Feast yaml's local file registry (data/feast in the embedded default); None when the
    registry is a database or an object store."""
    registry = (yaml.safe_load(yaml_path.read_text()) or {}).get("registry")
    path = registry.get("path") if isinstance(registry, dict) else registry
    if not isinstance(path, str) or "://" in path:
        return None
    return (yaml_path.parent / path).resolve().parent


def _configured_in_params() -> str:
    """params.yaml `features.store_config`, or the embedded default where params.yaml is absent (a Bento)."""
    try:
        return load_params().features.store_config
    except ShopError:
        return DEFAULT_CONFIG


def open_store(config: str | Path | None = None) -> FeatureStore:
    """Return a FeatureStore for the yaml `config` (see config_path); the repo path is the yaml's folder."""
    from feast import FeatureStore  # ~6 s to import: only where a store is opened

    path = config_path(config)
    for name, value in PRODUCTION_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        return FeatureStore(repo_path=str(path.parent), fs_yaml_file=path)
    except Exception as exc:  # Feast raises many config error types; the user needs the file and the reason
        raise ShopError(f"{path}: invalid Feast configuration ({str(exc).splitlines()[0]})") from None


@functools.lru_cache(maxsize=4)
def cached_store(config: str | None = None) -> FeatureStore:
    """open_store, once per configuration per process (the public helper functions share it)."""
    return open_store(config)


def materialize(store: FeatureStore, start: dt.datetime, end: dt.datetime) -> None:
    """Load the latest snapshot per entity with event_timestamp in [start, end] into the online store."""
    store.materialize(start_date=start, end_date=end, feature_views=["user_stats", "item_stats"])


def _historical(
    entity_df: pd.DataFrame, key: str, view: str, features: list[str] | None, store: FeatureStore | None
) -> pd.DataFrame:
    missing = [c for c in (key, "event_timestamp") if c not in entity_df.columns]
    if missing:
        raise ShopError(f"entity_df: missing column(s) {missing} for {view} point-in-time features")
    store = store or cached_store()
    names = _check_features(store, view, features)
    frame = entity_df.copy()
    frame[key] = frame[key].astype(str)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    if frame.empty:
        return frame.assign(**{n: pd.Series(dtype="object") for n in names})
    # Feast collapses duplicate (id, timestamp) rows: join the distinct pairs, then map back onto every row.
    pairs = frame[[key, "event_timestamp"]].drop_duplicates()
    refs = [f"{view}:{n}" for n in names]
    joined = store.get_historical_features(entity_df=pairs, features=refs).to_df()
    joined["event_timestamp"] = pd.to_datetime(joined["event_timestamp"], utc=True)
    joined = joined[[key, "event_timestamp", *names]]
    return frame.drop(columns=[n for n in names if n in frame.columns]).merge(
        joined, on=[key, "event_timestamp"], how="left"
    )


def _check_features(store: FeatureStore, view: str, features: list[str] | None) -> list[str]:
    try:
        known = [f.name for f in store.get_feature_view(view).features]
    except Exception:  # Feast raises FeatureViewNotFoundException (and registry errors)
        raise ShopError(f"feature view '{view}' is not registered; run `python -m features.build`") from None
    if features is None:
        return known
    unknown = [f for f in features if f not in known]
    if unknown:
        raise ShopError(f"feature view '{view}' has no feature(s) {unknown}; known: {', '.join(known)}")
    return list(features)


def point_in_time_user_features(
    entity_df: pd.DataFrame, features: list[str] | None = None, store: FeatureStore | None = None
) -> pd.DataFrame:
    """Return entity_df (user_id, event_timestamp, ...), row order kept, plus `user_stats` as of each row.

    A row sees the latest daily snapshot stamped at or before its event_timestamp (so computed only from
    interactions strictly before it); NaN where the user had no snapshot within the view's ttl.
    """
    return _historical(entity_df, "user_id", "user_stats", features, store)


def point_in_time_item_features(
    entity_df: pd.DataFrame, features: list[str] | None = None, store: FeatureStore | None = None
) -> pd.DataFrame:
    """Return entity_df (item_id, event_timestamp, ...) plus `item_stats` as of each row (see users)."""
    return _historical(entity_df, "item_id", "item_stats", features, store)


def point_in_time_service_features(
    entity_df: pd.DataFrame, service: str = "recommender_training", store: FeatureStore | None = None
) -> pd.DataFrame:
    """Return entity_df (user_id, item_id, event_timestamp, ...) plus every feature of the feature `service`.

    Each view is joined on its own key (Feast's file store collapses rows that share one view's key and
    timestamp when several keys are present, so a single multi-view join would drop rows).
    """
    store = store or cached_store()
    try:
        projections = store.get_feature_service(service).feature_view_projections
    except Exception:  # Feast raises FeatureServiceNotFoundException (and registry errors)
        raise ShopError(f"feature service '{service}' is not registered; run `python -m features.build`") from None
    out = entity_df
    for projection in projections:
        key = {"user_stats": "user_id", "item_stats": "item_id"}[projection.name]
        names = [f.name for f in projection.features]
        out = _historical(out, key, projection.name, names, store)
    return out
