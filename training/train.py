"""The train stage: one model (a task's fused variant) trained, saved to its folder, logged and registered in MLflow.

Run: `python -m training.train --task retail --variant aug --data data/fused/retail/aug --splits
data/splits/retail --canonical data/canonical/retail --out models/retail/aug --metrics metrics/train/retail-aug.json`
(dvc.yaml runs `train@<task>-<variant>` for each of `experiments.models`), or under torchrun for DDP. Early
stopping and model selection use the real validation split only; the test split is never read here.
"""

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import typer

import features
from core import cli
from core.io import read_table, write_json
from core.params import Params, RerankParams, RetailTrainParams, SearchHybridParams, SearchTrainParams
from core.paths import shared_root
from core.tasks import get_task
from training import tracking
from training.baselines import MiniLMRetriever
from training.data import (
    RetailExamples,
    SearchPairs,
    items_table,
    retail_examples,
    search_pairs,
    skipped_reason,
    training_table,
    user_context,
    valid_cutoff,
)
from training.hybrid import tune_weight
from training.lexical import LexicalIndex
from training.loop import LoopConfig, LoopResult, train_loop
from training.metrics import binary_metrics, ndcg_at_k
from training.mixup import mixup
from training.model_store import save_model
from training.models import USER_CONTEXT, BiEncoder, TextTower, build_two_tower, item_texts, user_context_inputs
from training.repeat_explore import RepeatExploreModel, train_repeat_explore
from training.rerank import examples, sample_queries, train_reranker, valid_ndcg
from training.serving_api import FrozenTextVectors, RecommenderModel, SearchModel, top_k

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainInputs:
    """Where one model's training reads: its fused variant folder (train.parquet, items.parquet), the task's
    real splits (valid.parquet, split.json) and canonical tables."""

    data: Path
    splits: Path
    canonical: Path

    def table_path(self) -> Path:
        """The file the rows come from: the fused set, else the real training split."""
        fused = self.data / "train.parquet"
        return fused if fused.exists() else self.splits / "train.parquet"


