"""Trainable models: a text tower (frozen, top layers, LoRA or full), the search bi-encoder, the two-tower recommender.

Both models score by a dot product of two vectors, so serving can put the item side in a FAISS index.
"""

import functools
import logging
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from core.encoder import load_encoder, mean_pool
from core.errors import ShopError
from features.compute import HOUR_BUCKETS, N_TEXT_CLUSTERS, WEEKDAYS

log = logging.getLogger(__name__)


def item_texts(items: pd.DataFrame) -> list[str]:
    """One text per canonical item row: title, then category and description when the shop has them."""
    cols = [c for c in ("title", "category", "description") if c in items.columns]
    parts = items[cols].fillna("").astype(str)
    return [" | ".join(p for p in row if p.strip()) for row in parts.itertuples(index=False)]


def _layer_list(encoder: nn.Module, n_layers: int) -> nn.ModuleList:
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ShopError(f"train.trainable_layers: cannot find the {n_layers} transformer layers of this encoder")


class TextTower(nn.Module):
    """A Hugging Face encoder with mean pooling; frozen, top-`trainable_layers` layers, LoRA, or fully trained."""

    def __init__(
        self,
        model: str,
        max_length: int,
        trainable_layers: int = 0,
        lora: bool = False,
        lora_r: int = 8,
        lora_alpha: int = 16,
    ):
        super().__init__()
        self.tokenizer, encoder = load_encoder(model)
        self.max_length = max_length
        self.dim = int(encoder.config.hidden_size)
        encoder.requires_grad_(False)
        if lora:
            from peft import LoraConfig, get_peft_model

            encoder = get_peft_model(encoder, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.05))
        elif trainable_layers:
            layers = _layer_list(encoder, int(encoder.config.num_hidden_layers))
            top = layers if trainable_layers < 0 else layers[-trainable_layers:]
            top.requires_grad_(True)
            if trainable_layers < 0:
                encoder.requires_grad_(True)
        self.encoder = encoder
        self.trainable = any(p.requires_grad for p in encoder.parameters())

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean-pooled, L2-normalised text vectors."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(mean_pool(hidden, attention_mask).float(), dim=-1)

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """(n, dim) float32 unit vectors, computed in eval mode on the tower's device."""
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = {k: v.to(device) for k, v in self.tokenize(texts[start : start + batch_size]).items()}
            out[start : start + batch_size] = self(**batch).float().cpu().numpy()
        self.train(was_training)
        return out

    def export(self, folder: Path) -> None:
        """Save a plain transformers model + tokenizer (LoRA adapters merged) that `load_encoder` can read."""
        encoder = self.encoder
        if hasattr(encoder, "merge_and_unload"):
            import copy

            encoder = copy.deepcopy(encoder).merge_and_unload()
        encoder.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


# --------------------------------------------------------------------------------------------- search
class BiEncoder(nn.Module):
    """Query tower = fine-tuned text encoder; item tower = frozen cached text vectors + linear adapter, or shared."""

    def __init__(self, query_tower: TextTower, shared_items: bool, temperature: float):
        super().__init__()
        self.query_tower = query_tower
        self.shared_items = shared_items
        self.item_adapter = nn.Linear(query_tower.dim, query_tower.dim, bias=False)
        nn.init.eye_(self.item_adapter.weight)  # step 0 = the pretrained (zero-shot) model
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(1 / temperature))))

    def item_vectors(self, text_vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.item_adapter(text_vectors.float()), dim=-1)

    def query_vectors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.query_tower(input_ids, attention_mask)

    def forward(self, batch: dict) -> torch.Tensor:
        """Weighted InfoNCE of each query against its positive, in-batch, hard and sampled negatives; with
        `batch["fgm_epsilon"]` > 0 averaged with the same loss at adversarially moved query embeddings (FGM)."""
        q = self.query_vectors(batch["q_input_ids"], batch["q_attention_mask"])
        if self.shared_items:
            cand_text = self.query_tower(batch["c_input_ids"], batch["c_attention_mask"])
        else:
            cand_text = batch["cand_vectors"]
        cand = self.item_vectors(cand_text)
        target = batch["target"]  # (B, C) distribution over candidates (one-hot unless mixed up)
        if batch.get("mixup") is not None:
            q, target = batch["mixup"](q, target)
        epsilon = batch.get("fgm_epsilon", 0.0) if torch.is_grad_enabled() else 0.0
        delta = torch.zeros_like(q, requires_grad=epsilon > 0)  # a leaf, so FGM works with a frozen tower too
        loss = self._contrastive(q + delta, cand, target, batch)
        if epsilon > 0:  # Miyato et al.'s fast gradient method: each query moved `epsilon` up its loss gradient
            (grad,) = torch.autograd.grad(loss, delta, retain_graph=True)
            moved = F.normalize(q + epsilon * F.normalize(grad, dim=-1), dim=-1)
            loss = (loss + self._contrastive(moved, cand, target, batch)) / 2
        return loss

    def _contrastive(self, q: torch.Tensor, cand: torch.Tensor, target: torch.Tensor, batch: dict) -> torch.Tensor:
        logits = self.log_scale.exp().clamp(max=100) * (q @ cand.T)
        logits = logits.masked_fill(batch["cand_mask"] & (target == 0), float("-inf"))
        loss = -(target * F.log_softmax(logits.float(), dim=-1).clamp(min=-1e4)).sum(1)
        return (loss * batch["weight"]).sum() / batch["weight"].sum()


