"""The training loop: `train_step`, `eval_step` and the per-worker `train_loop` (AMP, accumulation, resume, DDP).

The loop knows nothing about a task: a `Job` gives it a model, deterministic batch plans per epoch and a
validation metric (higher is better). Run it in one process, or under `torchrun` for DDP (gloo on CPU,
nccl on GPU); every rank runs the same loop on its share of each epoch's batches.
"""

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class Job(Protocol):
    """What the loop trains: the model, batches for an epoch, and a validation metric."""

    model: nn.Module

    def plans(self, epoch: int) -> list[Any]:
        """All batch plans of an epoch, in a deterministic (seeded) order; the loop shards them over ranks."""

    def collate(self, plan: Any, epoch: int, index: int) -> dict:
        """The batch (dict of CPU tensors) for one plan; any randomness is seeded by (epoch, index)."""

    def validate(self, model: nn.Module) -> float:
        """Validation metric of the (unwrapped) model; higher is better."""


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 1
    max_steps: int | None = None
    grad_accum: int = 1
    lr: float = 1e-3
    encoder_lr: float = 5e-5
    weight_decay: float = 0.01
    eval_every: int = 50
    patience: int = 3
    checkpoint_every: int = 100
    checkpoint_dir: Path | None = None
    resume: bool = True
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"
    halt_at: int | None = None  # stop (checkpointed) after this many steps: simulates an interruption


@dataclass
class LoopResult:
    best_metric: float
    best_step: int
    steps: int
    stopped_early: bool
    train_seconds: float
    samples: int
    history: list[dict] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else float("nan")


def resolve_device(preference: str = "auto") -> torch.device:
    """`auto` = this rank's GPU when CUDA is present, else CPU."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(preference)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype, or None for fp32: `auto` = bf16 on GPUs that have it, else fp16; fp32 on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def setup_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the torchrun process group (nccl on GPU, gloo on CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: LoopConfig) -> torch.optim.Optimizer:
    """AdamW with two groups: text-encoder weights (incl. LoRA) at `encoder_lr`, everything else at `lr`."""
    encoder, heads = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (encoder if ".encoder." in f".{name}" else heads).append(param)
    groups = [{"params": heads, "lr": cfg.lr}] + ([{"params": encoder, "lr": cfg.encoder_lr}] if encoder else [])
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def _schedule(total: int) -> Any:
    warmup = max(1, min(100, total // 10))
    return lambda step: min(1.0, (step + 1) / warmup) * max(0.1, 1 - max(0, step - warmup) / max(1, total - warmup))


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train_step(
    model: nn.Module,
    micro_batches: list[dict],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp: torch.dtype | None,
) -> float:
    """One optimizer step over `micro_batches` (gradient accumulation, DDP sync on the last); returns mean loss."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync, torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = model(_to(batch, device)) / len(micro_batches)
            scaler.scale(loss).backward()
        total += float(loss.detach())
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
    scaler.step(optimizer)
    scaler.update()
    return total


def eval_step(job: Job, model: nn.Module, rank: int) -> float:
    """Validation metric computed on rank 0 in eval mode, then shared so every rank takes the same decision."""
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    inner.eval()
    with torch.no_grad():
        metric = float(job.validate(inner)) if rank == 0 else 0.0
    inner.train()
    if dist.is_initialized():
        value = torch.tensor([metric], dtype=torch.float64)
        dist.broadcast(value, 0)
        metric = float(value[0])
    if math.isnan(metric):
        raise ValueError("validation metric is NaN: early stopping cannot compare it")
    return metric


