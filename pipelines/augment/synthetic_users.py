"""Generator 8: synthetic user profiles from a generative model of real profiles; ALS samples their purchases.

A profile is a vector of behaviour (baskets, basket size, unit price, quantity, first day, active span),
country and taste (the leading principal components of the user's ALS factors). The default model is a
Gaussian copula (empirical marginals joined by the correlation of normal scores, as in Patki et al. 2016,
written here on scipy); `model: vae` trains a small torch VAE on the same normal scores instead. Each
synthetic user's taste is mapped back to ALS factor space and their baskets are drawn from the softmax of ALS
item scores; a history identical to a real user's is redrawn, never kept.
"""

import logging
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from core.io import read_table
from pipelines.augment import cf_interactions
from pipelines.augment.cf_interactions import CfModel, fit_als
from pipelines.augment.manifest import Context, GeneratorOutput, load_settings
from pipelines.augment.retail_history import item_unit_stats, load_history, valid_cutoff

log = logging.getLogger(__name__)
GENERATOR = "synthetic_users"
BEHAVIOUR = ["n_baskets", "basket_size", "log_unit_price", "log_quantity", "first_day", "span_days"]
DISCRETE = {"n_baskets", "country_code"}


class Settings(BaseModel):
    """Generator 8: synthetic user profiles (Gaussian copula or VAE) whose purchases the CF model samples."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_users: int = Field(ge=0)
    model: Literal["copula", "vae"]
    taste_dims: int = Field(ge=1, description="principal components of the ALS user factors in a profile")
    max_baskets: int = Field(ge=1, description="cap on baskets per synthetic user")
    temperature: float = Field(gt=0, description="softmax temperature when sampling items")
    candidates: int = Field(ge=1, description="top-scored items a synthetic user buys from")
    vae_epochs: int = Field(ge=1)


def user_profiles(
    history: pd.DataFrame,
    model: CfModel,
    countries: pd.Series,
    taste_dims: int,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Return (profiles indexed by user, PCA mean, PCA components) for every user in the ALS model."""
    start = history["ts"].min()
    rows = history.assign(
        unit=np.log(history["value"].clip(lower=1e-3) / history["quantity"].clip(lower=1)),
        logq=np.log(history["quantity"].clip(lower=1)),
    )
    per_basket = rows.groupby(["user_id", "basket_id"], observed=True).agg(
        size=("item_id", "nunique"), ts=("ts", "min")
    )
    grouped = per_basket.groupby("user_id", observed=True)
    profiles = pd.DataFrame(
        {
            "n_baskets": grouped.size(),
            "basket_size": grouped["size"].mean(),
            "first_day": (grouped["ts"].min() - start).dt.total_seconds() / 86400,
            "span_days": (grouped["ts"].max() - grouped["ts"].min()).dt.total_seconds() / 86400,
        }
    )
    by_user = rows.groupby("user_id", observed=True)
    profiles["log_unit_price"] = by_user["unit"].median()
    profiles["log_quantity"] = by_user["logq"].median()
    profiles = profiles.reindex(model.data.user_ids)
    codes = countries.reindex(profiles.index).fillna("Unspecified")
    order = codes.value_counts().sort_index(kind="stable").sort_values(ascending=False, kind="stable").index
    profiles["country_code"] = codes.map({c: i for i, c in enumerate(order)}).astype(int)
    mean = model.user_factors.mean(axis=0)
    dims = min(taste_dims, model.user_factors.shape[1], len(profiles) - 1)
    _, _, vt = np.linalg.svd(model.user_factors - mean, full_matrices=False)
    components = vt[:dims]
    taste = (model.user_factors - mean) @ components.T
    for d in range(dims):
        profiles[f"taste_{d}"] = taste[:, d]
    profiles.attrs["countries"] = list(order)
    return profiles, mean, components


class GaussianCopula:
    """Empirical marginals + Gaussian dependence: fit on a numeric frame, sample frames of the same
    columns."""

    def fit(self, frame: pd.DataFrame, rng: np.random.Generator) -> "GaussianCopula":
        self.columns = list(frame.columns)
        self.sorted = {c: np.sort(frame[c].to_numpy(dtype=float)) for c in self.columns}
        scores = normal_scores(frame, rng)
        corr = np.corrcoef(scores, rowvar=False)
        self.chol = np.linalg.cholesky(corr + 1e-6 * np.eye(len(self.columns)))
        return self

    def sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        z = rng.standard_normal((n, len(self.columns))) @ self.chol.T
        return inverse_marginals(z, self.columns, self.sorted)