# --------------------------------------------------------------------------------------------- recommendation
ITEM_FEATURES = ["buyers_30d", "buyers_all", "days_since_first", "days_since_last", "log_price"]
REPEAT_FEATURES = 3  # log1p(recency rank), log1p(times bought), log1p(distinct items in history)
# Feast `user_stats` features (features/definitions.py) the user tower reads; the first ones enter as log1p.
USER_CONTEXT_LOG = [
    "frequency",
    "recency_days",
    "monetary",
    "n_lines",
    "avg_basket_size",
    "avg_basket_value",
    "days_since_first_purchase",
]
USER_CONTEXT = [
    *USER_CONTEXT_LOG,
    *[f"share_{b}" for b in HOUR_BUCKETS],
    *[f"share_{d}" for d in WEEKDAYS],
    *[f"share_cluster_{k}" for k in range(N_TEXT_CLUSTERS)],
    "top_category_share",
]


def user_context_inputs(frame: pd.DataFrame | None, n: int) -> np.ndarray:
    """(n, len(USER_CONTEXT) + 1) user-tower inputs from `n` row-aligned Feast `user_stats` rows.

    Counts, money and days enter as log1p, shares as they are; the last column is 1 where the user has no
    snapshot (unknown or synthetic users, Feast's default row with frequency 0, or `frame` None).
    """
    out = np.zeros((n, len(USER_CONTEXT) + 1), dtype=np.float32)
    if frame is None:
        out[:, -1] = 1.0
        return out
    if len(frame) != n:
        raise ShopError(f"user features: {len(frame)} rows for {n} users")
    columns = []  # plain numpy per column: pandas-level conversions would cost most of a serving request
    for name in USER_CONTEXT:
        try:
            columns.append(
                frame[name].to_numpy(dtype="float64", na_value=np.nan) if name in frame.columns else np.full(n, np.nan)
            )
        except (TypeError, ValueError):
            raise ShopError(f"user features: column '{name}' is not numeric") from None
    values = np.column_stack(columns)
    logs = len(USER_CONTEXT_LOG)
    values[:, :logs] = np.log1p(np.clip(values[:, :logs], 0, None))
    missing = ~(np.nan_to_num(values[:, 0]) > 0)  # frequency: every stored snapshot has at least one basket
    out[:, :-1] = np.where(missing[:, None], 0.0, np.nan_to_num(values))
    out[:, -1] = missing
    return out


