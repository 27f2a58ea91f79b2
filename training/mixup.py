"""Augmentation 10: mixup in embedding space (Zhang et al., 2018), a training-time hook for the training code.

Each example's embedding and target are blended with those of a random partner from the same batch:
x' = lam * x_i + (1 - lam) * x_j, y' = lam * y_i + (1 - lam) * y_j, with lam ~ Beta(alpha, alpha) per example.
Everything random comes from the caller's `torch.Generator`, so a seeded training run mixes identically.
"""

from typing import NamedTuple

import torch
from scipy import special

from core.errors import ShopError


class MixupBatch(NamedTuple):
    """Mixed embeddings and targets, plus the per-example weight `lam` and the partner index used."""

    embeddings: torch.Tensor
    targets: torch.Tensor
    lam: torch.Tensor
    partner: torch.Tensor


def mixup(
    embeddings: torch.Tensor, targets: torch.Tensor, alpha: float, generator: torch.Generator | None = None
) -> MixupBatch:
    """Return a MixupBatch of `embeddings` (n, d) and `targets` (n, ...) mixed with a permuted copy of the
    batch.

    `alpha` > 0 shapes Beta(alpha, alpha) (small alpha keeps lam near 0 or 1); `alpha` == 0 returns the batch
    unchanged (lam = 1). lam is folded to >= 0.5 so each mixed example stays closest to its own target.
    Refuses a negative alpha or batches whose first dimensions differ.
    """
    if alpha < 0:
        raise ShopError(f"mixup alpha: must be >= 0, got {alpha}")
    if embeddings.shape[0] != targets.shape[0]:
        raise ShopError(f"mixup: {embeddings.shape[0]} embeddings but {targets.shape[0]} targets")
    n = embeddings.shape[0]
    if alpha == 0 or n < 2:
        return MixupBatch(
            embeddings,
            targets,
            torch.ones(n, dtype=embeddings.dtype, device=embeddings.device),
            torch.arange(n, device=embeddings.device),
        )
    uniform = torch.rand(n, generator=generator, dtype=torch.float64)
    lam = torch.from_numpy(special.betaincinv(alpha, alpha, uniform.numpy()))  # inverse CDF: seeded Beta draws
    lam = torch.maximum(lam, 1 - lam).to(embeddings.dtype).to(embeddings.device)
    partner = torch.randperm(n, generator=generator).to(embeddings.device)
    shape = (n,) + (1,) * (embeddings.dim() - 1)
    mixed = lam.view(shape) * embeddings + (1 - lam.view(shape)) * embeddings[partner]
    t = targets.to(embeddings.dtype) if not targets.is_floating_point() else targets
    t_shape = (n,) + (1,) * (t.dim() - 1)
    mixed_targets = lam.to(t.dtype).view(t_shape) * t + (1 - lam.to(t.dtype).view(t_shape)) * t[partner]
    return MixupBatch(mixed, mixed_targets, lam, partner)
