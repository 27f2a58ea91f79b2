"""Text-generation backends behind one interface: `offline` (learned, CPU), `huggingface`, `openai`."""

from pathlib import Path

import pandas as pd

from core.errors import ShopError
from core.params import BackendParams
from pipelines.augment.backends.base import (
    GenerationCache,
    Request,
    TextGenerator,
    clean_output,
    render_prompt,
)
from pipelines.augment.backends.huggingface import HuggingFaceBackend, ModelSource, resolve_model
from pipelines.augment.backends.offline import OfflineBackend, OfflineQueryModel
from pipelines.augment.backends.openai_compat import OpenAIBackend

__all__ = [
    "OFFLINE_MODEL",
    "GenerationCache",
    "HuggingFaceBackend",
    "ModelSource",
    "Request",
    "TextGenerator",
    "backend_record",
    "cache_folder",
    "clean_output",
    "fit_offline_model",
    "generation_settings",
    "make_backend",
    "open_cache",
    "render_prompt",
    "resolve_model",
]
OFFLINE_MODEL = "shopaug-offline-v1"  # the offline backend's model id (its weights are learned per run)


def fit_offline_model(train: pd.DataFrame, items: pd.DataFrame):
    """Fit the offline query model on real training (query, item) pairs joined to catalogue titles."""
    titles = items[["item_id", "title"]].astype({"item_id": str})
    pairs = train.astype({"item_id": str}).merge(titles, on="item_id", how="inner")
    if pairs.empty:
        raise ShopError("offline backend: no training query's item_id is in the catalogue; nothing to learn from")
    model = OfflineQueryModel().fit(pairs, items["title"].astype(str).tolist())
    return model.fit_paraphrases(train)


def open_cache(bp: BackendParams, root: Path | str | None = None) -> GenerationCache | None:
    """The generation cache `<root>/<backend.cache_dir>/<backend>.sqlite`, or None when `backend.cache` is false."""
    if not bp.cache:
        return None
    return GenerationCache(cache_folder(bp, root) / f"{bp.name}.sqlite")


def cache_folder(bp: BackendParams, root: Path | str | None = None) -> Path:
    """`backend.cache_dir`, resolved against `root` when relative."""
    return Path(bp.cache_dir) if Path(bp.cache_dir).is_absolute() else Path(root or ".") / bp.cache_dir


def backend_record(bp: BackendParams) -> dict:
    """The backend keys that shape a generator's output, for its manifest (the offline sampler has no model)."""
    if bp.name == "offline":
        return {"name": bp.name, "model": OFFLINE_MODEL}
    return bp.model_dump()


def generation_settings(bp: BackendParams) -> dict:
    """The sampling settings every backend receives (and that key its cache)."""
    return {"temperature": bp.temperature, "top_p": bp.top_p, "max_new_tokens": bp.max_new_tokens}


def make_backend(
    bp: BackendParams,
    seed: int,
    root: Path | str | None = None,
    *,
    train: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
) -> TextGenerator:
    """Build the configured backend; `offline` is learned from `train` (real training queries) and `items`.

    The cache lives at `<root>/<backend.cache_dir>/<backend>.sqlite` unless `backend.cache` is false.
    """
    settings, cache = generation_settings(bp), open_cache(bp, root)
    if bp.name == "offline":
        if train is None or items is None:
            raise ShopError("augment.backend.name: offline needs the training queries and the catalogue to learn from")
        return OfflineBackend(fit_offline_model(train, items), OFFLINE_MODEL, settings, cache, seed)
    if bp.name == "huggingface":
        return HuggingFaceBackend(
            bp.model, settings, cache, seed, batch_size=bp.batch_size, device=bp.device, dtype=bp.dtype
        )
    if bp.name == "openai":
        return OpenAIBackend(
            bp.model,
            settings,
            cache,
            seed,
            base_url=bp.base_url,
            endpoint=bp.endpoint,
            concurrency=bp.concurrency,
            timeout_s=bp.timeout_s,
            max_retries=bp.max_retries,
            retry_wait_s=bp.retry_wait_s,
            api_key_env=bp.api_key_env,
        )
    raise ShopError(f"augment.backend.name: unknown backend '{bp.name}'; expected offline, huggingface or openai")
