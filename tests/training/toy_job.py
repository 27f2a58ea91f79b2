"""A tiny regression job for loop and DDP tests: real torch, dropout (so RNG state matters), seeded batches."""

import numpy as np
import torch
from torch import nn


class ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))

    def forward(self, batch: dict) -> torch.Tensor:
        pred = self.net(batch["x"]).squeeze(-1)
        return (((pred - batch["y"]) ** 2) * batch["weight"]).mean()


class ToyJob:
    """y = x @ w + noise; validation metric = minus the validation MSE (higher is better)."""

    def __init__(self, n: int = 256, batch_size: int = 16, seed: int = 0, valid_metrics: list[float] | None = None):
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(n, 8)).astype(np.float32)
        self.y = (self.x @ rng.normal(size=8) + 0.1 * rng.normal(size=n)).astype(np.float32)
        self.batch_size, self.seed = batch_size, seed
        self.valid_metrics = list(valid_metrics) if valid_metrics else None
        torch.manual_seed(seed)
        self.model = ToyModel()

    def plans(self, epoch: int) -> list[np.ndarray]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))
        return [order[i : i + self.batch_size] for i in range(0, len(order) - self.batch_size + 1, self.batch_size)]

    def collate(self, plan: np.ndarray, epoch: int, index: int) -> dict:
        return {
            "x": torch.from_numpy(self.x[plan]),
            "y": torch.from_numpy(self.y[plan]),
            "weight": torch.ones(len(plan)),
        }

    def validate(self, model: nn.Module) -> float:
        if self.valid_metrics is not None:  # scripted metric sequence (early-stopping tests)
            return self.valid_metrics.pop(0)
        with torch.no_grad():
            pred = model.net(torch.from_numpy(self.x[:64])).squeeze(-1)
        return -float(((pred - torch.from_numpy(self.y[:64])) ** 2).mean())