def _trainable_state(model: nn.Module) -> dict:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_loop(job: Job, cfg: LoopConfig, on_record: Callable[[dict], None] | None = None) -> LoopResult:
    """Train `job.model` in this worker until the step budget, the epochs or early stopping end it.

    `on_record` receives each history record (step, loss, learning rate, valid ...) as it is made, on rank 0
    (the MLflow run logs them live).

    Keeps the best validation weights (restored into the model at the end). With `checkpoint_dir`, writes
    `last.pt` every `checkpoint_every` steps and at each validation; a rerun with `resume` continues from it
    and ends with the same weights as an uninterrupted run (batches and dropout are seeded).
    """
    device = resolve_device(cfg.device)
    rank, world = setup_distributed(device)
    seed_everything(cfg.seed)
    inner = job.model.to(device)
    model = (
        DistributedDataParallel(inner, device_ids=[device.index] if device.type == "cuda" else None)
        if world > 1
        else inner
    )
    amp = autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    optimizer = make_optimizer(inner, cfg)
    per_epoch = len(job.plans(0)) // world // cfg.grad_accum
    total = min(cfg.max_steps or math.inf, cfg.epochs * per_epoch)
    if per_epoch < 1:
        raise ValueError(f"too few training batches ({len(job.plans(0))}) for {world} worker(s)")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(int(total)))
    state = {"step": 0, "best": -math.inf, "best_step": 0, "bad": 0, "history": [], "samples": 0, "seconds": 0.0}
    ckpt = Path(cfg.checkpoint_dir) / "last.pt" if cfg.checkpoint_dir else None
    best_weights = _trainable_state(inner)
    if ckpt is not None and cfg.resume and ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        inner.load_state_dict(saved["model"], strict=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"][rank] if rank < len(saved["rng"]) else saved["rng"][0])
        state, best_weights = saved["state"], saved["best_weights"]
        log.info("resumed from %s at step %d", ckpt, state["step"])

    def checkpoint() -> None:
        rngs = [torch.get_rng_state()]
        if dist.is_initialized():
            rngs = [None] * world
            dist.all_gather_object(rngs, torch.get_rng_state())
        if rank == 0 and ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            _save(
                ckpt,
                {
                    "model": _trainable_state(inner),
                    "optimizer": optimizer.state_dict(),
                    "rng": rngs,
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "state": state,
                    "best_weights": best_weights,
                },
            )

    model.train()
    stopped = False
    bar = tqdm(total=int(total), initial=state["step"], desc="train", unit="step", disable=rank != 0)
    while state["step"] < total and not stopped:
        epoch, offset = divmod(state["step"], per_epoch)
        plans = job.plans(epoch)[rank::world][: per_epoch * cfg.grad_accum]
        for step_in_epoch in range(offset, per_epoch):
            start = time.perf_counter()
            idx = range(step_in_epoch * cfg.grad_accum, (step_in_epoch + 1) * cfg.grad_accum)
            micro = [job.collate(plans[i], epoch, i * world + rank) for i in idx]
            loss = train_step(model, micro, optimizer, scaler, device, amp)
            scheduler.step()
            state["step"] += 1
            state["samples"] += sum(len(b["weight"]) for b in micro) * world
            state["seconds"] += time.perf_counter() - start
            record = {"step": state["step"], "loss": loss, "lr": scheduler.get_last_lr()[0]}
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", best=f"{state['best']:.4f}", refresh=False)
            if state["step"] % cfg.eval_every == 0 or state["step"] >= total:
                record["valid"] = eval_step(job, model, rank)
                if record["valid"] > state["best"]:
                    state.update(best=record["valid"], best_step=state["step"], bad=0)
                    best_weights = _trainable_state(inner)
                else:
                    state["bad"] += 1
                stopped = state["bad"] >= cfg.patience
                log.info(
                    "step %d loss %.4f valid %.4f (best %.4f @ %d)",
                    state["step"],
                    loss,
                    record["valid"],
                    state["best"],
                    state["best_step"],
                )
            state["history"].append(record)
            if on_record is not None and rank == 0:
                on_record(record)
            if "valid" in record or state["step"] % cfg.checkpoint_every == 0:
                checkpoint()
            if stopped or state["step"] >= total or state["step"] == cfg.halt_at:
                break
        if cfg.halt_at is not None and state["step"] == cfg.halt_at and state["step"] < total and not stopped:
            checkpoint()
            break
    bar.close()
    inner.load_state_dict(best_weights, strict=False)
    return LoopResult(
        state["best"], state["best_step"], state["step"], stopped, state["seconds"], state["samples"], state["history"]
    )