class ProfileVAE:
    """A two-layer VAE on the normal scores of the profiles (the copula's marginals, a learned dependence)."""

    def __init__(self, epochs: int, latent: int = 4, hidden: int = 32):
        self.epochs, self.latent, self.hidden = epochs, latent, hidden

    def fit(self, frame: pd.DataFrame, rng: np.random.Generator) -> "ProfileVAE":
        import torch

        self.columns = list(frame.columns)
        self.sorted = {c: np.sort(frame[c].to_numpy(dtype=float)) for c in self.columns}
        x = torch.tensor(normal_scores(frame, rng), dtype=torch.float32)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        d = x.shape[1]
        torch.manual_seed(int(rng.integers(2**31)))
        self.enc = torch.nn.Sequential(
            torch.nn.Linear(d, self.hidden), torch.nn.ReLU(), torch.nn.Linear(self.hidden, 2 * self.latent)
        )
        self.dec = torch.nn.Sequential(
            torch.nn.Linear(self.latent, self.hidden), torch.nn.ReLU(), torch.nn.Linear(self.hidden, d)
        )
        opt = torch.optim.Adam([*self.enc.parameters(), *self.dec.parameters()], lr=1e-2)
        for _ in range(self.epochs):
            mu, logvar = self.enc(x).chunk(2, dim=1)
            z = mu + torch.randn(mu.shape, generator=gen) * (0.5 * logvar).exp()
            recon = ((self.dec(z) - x) ** 2).sum(1).mean()
            kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
            opt.zero_grad()
            (recon + kl).backward()
            opt.step()
        with torch.no_grad():  # decoded prior samples are shrunk; rescale so each score keeps unit variance
            self.scale = self.dec(torch.randn(4096, self.latent, generator=gen)).std(0).clamp(min=1e-3)
        return self

    def sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        import torch

        with torch.no_grad():
            z = torch.tensor(rng.standard_normal((n, self.latent)), dtype=torch.float32)
            scores = (self.dec(z) / self.scale).numpy()
        return inverse_marginals(scores, self.columns, self.sorted)


