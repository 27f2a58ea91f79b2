"""The huggingface backend: any causal or seq2seq model (HF id or local path) via transformers, batched, GPU-aware."""

import logging
import os
from pathlib import Path

import torch

from core.errors import ShopError
from pipelines.augment.backends.base import Request, TextGenerator, clean_output
from pipelines.augment.manifest import file_sha256

log = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device_dtype(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """`auto`: CUDA when present, with bf16 (fp16 on GPUs without bf16); fp32 on CPU."""
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    if dtype != "auto":
        return dev, _DTYPES[dtype]
    if dev.type == "cuda":
        return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dev, torch.float32


class HuggingFaceBackend(TextGenerator):
    """Samples `n` continuations per prompt with `model.generate`, `batch_size` prompts at a time."""

    name = "huggingface"

    def __init__(
        self,
        model_id: str,
        settings: dict,
        cache=None,
        seed: int = 0,
        batch_size: int = 32,
        device: str = "auto",
        dtype: str = "auto",
    ):
        super().__init__(model_id, settings, cache, seed)
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        local = Path(model_id).expanduser()
        if not local.exists() and os.environ.get("HF_HUB_OFFLINE", "1") == "1":
            raise ShopError(
                f"augment.backend.model: '{model_id}' is not a local path and HF_HUB_OFFLINE=1; "
                "set HF_HUB_OFFLINE=0 to allow the download"
            )
        source = str(local) if local.exists() else model_id
        try:
            config = AutoConfig.from_pretrained(source)
            self.tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as exc:
            raise ShopError(f"augment.backend.model: cannot load '{model_id}' ({str(exc).splitlines()[0]})") from None
        self.device, self.dtype = pick_device_dtype(device, dtype)
        self.seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        loader = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
        self.model = loader.from_pretrained(source, dtype=self.dtype).to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.tokenizer.padding_side = "left"  # causal models continue from the prompt's last token
        self.batch_size = batch_size
        self.model_hash = file_sha256(local) if local.exists() else getattr(config, "_commit_hash", None)
        self.tokens_generated = 0

    @torch.inference_mode()
    def _generate(self, requests: list[Request], keys: list[str]) -> list[list[str]]:
        out: list[list[str]] = []
        s = self.settings
        for start in range(0, len(requests), self.batch_size):
            batch, batch_keys = (
                requests[start : start + self.batch_size],
                keys[start : start + self.batch_size],
            )
            n = max(r.n for r in batch)
            prompts = [self.cache_text(r) for r in batch]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, truncation=True, max_length=512)
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            torch.manual_seed(self.request_seed(self.seed, batch_keys[0]))
            sampled = s["temperature"] > 0
            ids = self.model.generate(
                **enc,
                do_sample=sampled,
                temperature=s["temperature"] if sampled else None,
                top_p=s["top_p"] if sampled else None,
                max_new_tokens=s["max_new_tokens"],
                num_return_sequences=n,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            new = ids if self.seq2seq else ids[:, enc["input_ids"].shape[1] :]
            self.tokens_generated += int((new != self.tokenizer.pad_token_id).sum())
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            for i, request in enumerate(batch):
                outs = [clean_output(t, request.task) for t in texts[i * n : (i + 1) * n]]
                out.append(list(dict.fromkeys(o for o in outs if o))[: request.n])
        return out
