"""Mixup of user/query vectors (training.mixup): seeded, convex, each example stays dominant."""

import pytest
import torch

from core.errors import ShopError
from training.mixup import mixup


def test_mixup_is_seeded_convex_and_keeps_each_example_dominant():
    emb, targets = torch.randn(64, 8), torch.eye(4)[torch.arange(64) % 4]
    first = mixup(emb, targets, alpha=0.4, generator=torch.Generator().manual_seed(3))
    again = mixup(emb, targets, alpha=0.4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.embeddings, again.embeddings) and torch.equal(first.partner, again.partner)
    assert (first.lam >= 0.5).all() and (first.lam <= 1).all()
    expected = first.lam[:, None] * emb + (1 - first.lam[:, None]) * emb[first.partner]
    assert torch.allclose(first.embeddings, expected)
    assert torch.allclose(first.targets.sum(1), torch.ones(64))
    assert torch.equal(mixup(emb, targets, alpha=0.0).embeddings, emb)
    with pytest.raises(ShopError, match="alpha"):
        mixup(emb, targets, alpha=-1.0)