def item_context_features(interactions: pd.DataFrame, items: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """Item context at time `at` from interactions strictly before it: recent/all-time buyers, age, price.

    Buyers are identified users, or the basket for guest rows. Returns one row per item of `items` (index
    item_id, columns ITEM_FEATURES, NaN where unknown).
    """
    return ContextFeatures(interactions).at(items, at)


class ContextFeatures:
    """Item context for many points in time from one interactions table (deduplicated once, then sliced)."""

    def __init__(self, interactions: pd.DataFrame):
        who = (
            interactions["user_id"]
            .astype(object)
            .where(interactions["user_id"].notna(), "b:" + interactions["basket_id"].astype(str))
        )
        frame = pd.DataFrame(
            {
                "item": interactions["item_id"].astype(str).to_numpy(),
                "who": pd.factorize(who)[0],
                "ts": interactions["ts"].to_numpy(dtype="datetime64[ns]").astype(np.int64),
            }
        )
        frame = frame.sort_values("ts", kind="stable").drop_duplicates(["item", "who", "ts"])
        self.item_codes, self.items = pd.factorize(frame["item"])
        self.who, self.ts = frame["who"].to_numpy(), frame["ts"].to_numpy()

    def at(self, items: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
        at_ns = pd.Timestamp(at).tz_convert("UTC").tz_localize(None).value
        end = np.searchsorted(self.ts, at_ns, side="left")
        start = np.searchsorted(self.ts, at_ns - 30 * 86400 * 10**9, side="left")
        n = len(self.items)
        day = 86400 * 1e9

        def buyers(lo: int) -> np.ndarray:
            pairs = np.unique(self.item_codes[lo:end].astype(np.int64) * (1 << 32) + self.who[lo:end])
            return np.bincount((pairs >> 32).astype(np.int64), minlength=n).astype(float)

        first = np.full(n, np.nan)
        last = np.full(n, np.nan)
        codes, ts = self.item_codes[:end], self.ts[:end].astype(float)
        if end:
            np.fmin.at(first, codes, ts)
            np.fmax.at(last, codes, ts)
        table = pd.DataFrame(
            {
                "buyers_30d": np.log1p(buyers(start)),
                "buyers_all": np.log1p(buyers(0)),
                "days_since_first": np.log1p((at_ns - first) / day),
                "days_since_last": np.log1p((at_ns - last) / day),
            },
            index=self.items,
        )
        seen = table["buyers_all"] > 0
        table.loc[~seen, ["days_since_first", "days_since_last"]] = np.nan
        ids = pd.Index(items["item_id"].astype(str), name="item_id")
        out = table.reindex(ids)
        out[["buyers_30d", "buyers_all"]] = out[["buyers_30d", "buyers_all"]].fillna(0.0)
        price = pd.to_numeric(items["price"], errors="coerce").to_numpy(float) if "price" in items else np.nan
        out["log_price"] = np.log1p(np.clip(price, 0, None))
        return out[ITEM_FEATURES]


def bucketize(features: pd.DataFrame, edges: dict[str, list[float]]) -> np.ndarray:
    """Quantile bucket ids per feature, offset so that each (feature, bucket) has its own id: (n, len(edges)) int64.

    Each feature gets len(edges)+2 ids: its buckets plus one 'unknown' (NaN) bucket.
    """
    out, offset = [], 0
    for name in ITEM_FEATURES:
        values = features[name].to_numpy(float)
        cuts = np.asarray(edges[name], dtype=float)
        idx = np.where(np.isnan(values), len(cuts) + 1, np.searchsorted(cuts, np.nan_to_num(values), "right"))
        out.append(idx + offset)
        offset += len(cuts) + 2
    return np.stack(out, axis=1).astype(np.int64)


def n_buckets(edges: dict[str, list[float]]) -> int:
    return sum(len(edges[name]) + 2 for name in ITEM_FEATURES)


def bucket_edges(features: pd.DataFrame, buckets: int) -> dict[str, list[float]]:
    """Quantile cut points per feature (plain floats, so they save as JSON)."""
    qs = np.linspace(0, 1, buckets + 1)[1:-1]
    return {
        name: sorted({float(v) for v in np.nanquantile(features[name].to_numpy(float), qs)})
        if features[name].notna().any()
        else []
        for name in ITEM_FEATURES
    }


@functools.lru_cache(maxsize=200_000)
def _item_code(item: str, dims: int) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(item.encode()))
    return rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=dims) / np.float32(np.sqrt(dims))


def item_codes(item_ids: list[str], dims: int) -> np.ndarray:
    """Fixed random unit codes per item id (seeded by a hash of the id): near-orthogonal, defined for any id.

    They carry the repeat/recency path through a dot product: user side = weighted sum of past items' codes.
    """
    if not item_ids:
        return np.zeros((0, dims), dtype=np.float32)
    return np.stack([_item_code(str(item), dims) for item in item_ids])


def history_state(items: list[str]) -> OrderedDict:
    """Distinct items of a chronological history, least recent first, each with its purchase count."""
    state: OrderedDict = OrderedDict()
    for item in items:
        state[item] = state.pop(item, 0) + 1
    return state


def history_inputs(state: dict, history_len: int, repeat_history: int) -> tuple[list, list, np.ndarray]:
    """(recent distinct items for the transformer, repeat items, their REPEAT_FEATURES), most recent first."""
    recent = []
    for item in reversed(state):
        recent.append(item)
        if len(recent) >= max(history_len, repeat_history):
            break
    rep = recent[:repeat_history]
    feats = np.empty((len(rep), REPEAT_FEATURES), dtype=np.float32)
    feats[:, 0] = np.log1p(np.arange(len(rep)))
    feats[:, 1] = np.log1p([state[item] for item in rep])
    feats[:, 2] = np.log1p(len(state))
    return recent[:history_len], rep, feats


