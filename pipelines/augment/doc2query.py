"""doc2query for a causal language model: fine-tune it on real training (title, query) pairs, cached by content.

Full fine-tuning in the style of doc2query (Nogueira et al. 2019) on a decoder-only model: each training text
is `Product: {title}\\nQuery: {query}<eos>` and the loss covers the query and <eos> only (the title is the
condition, not a target). AdamW at a constant learning rate over `steps` seeded batches of pairs of similar
length (little padding; Hugging Face's `group_by_length`), gradients clipped at 1. The tuned weights are saved
under `<cache_dir>/doc2query/<key>/`, where the key hashes the base weights, the training pairs, the recipe
and the seed, so an unchanged re-run loads them instead of training again.
Generation then goes through the huggingface backend with the prompt `Product: {title}\\nQuery:`.
"""

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from core.errors import ShopError
from core.io import atomic_dir, write_json
from pipelines.augment.backends import ModelSource, Request, render_prompt, resolve_model
from pipelines.augment.backends.huggingface import load_model, pick_device_dtype
from pipelines.augment.manifest import file_sha256

log = logging.getLogger(__name__)
RECIPE = "doc2query-v2"  # bump when the text format, the loss mask or the loop changes: old weights re-train
RECORD_FILE = "doc2query.json"
MAX_QUERY_TOKENS = 32
GROUP_BATCHES = 50  # batches per length-sorted group (Hugging Face's LengthGroupedSampler megabatch)


@dataclass(frozen=True)
class FineTune:
    """The recipe's knobs (generators.<name>.settings.fine_tune_*)."""

    steps: int
    batch_size: int
    lr: float


@dataclass(frozen=True)
class TunedModel:
    """Fine-tuned weights on disk and the facts of their training (`record`); `trained`: made by this call."""

    path: Path
    record: dict
    trained: bool

    @property
    def source(self) -> ModelSource:
        return ModelSource(str(self.path), local=True)


def training_pairs(train: pd.DataFrame, items: pd.DataFrame, min_relevance: float) -> list[tuple[str, str]]:
    """Distinct (item title, real training query) pairs with relevance >= `min_relevance`, sorted."""
    judged = train[train["relevance"] >= min_relevance][["item_id", "query"]].astype(str)
    pairs = judged.merge(items[["item_id", "title"]].astype(str), on="item_id")
    titles = pairs["title"].map(lambda t: " ".join(t.split()))
    queries = pairs["query"].map(lambda q: " ".join(q.lower().split()))
    return sorted({(t, q) for t, q in zip(titles, queries, strict=True) if t and q})


def prompt(title: str) -> str:
    """What the tuned model continues with a query (the same text at training and generation time)."""
    return render_prompt(Request("doc2query", {"title": title}))


