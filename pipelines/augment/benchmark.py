"""Benchmark of the search generation path: offline query generation, the cache, round-trip filtering, HF backend.

Writes `reports/augment_benchmark.json`. Throughput is reported per wall second and per CPU second of this
process (the offline backend is single-threaded), with the load average, because a shared machine's wall
clock says more about its neighbours than about the code. Target: offline generation >= 2,000 queries/s on
2 CPU cores. The huggingface backend is measured only when a CUDA device is present (tokens/s, queries/s).
"""

import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from core import cli
from core.io import write_json
from pipelines.augment.backends import OFFLINE_MODEL, GenerationCache, Request, fit_offline_model
from pipelines.augment.backends.huggingface import HuggingFaceBackend
from pipelines.augment.backends.offline import OfflineBackend
from pipelines.augment.manifest import MANIFEST_FILE
from pipelines.augment.retrieval import BM25Index
from pipelines.augment.search_data import load_search_training
from pipelines.augment.synthetic_queries import build_requests, few_shot_pool

log = logging.getLogger(__name__)
app = cli.stage_app(__doc__)
TARGET_QPS = 2000


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _rate(n: int, wall: float, cpu: float) -> dict:
    return {
        "n": n,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "per_wall_second": round(n / max(wall, 1e-9), 1),
        "per_cpu_second": round(n / max(cpu, 1e-9), 1),
    }


def bench_huggingface(model: str | None, requests: list[Request], batch_size: int) -> dict:
    """Tokens/s and queries/s of the huggingface backend on CUDA; a note instead when no GPU or model is given."""
    import torch

    if not torch.cuda.is_available():
        return {
            "measured": False,
            "reason": "no CUDA device on this machine (no GPU was lent for this run); run "
            "`python -m pipelines.augment.benchmark --hf-model <id or path>` on a GPU host to measure",
        }
    if not model:
        return {"measured": False, "reason": "no --hf-model given"}
    backend = HuggingFaceBackend(
        model, {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 24}, None, 0, batch_size=batch_size
    )
    outputs, wall, _ = _timed(lambda: backend.generate(requests))
    queries = sum(len(o) for o in outputs)
    return {
        "measured": True,
        "model": model,
        "device": torch.cuda.get_device_name(0),
        "dtype": str(backend.dtype),
        "batch_size": batch_size,
        "requests": len(requests),
        "queries": queries,
        "tokens_per_second": round(backend.tokens_generated / wall, 1),
        "queries_per_second": round(queries / wall, 1),
        "wall_seconds": round(wall, 3),
    }


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    train: Annotated[Path, typer.Option(help="real TRAINING queries")] = Path("data/splits/search/train.parquet"),
    items: Annotated[Path, typer.Option(help="the search catalogue")] = Path("data/canonical/search/items.parquet"),
    synthetic: Annotated[Path, typer.Option(help="generator folders (manifests summarised)")] = Path("data/synthetic"),
    n_items: Annotated[int, typer.Option(help="catalogue items to generate queries for")] = 10000,
    queries_per_item: Annotated[int, typer.Option(help="queries per item")] = 3,
    hf_model: Annotated[str | None, typer.Option(help="HF model id/path to benchmark on GPU")] = None,
    hf_requests: Annotated[int, typer.Option(help="requests for the HF benchmark")] = 512,
    out: Annotated[Path, typer.Option(help="report file")] = Path("reports/augment_benchmark.json"),
) -> None:
    """Measure generation and filtering throughput and write the benchmark report."""
    config = cli.load(params)
    train, items, synthetic, out = (cli.resolve(p) for p in (train, items, synthetic, out))
    train_df, items_df = load_search_training(train, items)
    model, fit_wall, fit_cpu = _timed(lambda: fit_offline_model(train_df, items_df))
    chosen = items_df.sort_values("item_id").head(n_items)
    requests = build_requests(chosen, queries_per_item, few_shot_pool(train_df, items_df), 3, config.seed)
    settings = {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 24}
    backend = OfflineBackend(model, OFFLINE_MODEL, settings, None, config.seed)
    outputs, wall, cpu = _timed(lambda: backend.generate(requests))
    generated = sum(len(o) for o in outputs)
    with tempfile.TemporaryDirectory() as folder:
        cached = OfflineBackend(model, OFFLINE_MODEL, settings, GenerationCache(Path(folder) / "c.sqlite"), 0)
        _, w1, c1 = _timed(lambda: cached.generate(requests))
        _, w2, c2 = _timed(lambda: cached.generate(requests))
        cached.close()
    queries = [q for o in outputs for q in o]
    owners = [str(i) for i, o in zip(chosen["item_id"], outputs, strict=True) for _ in o]
    index, iw, ic = _timed(lambda: BM25Index(items_df))
    ranks, rw, rc = _timed(lambda: index.rank_of(queries, owners))
    offline = _rate(generated, wall, cpu)
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "offline_query_generation": {
            **offline,
            "items": len(chosen),
            "queries_per_item": queries_per_item,
            "target_queries_per_second": TARGET_QPS,
            "meets_target_wall": offline["per_wall_second"] >= TARGET_QPS,
            "meets_target_cpu": offline["per_cpu_second"] >= TARGET_QPS,
            "fit_wall_seconds": round(fit_wall, 3),
            "fit_cpu_seconds": round(fit_cpu, 3),
        },
        "offline_with_cache": {
            "first_run": _rate(generated, w1, c1),
            "unchanged_rerun": _rate(generated, w2, c2),
        },
        "bm25_round_trip_filter": {
            "index_wall_seconds": round(iw, 3),
            "index_cpu_seconds": round(ic, 3),
            "catalogue_items": len(items_df),
            **_rate(len(queries), rw, rc),
            "kept_fraction_top10": round(float((ranks < 10).mean()), 4),
        },
        "huggingface": bench_huggingface(
            hf_model or (config.augment.backend.model if config.augment.backend.name == "huggingface" else None),
            requests[:hf_requests],
            config.augment.backend.batch_size,
        ),
        "examples": pd.DataFrame(
            {"title": chosen["title"].head(3).tolist(), "queries": [o for o in outputs[:3]]}
        ).to_dict("records"),
    }
    stages = {}
    for name in ("synthetic_queries", "statistical_queries", "query_rewrites", "hard_negatives"):
        manifest = synthetic / name / MANIFEST_FILE
        if manifest.exists():
            m = json.loads(manifest.read_text())
            stages[name] = {k: m.get(k) for k in ("rows", "kept_fraction")}
    report["stage_manifests"] = stages
    write_json(report, out)
    log.info("offline generation: %s", report["offline_query_generation"])


if __name__ == "__main__":
    cli.run(app)
