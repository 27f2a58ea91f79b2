"""Benchmark: online lookup latency (SQLite and Redis, 1/10/100 users) and materialisation time of the full tables."""

import contextlib
import logging
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from core import cli
from core.errors import ShopError
from core.io import write_json
from core.paths import repo_root
from features.build import load_to_store
from features.client import OnlineFeatureClient
from features.store import open_store

log = logging.getLogger(__name__)
app = cli.stage_app(__doc__)
TARGET_P99_MS = {"sqlite": 1.0, "redis": 2.0}  # one entity (issue 3)


def _percentiles(samples_ns: list[int]) -> dict:
    ms = np.asarray(samples_ns) / 1e6
    return {
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p99": round(float(np.percentile(ms, 99)), 3),
        "mean": round(float(ms.mean()), 3),
        "calls": len(ms),
    }


def _time_calls(call, batches: list[list[str]], warmup: int = 30) -> dict:
    for ids in batches[:warmup]:
        call(ids)
    samples = []
    for ids in batches:
        start = time.perf_counter_ns()
        call(ids)
        samples.append(time.perf_counter_ns() - start)
    return _percentiles(samples)


def measure(
    client: OnlineFeatureClient, user_ids: list[str], sizes: list[int], repeats: int, sdk_repeats: int, seed: int
) -> dict:
    """Latency per path and batch size: `client` (DataFrame + defaults, what serving calls) and `feast_sdk`
    (the client's FeatureStore.get_online_features call alone, without building the DataFrame)."""
    rng = np.random.default_rng(seed)
    refs = client.feature_refs("user")

    def sdk(ids):
        return client.store.get_online_features(features=refs, entity_rows={"user_id": ids}).to_dict()

    out = {}
    for size in sizes:
        batches = [list(rng.choice(user_ids, size=size, replace=False)) for _ in range(repeats)]
        out[str(size)] = {
            "client": _time_calls(client.get_user_features, batches),
            "feast_sdk": _time_calls(sdk, batches[:sdk_repeats], warmup=5),
        }
        log.info("%d user(s): client p99 %.3f ms", size, out[str(size)]["client"]["p99"])
    return out


@contextlib.contextmanager
def _stores(features_dir: Path):
    """Yield {"sqlite": yaml, "redis": yaml}: tmp repos over the built tables (one-off Redis project, torn down)."""
    with tempfile.TemporaryDirectory(prefix="feast_bench_") as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        (root / "data" / "features").symlink_to(features_dir.resolve())
        (root / "features").mkdir()
        sqlite_yaml = root / "features" / "feature_store.yaml"
        sqlite_yaml.write_text((repo_root() / "features" / "feature_store.yaml").read_text())
        redis_yaml = root / "features" / "feature_store.production.yaml"
        redis_yaml.write_text((repo_root() / "features" / "feature_store.production.yaml").read_text())
        env = {
            "SHOP_FEAST_PROJECT": f"shopaug_bench_{uuid.uuid4().hex[:8]}",
            "SHOP_FEAST_REGISTRY_URL": os.environ.get("SHOP_FEAST_REGISTRY_URL", f"sqlite:///{root}/registry.db"),
        }
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield {"sqlite": sqlite_yaml, "redis": redis_yaml}
        finally:
            with contextlib.suppress(Exception):
                open_store(redis_yaml).teardown()
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def markdown(result: dict) -> str:
    """The README table: p50 / p99 in ms per store, path and batch size, then materialisation times."""
    lines = [
        "| store | path | 1 user p50 / p99 | 10 users p50 / p99 | 100 users p50 / p99 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for store, by_size in result["latency_ms"].items():
        for path in ("client", "feast_sdk"):
            cells = [f"{by_size[s][path]['p50']:.2f} / {by_size[s][path]['p99']:.2f}" for s in ("1", "10", "100")]
            lines.append(f"| {store} | {path} | " + " | ".join(cells) + " |")
    mat = result["materialize_s"]
    lines.append("")
    lines.append(
        f"Materialisation of the full tables ({result['rows']['user_features']:,} user + "
        f"{result['rows']['item_features']:,} item snapshot rows, latest per entity loaded): "
        f"SQLite {mat['sqlite']:.1f} s, Redis {mat['redis']:.1f} s. Targets (1 user, client p99): "
        + ", ".join(
            f"{k} ≤ {v} ms: {'met' if result['targets_met'][k] else 'missed'}" for k, v in TARGET_P99_MS.items()
        )
        + "."
    )
    return "\n".join(lines) + "\n"


@app.command()
def main(
    features_dir: Annotated[Path, typer.Option(help="built snapshot tables")] = Path("data/features"),
    repeats: Annotated[int, typer.Option(help="timed calls per store and batch size")] = 1000,
    sdk_repeats: Annotated[int, typer.Option(help="timed calls of Feast's get_online_features")] = 200,
    out: Annotated[Path, typer.Option(help="JSON report")] = Path("reports/feature_benchmark.json"),
    seed: Annotated[int, typer.Option(help="seed for the sampled ids")] = 42,
) -> None:
    """Materialise the built tables into SQLite and Redis, then time online lookups of 1, 10 and 100 users."""
    features_dir = cli.resolve(features_dir)
    if not (features_dir / "user_features.parquet").exists():
        raise ShopError(f"{features_dir}: no user_features.parquet; run `python -m features.build` first")
    users = pd.read_parquet(features_dir / "user_features.parquet", columns=["user_id"])["user_id"].unique()
    rows = {
        name: len(pd.read_parquet(features_dir / f"{name}.parquet", columns=["event_timestamp"]))
        for name in ("user_features", "item_features")
    }
    machine = {"cpus": os.cpu_count(), "load_avg_before": os.getloadavg(), "python": platform.python_version()}
    result = {"machine": machine, "rows": rows, "users": len(users), "materialize_s": {}, "latency_ms": {}}
    with _stores(features_dir) as configs:
        for name, config in configs.items():
            timings = load_to_store(features_dir, config)
            result["materialize_s"][name] = timings["materialize_s"]
            log.info("%s: materialised in %.1fs", name, timings["materialize_s"])
            client = OnlineFeatureClient(open_store(config))
            result["latency_ms"][name] = measure(client, list(users), [1, 10, 100], repeats, sdk_repeats, seed)
    result["machine"]["load_avg_after"] = os.getloadavg()
    result["targets_p99_ms_one_user"] = TARGET_P99_MS
    result["targets_met"] = {k: result["latency_ms"][k]["1"]["client"]["p99"] <= v for k, v in TARGET_P99_MS.items()}
    out = cli.resolve(out)
    write_json(result, out)
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    cli.run(app)
