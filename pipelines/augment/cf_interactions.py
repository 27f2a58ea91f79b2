"""Generator 5: plausible extra purchases for sparse users, sampled from an ALS matrix factorisation of
train history."""

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipelines.augment.manifest import Context, GeneratorOutput
from pipelines.augment.retail_history import (
    UserItemMatrix,
    item_unit_stats,
    load_history,
    user_item_matrix,
    valid_cutoff,
)

log = logging.getLogger(__name__)
GENERATOR = "cf_interactions"


class Settings(BaseModel):
    """Generator 5: extra purchases for sparse users, sampled from an implicit-feedback ALS model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factors: int = Field(ge=1)
    iterations: int = Field(ge=1)
    regularization: float = Field(ge=0)
    alpha: float = Field(gt=0, description="confidence = 1 + alpha * log1p(purchase count)")
    sparse_max_items: int = Field(ge=1, description="users with at most this many distinct items get extras")
    per_user: int = Field(ge=0, description="extra purchases sampled per sparse user")
    candidates: int = Field(ge=1, description="top-scored unseen items the extras are sampled from")
    min_score: float = Field(description="ALS score a sampled item must reach (threshold)")
    temperature: float = Field(gt=0, description="softmax temperature over candidate scores")


@dataclass(frozen=True)
class CfModel:
    """A fitted ALS model: user and item factors aligned with the ids of `data`."""

    data: UserItemMatrix
    user_factors: np.ndarray
    item_factors: np.ndarray

    def scores(self, user_vectors: np.ndarray) -> np.ndarray:
        """Return (n_users, n_items) preference scores for factor vectors."""
        return user_vectors @ self.item_factors.T


def fit_als(history: pd.DataFrame, p: Settings, seed: int) -> CfModel:
    """Fit implicit's ALS (conjugate gradient, deterministic for a seed) on log-scaled basket counts."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    data = user_item_matrix(history)
    confidence = data.matrix.copy()
    confidence.data = np.log1p(confidence.data)
    with threadpool_limits(1, "blas"):  # implicit parallelises itself; nested BLAS threads only slow it down
        model = AlternatingLeastSquares(
            factors=p.factors,
            regularization=p.regularization,
            alpha=p.alpha,
            iterations=p.iterations,
            random_state=seed,
            num_threads=0,
        )
        model.fit(confidence, show_progress=False)
    return CfModel(data, np.asarray(model.user_factors), np.asarray(model.item_factors))


def sample_items(
    scores: np.ndarray,
    seen: np.ndarray,
    k: int,
    candidates: int,
    min_score: float,
    temperature: float,
    rng: np.random.Generator,
) -> list[tuple[int, float]]:
    """Draw up to `k` distinct unseen item columns from the top `candidates` scoring >= `min_score`.

    Draws follow softmax(score / temperature), so confident items are likelier but not certain; returns
    (column, score) pairs, fewer than `k` when too few candidates clear the threshold.
    """
    scores = scores.copy()
    scores[seen] = -np.inf
    top = np.argpartition(-scores, min(candidates, len(scores) - 1))[:candidates]
    top = top[np.isfinite(scores[top]) & (scores[top] >= min_score)]
    if k == 0 or len(top) == 0:
        return []
    top = top[np.argsort(-scores[top], kind="stable")]
    logits = (scores[top] - scores[top].max()) / temperature
    prob = np.exp(logits) / np.exp(logits).sum()
    picked = rng.choice(top, size=min(k, len(top)), replace=False, p=prob)
    return [(int(c), float(scores[c])) for c in picked]


def generate_cf_interactions(history: pd.DataFrame, p: Settings, seed: int) -> pd.DataFrame:
    """Return synthetic purchases for users with <= `sparse_max_items` distinct items (canonical
    interactions).

    Each user's extras form one synthetic basket at the time of their last real basket (so `ts` stays before
    the validation cutoff); `parent_id` is that real basket, `score` the ALS score. Items the user bought are
    never drawn.
    """
    model = fit_als(history, p, seed)
    data, rng = model.data, np.random.default_rng(seed)
    counts = np.diff(data.matrix.indptr)
    sparse_users = np.flatnonzero(counts <= p.sparse_max_items)
    last = history.sort_values(["ts", "basket_id"], kind="stable").groupby("user_id", observed=True).tail(1)
    last = last.set_index("user_id")[["ts", "basket_id"]]
    stats = item_unit_stats(history)
    rows = []
    for start in range(0, len(sparse_users), 1024):
        block = sparse_users[start : start + 1024]
        block_scores = model.scores(model.user_factors[block])
        for u, scores in zip(block, block_scores, strict=True):
            seen = data.matrix.indices[data.matrix.indptr[u] : data.matrix.indptr[u + 1]]
            user = data.user_ids[u]
            for col, score in sample_items(scores, seen, p.per_user, p.candidates, p.min_score, p.temperature, rng):
                rows.append((user, data.item_ids[col], score))
    out = pd.DataFrame(rows, columns=["user_id", "item_id", "score"])
    if out.empty:
        return out
    anchor = last.loc[out["user_id"]]
    unit = stats.loc[out["item_id"]]
    return out.assign(
        ts=anchor["ts"].to_numpy(),
        event="purchase",
        quantity=unit["quantity"].to_numpy(),
        value=(unit["quantity"] * unit["unit"]).round(2).to_numpy(),
        basket_id=GENERATOR + ":" + anchor["basket_id"].astype(str).to_numpy(),
        parent_id=anchor["basket_id"].astype(str).to_numpy(),
    )[["user_id", "item_id", "ts", "event", "quantity", "value", "basket_id", "parent_id", "score"]]


def generate(ctx: Context) -> GeneratorOutput:
    """Fit ALS on the leakage-safe train history and sample extra purchases for sparse users."""
    p = ctx.settings
    rows = generate_cf_interactions(load_history(ctx.params, ctx.train), p, ctx.params.seed)
    users = rows["user_id"].nunique() if len(rows) else 0
    return GeneratorOutput(
        rows,
        inputs=[ctx.train],
        backend="implicit-als",
        model_id=f"als-{p.factors}f",
        extra={"valid_cutoff": str(valid_cutoff(ctx.params)), "users_augmented": int(users)},
    )
