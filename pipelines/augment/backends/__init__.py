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
from pipelines.augment.backends.huggingface import HuggingFaceBackend
from pipelines.augment.backends.offline import OfflineBackend, OfflineQueryModel
from pipelines.augment.backends.openai_compat import OpenAIBackend

__all__ = [
    "GenerationCache",
    "Request",
    "TextGenerator",
    "clean_output",
    "fit_offline_model",
    "make_backend",
    "render_prompt",
]


def fit_offline_model(train: pd.DataFrame, items: pd.DataFrame):
    """Fit the offline query model on real training (query, item) pairs joined to catalogue titles."""
    titles = items[["item_id", "title"]].astype({"item_id": str})
    pairs = train.astype({"item_id": str}).merge(titles, on="item_id", how="inner")
    if pairs.empty:
        raise ShopError("offline backend: no training query's item_id is in the catalogue; nothing to learn from")
    model = OfflineQueryModel().fit(pairs, items["title"].astype(str).tolist())
    return model.fit_paraphrases(train)


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
    settings = {"temperature": bp.temperature, "top_p": bp.top_p, "max_new_tokens": bp.max_new_tokens}
    cache = None
    if bp.cache:
        cache_dir = Path(bp.cache_dir) if Path(bp.cache_dir).is_absolute() else Path(root or ".") / bp.cache_dir
        cache = GenerationCache(cache_dir / f"{bp.name}.sqlite")
    if bp.name == "offline":
        if train is None or items is None:
            raise ShopError("augment.backend.name: offline needs the training queries and the catalogue to learn from")
        return OfflineBackend(fit_offline_model(train, items), bp.model, settings, cache, seed)
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
