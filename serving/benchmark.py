"""Load-test the service on loopback with locust: latency and throughput per endpoint, floor, batching on vs off."""

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
    """One headless locust run; return requests, failures, p50/p99 (ms) and throughput (req/s)."""
    env = {
        **os.environ,
        "BENCH_ENDPOINT": endpoint,
        "BENCH_PAYLOADS": str(bodies),
        "BENCH_RATE": str(rate),
        "BENCH_USERS": str(users),
    }
    prefix = out / f"{endpoint}-{users}-{int(rate)}"
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
    return {
        "endpoint": endpoint,
        "concurrency": users,
        "target_rps": rate or None,
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "p50_ms": float(row["50%"]),
        "p99_ms": float(row["99%"]),
        "rps": round(float(row["Requests/s"]), 1),
    }


def verdicts(runs: list[dict]) -> dict:
    """The issue's targets, computed from the runs."""

    def get(batching, endpoint, users, rate=None):
        return next(
            (
                r
                for r in runs
                if r["batching"] == batching
                and r["endpoint"] == endpoint
                and r["concurrency"] == users
                and r["target_rps"] == rate
            ),
            None,
        )

    out = {}
    for endpoint in ("recommend", "search"):
        at_rate, floor, closed = get(True, endpoint, 32, 200.0), get(True, "ping", 8), get(True, endpoint, 8)
        on, off = get(True, endpoint, 32), get(False, endpoint, 32)
        out[endpoint] = {
            "p99_at_200rps_ms": at_rate and at_rate["p99_ms"],
            "achieved_rps": at_rate and at_rate["rps"],
            "p99_le_15ms_at_200rps": bool(at_rate and at_rate["p99_ms"] <= 15 and at_rate["rps"] >= 190),
            "p99_over_floor_c8": closed and floor and round(closed["p99_ms"] / max(floor["p99_ms"], 1e-9), 2),
            "p99_within_3x_floor": bool(closed and floor and closed["p99_ms"] <= 3 * floor["p99_ms"]),
            "batching_speedup_c32": on and off and round(on["rps"] / max(off["rps"], 1e-9), 2),
            "batching_ge_2x": bool(on and off and on["rps"] >= 2 * off["rps"]),
        }
    return out


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
            f"{r['target_rps'] or 'max'} | {r['requests']} | {r['failures']} | {r['p50_ms']:g} | "
            f"{r['p99_ms']:g} | {r['rps']:g} |"
        )
    lines += ["", "| endpoint | target | measured | met |", "| --- | --- | --- | --- |"]
    for endpoint, v in report["targets"].items():
        lines.append(
            f"| {endpoint} | p99 ≤ 15 ms at 200 req/s | {v['p99_at_200rps_ms']} ms at "
            f"{v['achieved_rps']} req/s | {v['p99_le_15ms_at_200rps']} |"
        )
        lines.append(f"| {endpoint} | p99 ≤ 3× floor (c=8) | {v['p99_over_floor_c8']}× | {v['p99_within_3x_floor']} |")
        lines.append(
            f"| {endpoint} | batching ≥ 2× req/s (c=32) | {v['batching_speedup_c32']}× | {v['batching_ge_2x']} |"
        )
    return "\n".join(lines) + "\n"


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    seconds: Annotated[int, typer.Option(help="duration of each locust run")] = 8,
    concurrency: Annotated[list[int] | None, typer.Option(help="locust users (closed loop) [1, 8, 32]")] = None,
    rate: Annotated[float, typer.Option(help="fixed-rate run (req/s, 32 users) for the p99 target")] = 200.0,
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
                if batching and endpoint != "ping":
                    runs.append(
                        {
                            "batching": batching,
                            **run_locust(host, endpoint, 32, rate, seconds, bodies[endpoint], work),
                        }
                    )
                    typer.echo(runs[-1])
        finally:
            stop_service(server, within_s=30)
    report = {
        "machine": f"{os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.1f}",
        "command": "python -m serving.benchmark",
        "seconds_per_run": seconds,
        "runs": runs,
        "targets": verdicts(runs),
    }
    write_json(report, out)
    out.with_suffix(".md").write_text(markdown(report))
    shutil.rmtree(work, ignore_errors=True)
    typer.echo(markdown(report))


if __name__ == "__main__":
    cli.run(app)