class TwoTower(nn.Module):
    """Item tower: frozen text vector -> MLP, + item context buckets; user tower: transformer over recent items,
    whose first token carries the user's features (history counts and, when configured, Feast user context).

    score(user, item) = <user_vec, item_vec> + <repeat_vec, code(item)>: the second term is a learned
    repeat/recency score (weights from recency rank and purchase count) over the user's own past items.
    """

    def __init__(
        self,
        text_dim: int,
        n_item_feats: int,
        dim: int,
        history_len: int,
        layers: int,
        heads: int,
        dropout: float,
        repeat_dims: int,
        n_user_feats: int,
        temperature: float,
    ):
        super().__init__()
        self.text_mlp = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.feat_emb = nn.Embedding(n_item_feats, dim)
        nn.init.normal_(self.feat_emb.weight, std=0.02)
        self.pos = nn.Embedding(history_len + 1, dim)
        self.user_token = nn.Parameter(torch.zeros(dim))
        self.user_feat_proj = nn.Linear(n_user_feats, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else None
        self.user_out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.repeat_dims = repeat_dims
        self.repeat_mlp = nn.Sequential(nn.Linear(REPEAT_FEATURES, 32), nn.GELU(), nn.Linear(32, 1))
        nn.init.constant_(self.repeat_mlp[2].bias, 2.0)  # start near "every past item gets a boost"
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(1 / temperature))))

    def item_vectors(self, text: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        """(n, dim) content vectors from frozen text vectors (n, T) and context bucket ids (n, G)."""
        return self.text_mlp(text) + self.feat_emb(buckets).sum(-2)

    def user_vectors(self, hist_vecs: torch.Tensor, hist_mask: torch.Tensor, user_feats: torch.Tensor) -> torch.Tensor:
        """(B, dim) from the recent items' vectors (B, L, dim; most recent first), a padding mask and features."""
        b, length, _ = hist_vecs.shape
        tokens = hist_vecs + self.pos.weight[1 : length + 1]
        head = (self.user_token + self.pos.weight[0] + self.user_feat_proj(user_feats)).unsqueeze(1)
        x = torch.cat([head, tokens], 1)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x.device), ~hist_mask], 1)
        if self.transformer is not None:
            x = self.transformer(x, src_key_padding_mask=pad)
        return self.user_out(x[:, 0]) * self.log_scale.exp().clamp(max=100)

    def repeat_weights(self, rep_feats: torch.Tensor, rep_mask: torch.Tensor) -> torch.Tensor:
        """(B, R) learned non-negative scores of the user's own past items (0 at padding)."""
        return F.softplus(self.repeat_mlp(rep_feats).squeeze(-1)) * rep_mask

    def forward(self, batch: dict) -> torch.Tensor:
        """Softmax loss of each basket's items over the candidates, given the user's history at that time.

        Item context is point-in-time: `onehot` (W, C, n_buckets) holds each snapshot's context buckets and
        `week` (B,) picks the snapshot of each example; no (B, C, dim) tensor is ever built.
        """
        text = self.text_mlp(batch["cand_text"])  # (C, dim)
        week, onehot = batch["week"], batch["onehot"]  # onehot: (W, C, n_buckets) context buckets per snapshot
        hist = text[batch["hist_idx"]] + onehot[week.unsqueeze(1), batch["hist_idx"]] @ self.feat_emb.weight
        users = self.user_vectors(hist, batch["hist_mask"], batch["user_feats"])
        target = torch.zeros(users.shape[0], text.shape[0], device=users.device)
        target.scatter_add_(1, batch["target_idx"], batch["target_mask"])
        target = target / target.sum(1, keepdim=True).clamp(min=1e-9)  # each basket: uniform over its items
        affinity = users @ self.feat_emb.weight.T  # (B, n_buckets): the user's liking of each context bucket
        context = users.new_zeros(users.shape[0], text.shape[0])
        for w in week.unique():  # one (C, n_buckets) matrix per snapshot present in the batch
            rows = (week == w).nonzero().squeeze(1)
            context = context.index_copy(0, rows, affinity[rows] @ onehot[w].T)
        logits = users @ text.T + context
        if self.repeat_dims:
            rep = self.repeat_weights(batch["rep_feats"], batch["rep_mask"])
            logits = logits.scatter_add(1, batch["rep_idx"], rep.to(logits.dtype))
        if batch.get("mixup") is not None:  # mix whole examples: score vectors and target distributions
            logits, target = batch["mixup"](logits, target)
        loss = -(target * F.log_softmax(logits.float(), dim=-1)).sum(1)
        return (loss * batch["weight"]).sum() / batch["weight"].sum()


def build_two_tower(config: dict) -> TwoTower:
    """A TwoTower with the sizes recorded in a model config."""
    return TwoTower(
        config["text_dim"],
        n_buckets(config["edges"]),
        config["dim"],
        config["history_len"],
        config["user_layers"],
        config["user_heads"],
        config["dropout"],
        config["repeat_dims"],
        config["n_user_feats"],
        config["temperature"],
    )
