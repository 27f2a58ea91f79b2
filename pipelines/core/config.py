"""Typed, validated view of params.yaml: loaded once at a command's edge, inner code gets plain values.

Each stage owns one section below; unknown keys and out-of-range values fail with the dotted key named.
"""

import datetime as dt
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.core.errors import ShopError
from pipelines.core.paths import repo_root


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderParams(Section):
    """The pretrained text encoder: `minilm` is the packaged all-MiniLM-L6-v2; else a HF model id or local path."""

    model: str = "minilm"
    max_length: int = Field(64, ge=8, le=512)
    batch_size: int = Field(256, ge=1)


class SourceParams(Section):
    """One raw dataset: the adapter that reads it and the file expected in the data directory."""

    adapter: Literal["online_retail", "homedepot", "wands", "esci", "canonical"]
    file: str
    sha256: str | None = None
    url: str | None = None
    url_sha256: str | None = None


class DataParams(Section):
    retail: SourceParams
    search: SourceParams
    max_users: int | None = Field(None, ge=10, description="keep only this many customers (quick runs)")
    max_queries: int | None = Field(None, ge=10, description="keep only this many distinct queries (quick runs)")


class RetailSplitParams(Section):
    cutoff: dt.date
    valid_days: int = Field(30, ge=1, le=365)


class SearchSplitParams(Section):
    valid_frac: float = Field(0.1, gt=0, lt=0.5)
    test_frac: float = Field(0.2, gt=0, lt=0.5)


class SplitParams(Section):
    retail: RetailSplitParams
    search: SearchSplitParams


class EvaluationParams(Section):
    k: int = Field(10, ge=1)
    recall_ks: list[int] = [10, 20]
    catalogue_recall_k: int = Field(100, ge=1)
    relevant_threshold: float = Field(0.75, ge=0, le=1, description="relevance counted as relevant for recall")
    bootstrap_samples: int = Field(1000, ge=0)
    cold_user_max_purchases: int = Field(3, ge=0)
    new_item_days: int = Field(30, ge=1)


class BaselineParams(Section):
    popularity_days: int = Field(30, ge=1)
    knn_neighbours: int = Field(100, ge=1)


class Params(Section):
    seed: int = 42
    encoder: EncoderParams = EncoderParams()
    data: DataParams
    split: SplitParams
    evaluation: EvaluationParams = EvaluationParams()
    baselines: BaselineParams = BaselineParams()


def load_params(path: Path | str | None = None, overrides: dict | None = None) -> Params:
    """Load and validate params.yaml (optionally deep-merged with `overrides`); raise ShopError naming the key."""
    path = Path(path) if path else repo_root() / "params.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ShopError(f"{path}: cannot read params ({str(exc).splitlines()[0]})") from None
    raw = _merge(raw, overrides or {})
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ShopError(f"{path.name}: {key}: {first['msg']} ({len(exc.errors())} problem(s))") from None


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged
