"""Generator 6: CL4SRec-style augmented views (crop, mask, reorder, substitute) of real users' basket
sequences.

CL4SRec (Xie et al., 2022) trains sequential recommenders on randomly cropped, masked and reordered views of
each user's item sequence; CoSeRec adds substitution with correlated items. Here a sequence is a user's
baskets in time order, one operation is drawn per view, and every view is written as synthetic baskets of the
same real user with `sequence_id` = `<user>#<generator>:<view>` so a sequential model can read each view as
its own sequence.
"""

import logging
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from core.io import read_table
from pipelines.augment.manifest import Context, GeneratorOutput
from pipelines.augment.retail_history import encode_titles, item_unit_stats, load_history, valid_cutoff

log = logging.getLogger(__name__)
GENERATOR = "sequence_aug"

Basket = tuple[str, pd.Timestamp, list[str]]  # (basket_id, ts, item ids)


class Settings(BaseModel):
    """Generator 6: CL4SRec-style views (crop, mask, reorder, substitute) of real users" basket sequences."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    views_per_user: int = Field(ge=0)
    operations: list[Literal["crop", "mask", "reorder", "substitute"]]
    max_baskets: int = Field(ge=2, description="a view is built from the user's last this-many baskets")
    min_baskets: int = Field(ge=1, description="users with fewer baskets get no views")
    crop_ratio: float = Field(gt=0, le=1, description="share of baskets kept (one contiguous run)")
    mask_ratio: float = Field(ge=0, lt=1, description="share of items dropped from each basket")
    reorder_ratio: float = Field(ge=0, le=1, description="share of baskets in the shuffled span")
    substitute_ratio: float = Field(ge=0, le=1, description="share of items replaced by a similar item")
    similarity: Literal["text", "copurchase"]
    neighbours: int = Field(ge=1, description="similar items a substitute is drawn from")


def similar_items_by_text(item_ids: np.ndarray, vectors: np.ndarray, k: int) -> dict[str, list[str]]:
    """Return, per item id, its `k` nearest items by title embedding (cosine of the unit `vectors`)."""
    return _top_neighbours(vectors @ vectors.T, item_ids, k)


def similar_items_by_copurchase(history: pd.DataFrame, item_ids: np.ndarray, k: int) -> dict[str, list[str]]:
    """Return, per item id, its `k` items most often bought in the same basket (cosine-normalised counts)."""
    col = pd.Index(item_ids)
    baskets = history.drop_duplicates(["basket_id", "item_id"])
    b_codes, _ = pd.factorize(baskets["basket_id"])
    i_codes = col.get_indexer(baskets["item_id"])
    keep = i_codes >= 0
    m = sp.csr_matrix(
        (np.ones(keep.sum(), np.float32), (b_codes[keep], i_codes[keep])), shape=(b_codes.max() + 1, len(col))
    )
    co = (m.T @ m).toarray()
    norm = np.sqrt(np.diag(co)).clip(min=1e-9)
    return _top_neighbours(co / norm[:, None] / norm[None, :], item_ids, k)


def _top_neighbours(sim: np.ndarray, item_ids: np.ndarray, k: int) -> dict[str, list[str]]:
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(item_ids) - 1)
    top = np.argpartition(-sim, k, axis=1)[:, :k]
    order = np.take_along_axis(-sim, top, axis=1).argsort(axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return {
        item_ids[i]: [item_ids[j] for j in row if np.isfinite(sim[i, j]) and sim[i, j] > 0] for i, row in enumerate(top)
    }


def augment_view(
    baskets: list[Basket],
    op: str,
    p: Settings,
    neighbours: dict[str, list[str]],
    rng: np.random.Generator,
) -> list[tuple[str, pd.Timestamp, list[str]]] | None:
    """Apply one CL4SRec operation to a basket sequence; return (parent basket, ts, items) triples or None if
    unchanged.

    crop keeps a contiguous run of baskets (always fewer than all); mask drops a share of each basket's items
    (never a whole basket); reorder shuffles which basket sits at which time inside a span; substitute swaps a
    share of items for a similar item not already in that basket.
    """
    n = len(baskets)
    if op == "crop":
        keep = min(max(1, round(p.crop_ratio * n)), n - 1)
        start = int(rng.integers(0, n - keep + 1))
        view = [(b, ts, items) for b, ts, items in baskets[start : start + keep]]
    elif op == "mask":
        view = []
        for b, ts, items in baskets:
            drop = int(np.floor(p.mask_ratio * len(items)))
            kept = sorted(rng.choice(len(items), size=len(items) - drop, replace=False)) if drop else range(len(items))
            view.append((b, ts, [items[i] for i in kept]))
    elif op == "reorder":
        span = min(n, max(2, round(p.reorder_ratio * n)))
        start = int(rng.integers(0, n - span + 1))
        perm = start + rng.permutation(span)
        order = list(range(start)) + list(perm) + list(range(start + span, n))
        view = [(baskets[src][0], baskets[slot][1], baskets[src][2]) for slot, src in enumerate(order)]
    elif op == "substitute":
        view = []
        for b, ts, items in baskets:
            new = list(items)
            for i, item in enumerate(items):
                options = [x for x in neighbours.get(item, []) if x not in new]
                if options and rng.random() < p.substitute_ratio:
                    new[i] = options[int(rng.integers(0, len(options)))]
            view.append((b, ts, new))
    else:  # guarded by the params Literal; kept for callers passing plain strings
        raise ValueError(f"unknown sequence operation {op!r}")
    original = [(ts, sorted(items)) for _, ts, items in baskets]
    return None if [(ts, sorted(items)) for _, ts, items in view] == original else view


def generate_sequence_views(
    history: pd.DataFrame, p: Settings, neighbours: dict[str, list[str]], seed: int
) -> pd.DataFrame:
    """Return synthetic canonical interactions: `views_per_user` augmented views of each eligible user's last
    baskets.

    Views identical to the real sequence are skipped; `parent_id` = the real basket each synthetic basket came
    from.
    """
    rng = np.random.default_rng(seed)
    stats = item_unit_stats(history)
    qty = history.groupby(["basket_id", "item_id"], observed=True)["quantity"].sum()
    basket_rows = (
        history.groupby(["user_id", "basket_id"], observed=True, sort=False)
        .agg(ts=("ts", "min"), items=("item_id", list))
        .reset_index()
        .sort_values(["user_id", "ts", "basket_id"], kind="stable")
    )
    records = []
    for user, group in basket_rows.groupby("user_id", observed=True, sort=True):
        if len(group) < p.min_baskets or p.views_per_user == 0:
            continue
        baskets = list(zip(group["basket_id"], group["ts"], group["items"], strict=True))[-p.max_baskets :]
        for v in range(p.views_per_user):
            op = p.operations[int(rng.integers(0, len(p.operations)))]
            view = augment_view(baskets, op, p, neighbours, rng)
            if view is None:
                continue
            sequence = f"{user}#{GENERATOR}:{v}"
            for parent, ts, items in view:
                for item in items:
                    records.append((user, item, ts, parent, op, sequence))
    out = pd.DataFrame(records, columns=["user_id", "item_id", "ts", "parent_id", "augmentation", "sequence_id"])
    if out.empty:
        return out
    real_qty = qty.reindex(pd.MultiIndex.from_arrays([out["parent_id"], out["item_id"]])).to_numpy()
    item_qty = stats["quantity"].reindex(out["item_id"]).to_numpy()
    quantity = np.where(np.isnan(real_qty.astype(float)), item_qty, real_qty).astype("int64")
    unit = stats["unit"].reindex(out["item_id"]).to_numpy()
    view_no = out["sequence_id"].str.rsplit(":", n=1).str[1]
    return out.assign(
        event="purchase",
        quantity=quantity,
        value=np.round(quantity * unit, 2),
        basket_id=GENERATOR + ":" + view_no + ":" + out["parent_id"].astype(str),
    )


def generate(ctx: Context) -> GeneratorOutput:
    """CL4SRec-style augmented views of each real user's recent basket sequence."""
    p, params = ctx.settings, ctx.params
    history = load_history(params, ctx.train)
    item_ids = np.sort(history["item_id"].astype(str).unique())
    if p.similarity == "text":  # substitutes come only from items in the leakage-safe history
        catalogue = read_table(ctx.table("items"), "items").sort_values("item_id", kind="stable")
        catalogue = catalogue.reset_index(drop=True)
        vectors = encode_titles(catalogue, params.encoder)
        ids = catalogue["item_id"].astype(str).to_numpy()
        known = np.isin(ids, item_ids)
        neighbours = similar_items_by_text(ids[known], vectors[known], p.neighbours)
    else:
        neighbours = similar_items_by_copurchase(load_history(params, ctx.train, guests=True), item_ids, p.neighbours)
    rows = generate_sequence_views(history, p, neighbours, params.seed)
    log.info("%s: %d rows in %d views", GENERATOR, len(rows), rows["sequence_id"].nunique())
    return GeneratorOutput(
        rows,
        inputs=[ctx.train, ctx.table("items")] if p.similarity == "text" else [ctx.train],
        backend=f"cl4srec-{p.similarity}",
        model_id=params.encoder.model if p.similarity == "text" else None,
        extra={
            "valid_cutoff": str(valid_cutoff(params)),
            "views": int(rows["sequence_id"].nunique()),
            "operations": rows.groupby("augmentation")["sequence_id"].nunique().to_dict(),
        },
    )