def _mixup_hook(alpha: float, seed: int, epoch: int, index: int):
    """Embedding mixup from training.mixup, seeded per batch; None when alpha is 0."""
    if alpha <= 0:
        return None
    generator = torch.Generator().manual_seed(hash((seed, epoch, index)) % 2**63)

    def mix(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = mixup(x, y, alpha, generator)
        return out.embeddings, out.targets

    return mix


def _pad(rows: list[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (len(rows), width) long tensor and its mask (width shrinks to the longest row)."""
    width = max(1, min(width, max((len(r) for r in rows), default=1)))
    out = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for i, row in enumerate(rows):
        n = min(len(row), width)
        out[i, :n], mask[i, :n] = row[:n], True
    return torch.from_numpy(out), torch.from_numpy(mask)


def _batches(n: int, size: int, seed: int, epoch: int) -> list[np.ndarray]:
    order = np.random.default_rng([seed, epoch]).permutation(n)
    count = max(1, n // size)  # drop the last partial batch (same shapes on every rank)
    return [order[i * size : (i + 1) * size] for i in range(count)]


# --------------------------------------------------------------------------------------------- retail
class RetailJob:
    """Two-tower training on basket examples; validation = NDCG@10 on the real valid split via the serving path."""

    def __init__(
        self,
        ex: RetailExamples,
        cfg: RetailTrainParams,
        config: dict,
        items: pd.DataFrame,
        text_vectors: np.ndarray,
        item_text: FrozenTextVectors,
        valid: tuple | None,
        seed: int,
        feature_store=None,
    ):
        self.ex, self.cfg, self.config, self.items, self.seed = ex, cfg, config, items, seed
        self.text_vectors, self.item_text, self.valid = text_vectors, item_text, valid
        self.feature_store = feature_store
        self.valid_context = None
        if valid is not None and feature_store is not None:
            users = sorted(valid[1]["user_id"].astype(str).unique())
            self.valid_context = user_context(users, valid[0]["ts"].max() + pd.Timedelta(seconds=1), feature_store)
        self.model = build_two_tower(config)
        self.cand_text = torch.from_numpy(text_vectors)
        onehot = np.zeros((*ex.buckets.shape[:2], self.model.feat_emb.num_embeddings), dtype=np.float32)
        np.put_along_axis(onehot, ex.buckets, 1.0, axis=2)
        self.onehot = torch.from_numpy(onehot)

    def plans(self, epoch: int) -> list[np.ndarray]:
        return _batches(len(self.ex.week), self.cfg.batch_size, self.seed, epoch)

    def collate(self, plan: np.ndarray, epoch: int, index: int) -> dict:
        ex = self.ex
        hist_idx, hist_mask = _pad([ex.hist[i] for i in plan], self.cfg.history_len)
        rep_idx, rep_mask = _pad([ex.rep[i] for i in plan], self.cfg.repeat_history)
        feats = np.zeros((*rep_idx.shape, 3), dtype=np.float32)
        for row, i in enumerate(plan):
            f = ex.rep_feats[i][: rep_idx.shape[1]]
            feats[row, : len(f)] = f
        target_idx, target_mask = _pad([ex.targets[i] for i in plan], self.cfg.max_targets)
        return {
            "cand_text": self.cand_text,
            "onehot": self.onehot,
            "week": torch.from_numpy(ex.week[plan]),
            "hist_idx": hist_idx,
            "hist_mask": hist_mask,
            "rep_idx": rep_idx,
            "rep_mask": rep_mask.float(),
            "rep_feats": torch.from_numpy(feats),
            "user_feats": torch.from_numpy(ex.user_feats[plan]),
            "target_idx": target_idx,
            "target_mask": target_mask.float(),
            "weight": torch.from_numpy(ex.weight[plan]),
            "mixup": _mixup_hook(self.cfg.mixup_alpha, self.seed, epoch, index),
        }

    def wrap(self, net: torch.nn.Module) -> RecommenderModel:
        model = RecommenderModel(net, self.items, self.config, self.item_text, self.text_vectors, self.ex.buckets[-1])
        model.feature_store = self.feature_store
        return model

    def validate(self, net: torch.nn.Module) -> float:
        if self.valid is None:
            return 0.0
        history, targets = self.valid
        users = sorted(targets["user_id"].astype(str).unique())
        ranked = self.wrap(net).recommend(history, users, 10, self.valid_context)
        wanted = targets.groupby(targets["user_id"].astype(str))["item_id"].agg(lambda s: set(s.astype(str)))
        return float(np.mean([binary_metrics(ranked[u], wanted[u], 10, [10])["ndcg@10"] for u in users]))


def build_retail_job(params: Params, inputs: TrainInputs, variant: str) -> tuple[RetailJob, Path]:
    cfg = params.train.retail
    interactions, path = training_table(inputs.data, inputs.splits, "retail", variant)
    items = items_table(inputs.data, inputs.canonical)
    before = valid_cutoff(inputs.splits)
    ex = retail_examples(
        interactions,
        items,
        before,
        cfg.history_len,
        cfg.repeat_history,
        cfg.feature_buckets,
        cfg.max_targets,
        params.seed,
    )
    store = None
    if cfg.user_context:  # Feast user_stats as of each basket: point-in-time, so never from the future
        store = features.open_store(params.features.store_config)
        context = user_context(ex.users, ex.ts, store)
        context_inputs = user_context_inputs(context, len(ex.users))
        ex.user_feats = np.concatenate([ex.user_feats, context_inputs], axis=1)
        found = int((context_inputs[:, -1] == 0).sum())
        log.info("retail: Feast user context for %d of %d examples", found, len(ex.users))
    table = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates("item_id").set_index("item_id")
    cat = table.reindex(ex.item_ids).reset_index()
    cat[["title", "description", "category"]] = cat[["title", "description", "category"]].fillna("")
    item_text = FrozenTextVectors(cfg.model or params.encoder.model, params.encoder.max_length, cache_dir(params))
    text_vectors = item_text(item_texts(cat))
    split_train = read_table(inputs.splits / "train.parquet", "interactions")
    valid_targets = read_table(inputs.splits / "valid.parquet", "interactions")
    history = split_train[split_train["ts"] < before]
    known_users = set(history["user_id"].dropna().astype(str))
    valid_targets = valid_targets[valid_targets["user_id"].astype(str).isin(known_users)]
    config = {
        "name": f"two_tower_{variant}",
        "text_dim": int(text_vectors.shape[1]),
        "edges": ex.edges,
        "dim": cfg.dim,
        "history_len": cfg.history_len,
        "user_layers": cfg.user_layers,
        "user_heads": cfg.user_heads,
        "dropout": cfg.dropout,
        "repeat_dims": cfg.repeat_dims,
        "repeat_history": cfg.repeat_history,
        "n_user_feats": int(ex.user_feats.shape[1]),
        "temperature": cfg.temperature,
        "item_max_length": params.encoder.max_length,
        "encoder": cfg.model or params.encoder.model,
        "trained_before": str(before),
        "variant": variant,
        "user_context": list(USER_CONTEXT) if cfg.user_context else [],
    }
    log.info("retail: %d examples over %d items from %s", len(ex.week), len(ex.item_ids), path)
    job = RetailJob(ex, cfg, config, cat, text_vectors, item_text, (history, valid_targets), params.seed, store)
    return job, path


# --------------------------------------------------------------------------------------------- search
class SearchJob:
    """Bi-encoder training on (query, item) pairs; validation = catalogue NDCG@10 on the real valid queries."""

    def __init__(
        self,
        pairs: SearchPairs,
        cfg: SearchTrainParams,
        config: dict,
        items: pd.DataFrame,
        text_vectors: np.ndarray,
        item_text: FrozenTextVectors,
        valid: pd.DataFrame | None,
        seed: int,
    ):
        self.pairs, self.cfg, self.config, self.items, self.seed = pairs, cfg, config, items, seed
        self.text_vectors, self.item_text, self.valid = torch.from_numpy(text_vectors), item_text, valid
        tower = TextTower(
            cfg.model or config["encoder"], cfg.max_seq_len, cfg.trainable_layers, cfg.lora, cfg.lora_r, cfg.lora_alpha
        )
        self.model = BiEncoder(tower, cfg.item_tower == "shared", cfg.temperature)
        self.texts = item_texts(items)

    def plans(self, epoch: int) -> list[np.ndarray]:
        return _batches(len(self.pairs.pos_item), self.cfg.batch_size, self.seed, epoch)

    def collate(self, plan: np.ndarray, epoch: int, index: int) -> dict:
        p, cfg = self.pairs, self.cfg
        rng = np.random.default_rng([self.seed, epoch, index])
        cand = list(p.pos_item[plan])
        for key in p.query_key[plan]:
            negs = p.negatives.get(int(key), [])
            if negs and cfg.hard_negatives:
                cand += rng.choice(negs, min(cfg.hard_negatives, len(negs)), replace=False).tolist()
        cand += rng.integers(0, len(self.texts), cfg.sampled_negatives).tolist()
        cand = np.asarray(cand)
        mask = np.stack([np.isin(cand, list(p.positives[int(k)])) for k in p.query_key[plan]])
        target = torch.zeros(len(plan), len(cand))
        target[torch.arange(len(plan)), torch.arange(len(plan))] = 1.0
        q = self.model.query_tower.tokenize([p.queries[i] for i in plan])
        batch = {
            "q_input_ids": q["input_ids"],
            "q_attention_mask": q["attention_mask"],
            "cand_mask": torch.from_numpy(mask),
            "target": target,
            "weight": torch.from_numpy(p.weight[plan]),
            "mixup": _mixup_hook(cfg.mixup_alpha, self.seed, epoch, index),
            "fgm_epsilon": cfg.fgm_epsilon,
        }
        if cfg.item_tower == "shared":
            c = self.model.query_tower.tokenize([self.texts[i] for i in cand])
            batch.update(c_input_ids=c["input_ids"], c_attention_mask=c["attention_mask"])
        else:
            batch["cand_vectors"] = self.text_vectors[torch.from_numpy(cand)]
        return batch

    def wrap(self, net: torch.nn.Module) -> SearchModel:
        model = SearchModel(net, self.items, self.config, None if self.cfg.item_tower == "shared" else self.item_text)
        return model

    def validate(self, net: torch.nn.Module) -> float:
        if self.valid is None:
            return 0.0
        device = net.item_adapter.weight.device
        if self.cfg.item_tower == "shared":
            raw = torch.from_numpy(net.query_tower.encode(self.texts))
        else:
            raw = self.text_vectors
        items = net.item_vectors(raw.to(device)).cpu().numpy()
        groups = list(self.valid.groupby("query", sort=True))
        q = net.query_tower.encode([text for text, _ in groups])
        top = top_k(q @ items.T, 10)
        ids = self.items["item_id"].astype(str).to_numpy()
        # nanmean: a query whose judged items all have relevance 0 has no ideal DCG (the harness skips it too)
        return float(
            np.nanmean(
                [
                    ndcg_at_k(list(ids[row]), dict(zip(g["item_id"].astype(str), g["relevance"], strict=True)), 10)
                    for row, (_, g) in zip(top, groups, strict=True)
                ]
            )
        )


def cache_dir(params: Params) -> Path:
    """The embedding cache `train.cache_dir` (relative: under core.paths.shared_root)."""
    return shared_root() / params.train.cache_dir


def frozen_item_vectors(params: Params, items: pd.DataFrame, item_text: FrozenTextVectors) -> np.ndarray:
    """Frozen item-text vectors; titles-only catalogues reuse the zero-shot baseline's cache (same encoder)."""
    texts = item_texts(items)
    if params.train.search.model in (None, params.encoder.model) and texts == items["title"].astype(str).tolist():
        zero_shot = MiniLMRetriever(
            params.encoder.model, params.encoder.max_length, params.encoder.batch_size, cache_dir(params)
        )
        zero_shot.fit(pd.DataFrame(), items)
        item_text.remember(texts, zero_shot.item_vectors)
    return item_text(texts)


def build_search_job(params: Params, inputs: TrainInputs, variant: str) -> tuple[SearchJob, Path]:
    cfg = params.train.search
    queries, path = training_table(inputs.data, inputs.splits, "search", variant)
    items = items_table(inputs.data, inputs.canonical)
    items = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates("item_id").reset_index(drop=True)
    index = {item: i for i, item in enumerate(items["item_id"])}
    pairs = search_pairs(queries, index, cfg.positive_threshold, cfg.negative_threshold)
    encoder = cfg.model or params.encoder.model
    item_text = FrozenTextVectors(encoder, params.encoder.max_length, cache_dir(params))
    text_vectors = (
        frozen_item_vectors(params, items, item_text)
        if cfg.item_tower == "frozen"
        else np.zeros((len(items), 1), np.float32)
    )
    valid = read_table(inputs.splits / "valid.parquet", "queries")
    valid = (
        valid.assign(item_id=valid["item_id"].astype(str))
        .groupby(["query", "item_id"], as_index=False)["relevance"]
        .mean()
    )
    config = {
        "name": f"bi_encoder_{variant}",
        "shared_items": cfg.item_tower == "shared",
        "encoder": encoder,
        "query_max_length": cfg.max_seq_len,
        "item_max_length": params.encoder.max_length,
        "variant": variant,
    }
    log.info(
        "search: %d positive pairs (%d queries) over %d items from %s",
        len(pairs.pos_item),
        len(pairs.positives),
        len(items),
        path,
    )
    return SearchJob(pairs, cfg, config, items, text_vectors, item_text, valid, params.seed), path


def attach_hybrid(model: SearchModel, settings: SearchHybridParams, valid: pd.DataFrame) -> dict:
    """Make `model` the hybrid of its bi-encoder and BM25 over the item text (`search_text`, the expanded text
    fuse wrote, else the title), the BM25 share tuned on the validation split; returns the validation curve."""
    column = "search_text" if "search_text" in model.items.columns else "title"
    lexical = LexicalIndex(settings.bm25).fit(model.item_ids, model.items[column].astype(str).tolist())
    weight, curve = tune_weight(lexical, model, valid, settings.weights, settings.depth)
    model.name = model.config["name"] = model.name.replace("bi_encoder", "hybrid")
    model.config["hybrid"] = {
        "weight": weight,
        "depth": settings.depth,
        "bm25": settings.bm25.model_dump(),
        "text_column": column,
    }
    log.info("search hybrid over %s: BM25 weight %.1f, valid NDCG@10 by weight %s", column, weight, curve)
    by_weight = {f"valid_ndcg@10_bm25_{round(100 * w)}pct": v for w, v in curve.items()}  # no dots: DVC plots
    return {"hybrid_weight": weight, "valid_ndcg@10": curve[weight], **by_weight}


def attach_reranker(
    model: SearchModel, settings: RerankParams, train: pd.DataFrame, valid: pd.DataFrame, first_stage: float, seed: int
) -> dict:
    """Give the hybrid `model` a re-ranker (training/rerank.py) learned from the variant's training rows `train`
    (real and synthetic; at most `settings.max_queries` distinct queries of them), early-stopped on the real
    `valid` split; returns its validation metrics beside `first_stage`, the hybrid's (`attach_hybrid`'s)
    validation NDCG@10."""
    lexical, words = model.lexical(), model.words()
    args = (model.stage_scores, lexical, words, model.item_ids, settings.depth)
    train = sample_queries(train, settings.max_queries, seed)
    reranker, info = train_reranker(
        examples(train, *args, "re-ranker train"), examples(valid, *args, "re-ranker valid"), settings, seed
    )
    model.reranker, model.config["rerank"] = reranker, {"depth": settings.depth}
    model.name = model.config["name"] = model.name.replace("hybrid", "reranked_hybrid")
    reranked = valid_ndcg(model, valid)
    log.info("search re-ranker: valid NDCG@10 %.4f -> %.4f (%d rounds)", first_stage, reranked, info["rerank_rounds"])
    return {
        "rerank_rounds": info["rerank_rounds"],
        "rerank_train_queries": train["query"].nunique(),
        "valid_ndcg@10_first_stage": first_stage,
        "valid_ndcg@10": reranked,
    }


# --------------------------------------------------------------------------------------------- entry points
@dataclass
class TrainOutcome:
    model: "SearchModel | RecommenderModel"
    result: LoopResult
    data_path: Path
    seconds: float
    job: "RetailJob | SearchJob"

    def metrics(self) -> dict:
        return {
            "valid_ndcg@10": self.result.best_metric,
            "best_step": self.result.best_step,
            "steps": self.result.steps,
            "stopped_early": self.result.stopped_early,
            "train_seconds": round(self.seconds, 1),
            "samples_per_s": round(self.result.samples_per_s, 1),
        }


def loop_config(params: Params, task: str, checkpoint_dir: Path | None, **overrides) -> LoopConfig:
    cfg = getattr(params.train, task)
    return LoopConfig(
        **{
            "epochs": cfg.epochs,
            "max_steps": cfg.max_steps,
            "grad_accum": cfg.grad_accum,
            "lr": cfg.lr,
            "encoder_lr": cfg.encoder_lr,
            "weight_decay": cfg.weight_decay,
            "eval_every": cfg.eval_every,
            "patience": cfg.patience,
            "checkpoint_every": params.train.checkpoint_every,
            "checkpoint_dir": checkpoint_dir,
            "seed": params.seed,
            "device": params.train.device,
            "precision": params.train.precision,
            **overrides,
        }
    )


BUILDERS = {"retail": build_retail_job, "search": build_search_job}


def train_ranker(params: Params, inputs: TrainInputs, variant: str) -> tuple[RepeatExploreModel, dict, list, Path]:
    """The repeat/explore recommender: LightGBM LambdaRank on windows of the fused rows, early-stopped on the real
    validation split. Returns (model, summary metrics, validation curve, training-data path)."""
    start = time.perf_counter()
    rows, path = training_table(inputs.data, inputs.splits, "retail", variant)
    real_train = read_table(inputs.splits / "train.parquet", "interactions")
    valid_targets = read_table(inputs.splits / "valid.parquet", "interactions")
    before = valid_cutoff(inputs.splits)
    model, metrics = train_repeat_explore(
        rows, real_train, valid_targets, before, params.train.retail.ranker, variant, params.seed
    )
    history = metrics.pop("history")
    metrics["train_seconds"] = round(time.perf_counter() - start, 1)
    return model, metrics, history, path


def train_task(
    params: Params,
    task: Literal["retail", "search"],
    variant: str,
    inputs: TrainInputs,
    checkpoint_dir: Path | None = None,
    on_record: Callable[[dict], None] | None = None,
    **loop_overrides,
) -> TrainOutcome:
    """Build the job for `task` from `inputs`, train it, and return the wrapped best model (`on_record`: each
    history record as it is made, see `train_loop`)."""
    if params.train.threads:
        torch.set_num_threads(params.train.threads)
    start = time.perf_counter()
    torch.manual_seed(params.seed)  # same initial weights on every rank
    job, path = BUILDERS[get_task(task).name](params, inputs, variant)
    result = train_loop(job, loop_config(params, task, checkpoint_dir, **loop_overrides), on_record)
    job.model.cpu()
    return TrainOutcome(job.wrap(job.model), result, path, time.perf_counter() - start, job)


def run_fingerprint(params: Params, task: str, data: Path) -> str:
    """Short hash of what a checkpoint depends on (params, encoder, training-file stats): resume only a match."""
    stat = data.stat() if data.exists() else None
    key = json.dumps(
        [
            params.seed,
            params.encoder.model_dump(),
            getattr(params.train, task).model_dump(),
            str(data),
            stat and (stat.st_size, stat.st_mtime_ns),
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:12]


app = cli.stage_app(__doc__)


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    task: Annotated[str, typer.Option(help="retail (recommender) or search (bi-encoder)")] = "retail",
    variant: Annotated[str, typer.Option(help="the fused variant (noaug, aug, minus_<generator>, ...)")] = "aug",
    data: Annotated[
        Path, typer.Option(help="the variant's fused folder (train.parquet, items.parquet, manifest.json)")
    ] = Path("data/fused/retail/aug"),
    splits: Annotated[Path, typer.Option(help="the task's real splits (valid for early stopping)")] = Path(
        "data/splits/retail"
    ),
    canonical: Annotated[Path, typer.Option(help="the task's canonical tables (items)")] = Path(
        "data/canonical/retail"
    ),
    out: Annotated[Path, typer.Option(help="model folder to write")] = Path("models/retail/aug"),
    metrics: Annotated[Path, typer.Option(help="training metrics JSON to write")] = Path(
        "metrics/train/retail-aug.json"
    ),
    curves: Annotated[Path, typer.Option(help="folder for the DVC plot files loss.json and valid.json")] = Path(
        "metrics/curves/retail-aug"
    ),
    checkpoints: Annotated[Path, typer.Option(help="resumable checkpoints (<task>-<variant>-<fingerprint>/)")] = Path(
        "models/checkpoints"
    ),
    synthetic: Annotated[Path, typer.Option(help="generator folders (lineage: rows + manifest)")] = Path(
        "data/synthetic"
    ),
    gate: Annotated[Path, typer.Option(help="gate decisions <generator>.json (lineage)")] = Path("metrics/gate"),
    gate_reports: Annotated[Path, typer.Option(help="gate reports <generator>.html (lineage)")] = Path("reports/gate"),
    raw: Annotated[Path, typer.Option(help="raw upstream files <task>/ (lineage)")] = Path("data/raw"),
    resume: Annotated[
        bool, typer.Option(help="continue an interrupted run from --checkpoints (same params and data only)")
    ] = True,
    track: Annotated[bool, typer.Option(help="log the run, datasets and model to MLflow (training.tracking)")] = True,
) -> None:
    """Train one model on a fused variant; write its model folder and training metrics; log it to MLflow."""
    task = get_task(task).name
    config = cli.load(params).for_model(task, variant)  # a switch variant's `train` overrides (experiments.models)
    inputs = TrainInputs(cli.resolve(data), cli.resolve(splits), cli.resolve(canonical))
    out, metrics, curves = cli.resolve(out), cli.resolve(metrics), cli.resolve(curves)
    skipped = skipped_reason(inputs.data)
    if skipped:  # e.g. augment.enabled false: no aug rows; the stage still leaves its outputs, with no model
        log.warning("%s/%s not trained: %s", task, variant, skipped)
        write_json({"skipped": skipped}, out / "skipped.json")
        write_json({"skipped": skipped}, metrics)
        write_curves([], curves)
        return
    # one MLflow run covers training (live step metrics, system metrics), the summary and the model; rank 0 only
    tracked = track and int(os.environ.get("RANK", "0")) == 0
    with tracking.start_run(config, task=task, variant=variant) if tracked else contextlib.nullcontext() as run:
        if run is not None:
            run.log_datasets(training_lineage(inputs, synthetic, gate, gate_reports, raw, params, task))
        live = None if run is None else functools.partial(log_record, run)
        if task == "retail" and config.train.retail.ranker.enabled:
            model, summary, history, data_path = train_ranker(config, inputs, variant)
            for record in history if live is not None else []:  # LightGBM's curve exists once it has trained
                live(record)
        else:
            ckpt = cli.resolve(checkpoints) / f"{task}-{variant}-{run_fingerprint(config, task, inputs.table_path())}"
            outcome = train_task(config, task, variant, inputs, ckpt if resume else None, on_record=live)
            if dist.is_initialized() and dist.get_rank() != 0:
                dist.destroy_process_group()
                return
            model, summary, history = outcome.model, outcome.metrics(), outcome.result.history
            data_path = outcome.data_path
            if task == "search" and config.train.search.hybrid.enabled:
                summary = {**summary, "valid_ndcg@10_bi_encoder": summary["valid_ndcg@10"]}
                summary.update(attach_hybrid(model, config.train.search.hybrid, outcome.job.valid))
                if config.train.search.rerank.enabled:
                    rows, _ = training_table(inputs.data, inputs.splits, "search", variant)
                    rerank = config.train.search.rerank
                    first_stage = summary["valid_ndcg@10"]
                    summary.update(attach_reranker(model, rerank, rows, outcome.job.valid, first_stage, config.seed))
        folder = save_model(model, out)
        summary = {**summary, "data": tracking.repo_relative(data_path)}
        write_json({**summary, "history": history}, metrics)
        write_curves(history, curves)
        log.info("%s/%s: %s -> %s", task, variant, summary, folder)
        if run is not None:
            run.log_metrics({f"train/{k}": float(v) for k, v in summary.items() if k != "data"})
            run.log_model(folder, task)
    if dist.is_initialized():
        dist.destroy_process_group()


def training_lineage(
    inputs: TrainInputs, synthetic: Path, gate: Path, gate_reports: Path, raw: Path, params: Path, task: str
) -> tracking.Lineage:
    """The exact real and synthetic data one model trains on, for its MLflow run."""
    return tracking.Lineage(
        data=inputs.data,
        splits=inputs.splits,
        canonical=inputs.canonical,
        synthetic=cli.resolve(synthetic),
        gate=cli.resolve(gate),
        gate_reports=cli.resolve(gate_reports),
        raw=cli.resolve(raw) / task,
        params_file=cli.resolve(params),
    )


def write_curves(history: list[dict], folder: Path) -> None:
    """The history as DVC plots read it, one list per file (dvc.yaml `plots`): `loss.json` (training loss by
    step; empty for the LightGBM ranker) and `valid.json` (validation NDCG@10 by step)."""
    loss = [{"step": r["step"], "loss": r["loss"]} for r in history if "loss" in r]
    valid = [
        {"step": r["step"], "valid_ndcg@10": r.get("valid", r.get("valid_ndcg@10"))}
        for r in history
        if "valid" in r or "valid_ndcg@10" in r
    ]
    write_json(loss, folder / "loss.json")
    write_json(valid, folder / "valid.json")


def log_record(run: tracking.TrainingRun, record: dict) -> None:
    """One training-history record as step metrics `train/<name>` (loss, lr, valid ...)."""
    run.log_metrics({f"train/{k}": v for k, v in record.items() if k != "step"}, step=record["step"])


if __name__ == "__main__":
    cli.run(app)