def encode_pairs(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """Per pair: (token ids of prompt + " query" + <eos>, number of prompt tokens)."""
    prompts = tokenizer([prompt(t) for t, _ in pairs]).input_ids
    queries = tokenizer([" " + q for _, q in pairs]).input_ids
    eos = tokenizer.eos_token_id
    return [(p + q[:MAX_QUERY_TOKENS] + [eos], len(p)) for p, q in zip(prompts, queries, strict=True)]


def collate(encoded: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (-100 on prompt and padding: no loss there)."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def length_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch of seeded batches (positions into `lengths`) whose members have similar lengths: a random
    permutation cut into groups of GROUP_BATCHES batches, each group sorted by length and cut into batches,
    the batches then shuffled (right-padded, a batch of random pairs is a third padding here)."""
    order = rng.permutation(len(lengths))
    size = GROUP_BATCHES * batch_size
    batches = []
    for start in range(0, len(order), size):
        group = sorted(order[start : start + size].tolist(), key=lambda i: lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def fine_tune(model, tokenizer, pairs: list[tuple[str, str]], ft: FineTune, seed: int) -> list[float]:
    """Train `model` in place for `ft.steps` seeded length-grouped batches of pairs; return every step's loss."""
    encoded = encode_pairs(tokenizer, pairs)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=ft.lr, weight_decay=0.0)
    device = next(model.parameters()).device
    lengths = [len(ids) for ids, _ in encoded]
    batches: list[list[int]] = []
    losses = []
    model.train()
    progress = tqdm(range(ft.steps), desc="doc2query fine-tune", unit="step")
    for _ in progress:
        batches = batches or length_batches(lengths, ft.batch_size, rng)
        chosen = batches.pop()
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in chosen], tokenizer.pad_token_id).items()}
        loss = model(**batch).loss
        if not torch.isfinite(loss):
            raise ShopError(f"doc2query fine-tuning diverged at step {len(losses)} (loss {loss.item()}); lower lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(round(float(loss.item()), 4))
        progress.set_postfix(loss=losses[-1])
    model.eval()
    return losses


def make_trainable(model):
    """`model` ready to train and save: a GGUF checkpoint loads dequantized into ordinary float layers but keeps
    its quantizer tag, which `save_pretrained` refuses; the tag is dropped once every weight is a plain float."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return model
    if not all(p.is_floating_point() for p in model.parameters()):
        raise ShopError("doc2query: the base model kept packed quantized weights; fine-tuning needs float weights")
    quantizer.remove_quantization_config(model)
    return model


def tuning_key(model_id: str, base_hash: str | None, pairs: list[tuple[str, str]], ft: FineTune, seed: int) -> str:
    """sha256 of everything the tuned weights depend on."""
    blob = json.dumps([RECIPE, model_id, base_hash, pairs, ft.steps, ft.batch_size, ft.lr, seed])
    return hashlib.sha256(blob.encode()).hexdigest()


def weights_sha256(folder: Path) -> str:
    """sha256 over the folder's safetensors files (the weights, not the tokenizer or the record)."""
    digest = hashlib.sha256()
    for file in sorted(folder.glob("*.safetensors")):
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def fine_tuned_model(
    model_id: str,
    pairs: list[tuple[str, str]],
    ft: FineTune,
    seed: int,
    cache_dir: Path,
    device: str = "auto",
) -> TunedModel:
    """The doc2query-tuned copy of `model_id`: loaded from `<cache_dir>/doc2query/<key>/` when there, else
    trained (fp32) and saved there. Refuses an encoder-decoder model and an empty pair list."""
    if not pairs:
        raise ShopError("doc2query: no training (title, query) pair passes min_relevance; nothing to fine-tune on")
    source = resolve_model(model_id)
    base_hash = source.fingerprint()
    key = tuning_key(model_id, base_hash, pairs, ft, seed)
    folder = Path(cache_dir) / "doc2query" / key[:16]
    if (folder / RECORD_FILE).is_file():
        record = json.loads((folder / RECORD_FILE).read_text())
        log.info("doc2query: tuned weights found in %s (no fine-tuning)", folder)
        return TunedModel(folder, record, trained=False)
    dev, _ = pick_device_dtype(device, "float32")
    started = time.perf_counter()
    tokenizer, model, seq2seq = load_model(source, dev, torch.float32)
    if seq2seq:
        raise ShopError(
            f"augment.backend.model: '{model_id}' is an encoder-decoder model; doc2query fine-tuning here is for "
            "causal models (set generators.synthetic_queries.settings.fine_tune_steps: 0)"
        )
    model, loaded = make_trainable(model), time.perf_counter()
    log.info("doc2query: fine-tuning %s on %d pairs (%d steps x %d)", model_id, len(pairs), ft.steps, ft.batch_size)
    losses = fine_tune(model, tokenizer, pairs, ft, seed)
    seconds = time.perf_counter() - loaded
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record = {
            "recipe": RECIPE,
            "base_model": model_id,
            "base_sha256": base_hash,
            "pairs": len(pairs),
            "steps": ft.steps,
            "batch_size": ft.batch_size,
            "lr": ft.lr,
            "seed": seed,
            "losses": losses,
            "first_loss": losses[0] if losses else None,
            "final_loss": round(float(np.mean(losses[-5:])), 4) if losses else None,
            "weights_sha256": weights_sha256(tmp),
            "device": str(dev),
            "load_seconds": round(loaded - started, 1),
            "fine_tune_seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / max(ft.steps, 1), 2),
        }
        write_json(record, tmp / RECORD_FILE)
    log.info(
        "doc2query: %d steps in %.0f s (%.1f s/step), loss %s -> %s; weights %s",
        ft.steps,
        seconds,
        seconds / max(ft.steps, 1),
        record["first_loss"],
        record["final_loss"],
        folder,
    )
    return TunedModel(folder, record, trained=True)
