"""Load-test the service on loopback with locust: latency and throughput per endpoint, floor, batching on vs off.

Each fixed-rate run (the p99 targets) is repeated `--repeats` times and reported with its spread: one run's tail
on a shared 2-core machine is not a measurement.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from core import cli
from core.errors import ShopError
from core.io import write_json
from core.paths import data_file, repo_root
from serving.launch import start_service, stop_service

app = cli.stage_app(__doc__)

ENDPOINTS = ("ping", "recommend", "search")
# the targets of docs/serving.md#benchmark: p99 at a fixed arrival rate, and a lone request's p50
TARGETS = {
    "recommend": {"rate": 200.0, "p99_ms": 15.0, "lone_p50_ms": None},
    "search": {"rate": 150.0, "p99_ms": 20.0, "lone_p50_ms": 5.0},
}


def payloads(bentoml_home: Path, recommender: str, n: int = 200) -> dict[str, list[dict]]:
    """Request bodies: real Home Depot queries; known users of the packaged `recommender` mixed with unknown ones
    (cold start)."""
    queries = pd.read_csv(data_file("homedepot/search_relevance.csv.gz"), usecols=["search_term"], nrows=20000)
    texts = queries["search_term"].drop_duplicates().sample(n, random_state=0).tolist()
    stores = sorted((bentoml_home / "models" / recommender).glob("*/histories.parquet"))
    if not stores:
        raise ShopError(f"{bentoml_home}: no packaged {recommender}; run `python -m serving.package` first")
    users = pd.read_parquet(stores[-1], columns=["user_id"])["user_id"].sample(n, random_state=0, replace=True)
    recommend = [{"user_id": str(u), "k": 10} for u in users]
    recommend[::5] = [{"user_id": f"new-{i}", "k": 10} for i in range(len(recommend[::5]))]
    return {"ping": [{}], "search": [{"query": q, "k": 10} for q in texts], "recommend": recommend}


def start_server(port: int, batching: bool, log: Path) -> subprocess.Popen:
    """`bentoml serve` of the service with batching on or off; returns once /readyz answers 200."""
    env = {**os.environ, "SHOPAUG_SERVE": json.dumps({"batching": {"enabled": batching}, "reload_poll_s": 0})}
    return start_service(port, env, log)


def run_locust(host: str, endpoint: str, users: int, rate: float, seconds: int, bodies: Path, out: Path) -> dict:
    """One headless locust run; return requests, failures (and their kinds: "HTTP 503", connection errors),
    p50/p99 (ms) and throughput (req/s)."""
    env = {
        **os.environ,
        "BENCH_ENDPOINT": endpoint,
        "BENCH_PAYLOADS": str(bodies),
        "BENCH_RATE": str(rate),
        "BENCH_USERS": str(users),
    }
    name = f"{endpoint}-{users}-{int(rate)}"
    prefix = out / f"{name}-{len(list(out.glob(f'{name}-*_stats.csv')))}"  # repeats do not overwrite
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(repo_root() / "serving" / "locustfile.py"),
            "--headless",
            "--host",
            host,
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--csv",
            str(prefix),
            "--only-summary",
            "--stop-timeout",
            "5",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        check=False,
        capture_output=True,
        timeout=seconds + 60,
    )
    with open(f"{prefix}_stats.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    kinds: dict[str, int] = {}
    if Path(f"{prefix}_failures.csv").exists():
        with open(f"{prefix}_failures.csv") as handle:
            for failure in csv.DictReader(handle):
                kinds[failure["Error"]] = kinds.get(failure["Error"], 0) + int(failure["Occurrences"])
    return {
        "endpoint": endpoint,
        "concurrency": users,
        "target_rps": rate or None,
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "failure_kinds": kinds,
        "p50_ms": float(row["50%"]),
        "p99_ms": float(row["99%"]),
        "rps": round(float(row["Requests/s"]), 1),
    }


def spread(values: list[float]) -> dict:
    """Median, min and max of repeated measurements."""
    ordered = sorted(values)
    return {"median": ordered[len(ordered) // 2], "min": ordered[0], "max": ordered[-1], "n": len(ordered)}


def verdicts(runs: list[dict]) -> dict:
    """The targets (TARGETS), computed from the runs: fixed-rate p99 as the median of the repeats, with spread."""

    def select(batching, endpoint, users, rate=None):
        return [
            r
            for r in runs
            if r["batching"] == batching
            and r["endpoint"] == endpoint
            and r["concurrency"] == users
            and r["target_rps"] == rate
        ]

    def first(*args):
        return next(iter(select(*args)), None)

    out = {}
    for endpoint, target in TARGETS.items():
        repeats = select(True, endpoint, 32, target["rate"])
        floor, closed, lone = first(True, "ping", 8), first(True, endpoint, 8), first(True, endpoint, 1)
        on, off = first(True, endpoint, 32), first(False, endpoint, 32)
        p99 = spread([r["p99_ms"] for r in repeats]) if repeats else None
        rps = spread([r["rps"] for r in repeats]) if repeats else None
        out[endpoint] = {
            "rate": target["rate"],
            "p99_ms_at_rate": p99,
            "achieved_rps": rps,
            "failures_at_rate": sum(r["failures"] for r in repeats),
            "p99_target_ms": target["p99_ms"],
            "p99_target_met": bool(
                p99 and p99["median"] <= target["p99_ms"] and rps["median"] >= 0.95 * target["rate"]
            ),
            "lone_p50_ms": lone and lone["p50_ms"],
            "lone_p50_target_ms": target["lone_p50_ms"],
            "lone_p50_target_met": None
            if target["lone_p50_ms"] is None
            else bool(lone and lone["p50_ms"] <= target["lone_p50_ms"]),
            "p99_over_floor_c8": closed and floor and round(closed["p99_ms"] / max(floor["p99_ms"], 1e-9), 2),
            "batching_speedup_c32": on and off and round(on["rps"] / max(off["rps"], 1e-9), 2),
        }
    return out


def failures(run: dict) -> str:
    """The failure count, with its kinds when there are any: `12 (HTTP 503: 12)`."""
    kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(run.get("failure_kinds", {}).items()))
    return f"{run['failures']} ({kinds})" if kinds else str(run["failures"])


def markdown(report: dict) -> str:
    lines = [
        "# Serving benchmark",
        "",
        f"Machine: {report['machine']}. Command: `{report['command']}`.",
        "",
        "| batching | endpoint | concurrency | target req/s | requests | failures | p50 ms | p99 ms | req/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {'on' if r['batching'] else 'off'} | {r['endpoint']} | {r['concurrency']} | "
            f"{r['target_rps'] or 'max'} | {r['requests']} | {failures(r)} | {r['p50_ms']:g} | "
            f"{r['p99_ms']:g} | {r['rps']:g} |"
        )
    lines += ["", "| endpoint | target | measured | met |", "| --- | --- | --- | --- |"]
    for endpoint, v in report["targets"].items():
        p99, rps = v["p99_ms_at_rate"], v["achieved_rps"]
        measured = (
            f"median {p99['median']:g} ms (min {p99['min']:g}, max {p99['max']:g}, {p99['n']} runs) at "
            f"{rps['median']:g} req/s, {v['failures_at_rate']} failures"
            if p99
            else "not run"
        )
        lines.append(
            f"| {endpoint} | p99 ≤ {v['p99_target_ms']:g} ms at {v['rate']:g} req/s | {measured} | "
            f"{v['p99_target_met']} |"
        )
        if v["lone_p50_target_ms"] is not None:
            lines.append(
                f"| {endpoint} | lone request p50 ≤ {v['lone_p50_target_ms']:g} ms | {v['lone_p50_ms']} ms | "
                f"{v['lone_p50_target_met']} |"
            )
        lines.append(f"| {endpoint} | p99 over the /ping floor (c=8) | {v['p99_over_floor_c8']}× | (reported) |")
        lines.append(f"| {endpoint} | batching speed-up (c=32) | {v['batching_speedup_c32']}× | (reported) |")
    return "\n".join(lines) + "\n"


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    seconds: Annotated[int, typer.Option(help="duration of each locust run")] = 8,
    concurrency: Annotated[list[int] | None, typer.Option(help="locust users (closed loop) [1, 8, 32]")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="runs per fixed-rate measurement (the p99 targets)")] = 3,
    port: Annotated[int, typer.Option(help="loopback port of the server under test")] = 3931,
    out: Annotated[Path, typer.Option(help="JSON report; the markdown table goes beside it")] = Path(
        "reports/serving_benchmark.json"
    ),
) -> None:
    """Start the packaged service (batching on, then off) and load it; BENTOML_HOME must hold the champion."""
    conf = cli.load(params)
    out = cli.resolve(out)
    concurrency = concurrency or [1, 8, 32]
    home = Path(os.environ.get("BENTOML_HOME", repo_root() / "bentoml_home"))
    os.environ["BENTOML_HOME"] = str(home)
    work = Path(tempfile.mkdtemp(prefix="shopaug-bench-"))
    bodies = {}
    for endpoint, rows in payloads(home, conf.mlflow.recommender_model).items():
        bodies[endpoint] = work / f"{endpoint}.json"
        bodies[endpoint].write_text(json.dumps(rows))
    runs, host = [], f"http://127.0.0.1:{port}"
    for batching in (True, False):
        server = start_server(port, batching, work / f"server-{batching}.log")
        try:
            for endpoint in ENDPOINTS:
                levels = concurrency if batching else ([] if endpoint == "ping" else [max(concurrency)])
                for users in levels:
                    runs.append(
                        {
                            "batching": batching,
                            **run_locust(host, endpoint, users, 0, seconds, bodies[endpoint], work),
                        }
                    )
                    typer.echo(runs[-1])
                for repeat in range(repeats if batching and endpoint in TARGETS else 0):
                    rate = TARGETS[endpoint]["rate"]
                    measured = run_locust(host, endpoint, 32, rate, seconds, bodies[endpoint], work)
                    runs.append({"batching": batching, "repeat": repeat, **measured})
                    typer.echo(runs[-1])
        finally:
            stop_service(server, within_s=30)
    report = {
        "machine": f"{os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.1f}",
        "command": "python -m serving.benchmark",
        "seconds_per_run": seconds,
        "repeats": repeats,
        "runs": runs,
        "targets": verdicts(runs),
    }
    write_json(report, out)
    out.with_suffix(".md").write_text(markdown(report))
    shutil.rmtree(work, ignore_errors=True)
    typer.echo(markdown(report))


if __name__ == "__main__":
    cli.run(app)