def normal_scores(frame: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Map each column to N(0,1) scores through its ranks (ties broken at random, seeded)."""
    out = np.empty(frame.shape)
    n = len(frame)
    for j, column in enumerate(frame.columns):
        values = frame[column].to_numpy(dtype=float)
        order = np.lexsort((rng.random(n), values))
        ranks = np.empty(n)
        ranks[order] = np.arange(1, n + 1)
        out[:, j] = stats.norm.ppf(ranks / (n + 1))
    return out


def inverse_marginals(z: np.ndarray, columns: list[str], sorted_values: dict[str, np.ndarray]) -> pd.DataFrame:
    """Map normal scores back through each column's empirical quantiles (discrete columns stay on real
    values)."""
    u = stats.norm.cdf(z)
    data = {}
    for j, column in enumerate(columns):
        values = sorted_values[column]
        pos = u[:, j] * (len(values) - 1)
        if column in DISCRETE:
            data[column] = values[np.clip(np.rint(pos).astype(int), 0, len(values) - 1)]
        else:
            data[column] = np.interp(pos, np.arange(len(values)), values)
    return pd.DataFrame(data)


def sample_histories(
    profiles: pd.DataFrame,
    mean: np.ndarray,
    components: np.ndarray,
    model: CfModel,
    p: Settings,
    start: pd.Timestamp,
    before: pd.Timestamp,
    real_sets: set[frozenset],
    time_of_day: np.ndarray,
    rng: np.random.Generator,
) -> tuple[list[list[list[int]]], list[list[float]]]:
    """Draw baskets (item columns) per synthetic profile from softmax(ALS score / temperature) over top
    candidates.

    A history whose item set equals a real user's is redrawn (up to 5 times) and otherwise left empty. Baskets
    are spread over the profile's active span (whole days from `start`) at real times of day (`time_of_day`,
    fractions of a day). Returns the baskets per user and their times as day offsets.
    """
    taste_cols = [c for c in profiles.columns if c.startswith("taste_")]
    factors = mean + profiles[taste_cols].to_numpy() @ components
    scores = model.scores(factors)
    horizon = (before - start).total_seconds() / 86400
    histories, days = [], []
    for u in range(len(profiles)):
        row = profiles.iloc[u]
        top = np.argsort(-scores[u], kind="stable")[: p.candidates]
        logits = (scores[u, top] - scores[u, top].max()) / p.temperature
        prob = np.exp(logits) / np.exp(logits).sum()
        n_baskets = int(np.clip(round(row["n_baskets"]), 1, p.max_baskets))
        for _ in range(5):
            baskets = []
            for _b in range(n_baskets):
                size = int(np.clip(rng.poisson(max(row["basket_size"] - 1, 0)) + 1, 1, len(top)))
                baskets.append(sorted(int(c) for c in rng.choice(top, size=size, replace=False, p=prob)))
            if frozenset(c for b in baskets for c in b) not in real_sets:
                break
        else:
            baskets = []
        first = float(np.clip(row["first_day"], 0, horizon - 1))
        span = float(np.clip(max(row["span_days"], len(baskets) - 1), 0, horizon - first - 1))  # >= 1 day apart
        day_offsets = [np.floor(first + span * i / max(len(baskets) - 1, 1)) for i in range(len(baskets))]
        days.append([d + rng.choice(time_of_day) for d in day_offsets])
        histories.append(baskets)
    return histories, days


def generate_synthetic_users(
    history: pd.DataFrame,
    countries: pd.Series,
    p: Settings,
    cf: cf_interactions.Settings,
    seed: int,
    before: pd.Timestamp,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (users, interactions) for `p.n_users` synthetic users; ids `synthetic_users:<seed>:<n>`."""
    rng = np.random.default_rng(seed)
    model = fit_als(history, cf, seed)
    profiles, mean, components = user_profiles(history, model, countries, p.taste_dims)
    generative = GaussianCopula() if p.model == "copula" else ProfileVAE(p.vae_epochs)
    synthetic = generative.fit(profiles.reset_index(drop=True), rng).sample(p.n_users, rng)
    real_sets = {
        frozenset(model.data.matrix.indices[model.data.matrix.indptr[u] : model.data.matrix.indptr[u + 1]])
        for u in range(len(model.data.user_ids))
    }
    start = history["ts"].min().floor("D")
    basket_ts = history.groupby("basket_id", observed=True)["ts"].min()
    time_of_day = np.sort(((basket_ts - basket_ts.dt.floor("D")).dt.total_seconds() / 86400).to_numpy())
    histories, days = sample_histories(
        synthetic, mean, components, model, p, start, before, real_sets, time_of_day, rng
    )
    ids = [f"{GENERATOR}:{seed}:{i:05d}" for i in range(p.n_users)]
    country_names = np.asarray(profiles.attrs["countries"], dtype=object)
    users = synthetic[BEHAVIOUR].assign(
        user_id=ids,
        country=country_names[synthetic["country_code"].astype(int).clip(0, len(country_names) - 1)],
        parent_id=pd.NA,
    )
    unit = item_unit_stats(history)
    rows = []
    for uid, baskets, offsets in zip(ids, histories, days, strict=True):
        for b, (basket, day) in enumerate(zip(baskets, offsets, strict=True)):
            ts = (start + pd.Timedelta(days=day)).floor("min")
            rows.extend((uid, model.data.item_ids[c], ts, f"{uid}:b{b}") for c in basket)
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "basket_id"])
    stats_rows = unit.reindex(inter["item_id"])
    inter = inter.assign(
        event="purchase",
        quantity=stats_rows["quantity"].to_numpy(),
        value=(stats_rows["quantity"] * stats_rows["unit"]).round(2).to_numpy(),
        parent_id=pd.NA,
    )
    users = users[users["user_id"].isin(set(inter["user_id"]))]
    return users[["user_id", "country", *BEHAVIOUR, "parent_id"]].reset_index(drop=True), inter


def generate(ctx: Context) -> GeneratorOutput:
    """Fit the profile model on real users; synthetic users plus the purchases ALS samples for them.

    ALS uses the settings of the `cf_interactions` registry row (one ALS configuration for the loop)."""
    p, params = ctx.settings, ctx.params
    cf = load_settings(params, "cf_interactions", cf_interactions.Settings)
    history = load_history(params, ctx.train)
    users = ctx.table("users")
    countries = (
        read_table(users, "users").set_index("user_id")["country"] if users.exists() else pd.Series(dtype="string")
    )
    table, rows = generate_synthetic_users(history, countries, p, cf, params.seed, valid_cutoff(params))
    log.info("%s: %d users, %d purchases", GENERATOR, len(table), len(rows))
    return GeneratorOutput(
        rows,
        inputs=[ctx.train, users] if users.exists() else [ctx.train],
        backend=f"{p.model}+implicit-als",
        settings={"cf": cf.model_dump()},
        extra={"users": len(table), "valid_cutoff": str(valid_cutoff(params))},
        tables={"users": ("users", table)},
    )
