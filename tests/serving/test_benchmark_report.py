"""The benchmark's verdicts: a fixed-rate p99 is the median of its repeats, reported with its spread."""

import http.server
import json
import threading
import time

import pytest
import yaml

from core.errors import ShopError
from core.paths import repo_root
from serving import benchmark
from serving.benchmark import markdown, run_locust, verdicts

CI = {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 3}
QUALITY = {
    "model_version": "7",
    "queries": 3,
    "served_ndcg@10": {**CI, "value": 0.4441},
    "exact_ndcg@10": {**CI, "value": 0.4443},
    "served_minus_exact": {"value": -0.0002, "ci_low": -0.0009, "ci_high": 0.0004, "n": 3},
    "tolerance": 0.002,
    "within_tolerance": True,
}


def run(endpoint: str, users: int, p50: float, p99: float, rps: float, rate=None, batching=True, rerank=True) -> dict:
    return {
        "batching": batching,
        "rerank": rerank,
        "endpoint": endpoint,
        "concurrency": users,
        "target_rps": rate,
        "requests": 1000,
        "failures": 0,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": p99 + 1,
        "rps": rps,
    }


SWAP = {
    **run("search", 32, 6, 18, 149, rate=150.0),
    "failures": 0,
    "versions_before": {"recommender": "3", "search": "5"},
    "versions_after": {"recommender": "4", "search": "6"},
    "reload_s": 4.2,
    "met": True,
}


def report(runs: list[dict], swap: dict = SWAP) -> dict:
    return {
        "machine": "2 CPUs",
        "command": "c",
        "runs": runs,
        "targets": verdicts(runs),
        "search_quality": QUALITY,
        "overload": {
            "sustainable_rps": 150.0,
            "overload": {
                **run("search", 64, 900, 1000, 150, rate=450.0),
                "failures": 3,
                "failure_kinds": {"HTTP 503": 3},
            },
            "recovery": run("search", 1, 5, 9, 180),
            "bound_ms": 1010.0,
            "met": True,
        },
        "swap": swap,
    }


def test_the_p99_target_reads_the_median_repeat_and_reports_the_spread():
    runs = [run("ping", 8, 1, 2, 1000), run("search", 1, 4, 6, 200), run("search", 8, 10, 12, 300)]
    runs += [run("search", 32, 8, p99, rps, rate=150.0) for p99, rps in ((19, 149), (400, 140), (12, 150))]
    runs += [run("recommend", 32, 5, p99, 199, rate=200.0) for p99 in (14, 16, 30)]
    off = [run("search", 1, 3, 4, 300, rerank=False)]
    off += [run("search", 32, 2, p99, 150, rate=150.0, rerank=False) for p99 in (9, 11, 10)]
    runs += off  # the re-ranker-off server's runs are reported beside the targets, never counted in them
    result = verdicts(runs)
    search, recommend = result["search"], result["recommend"]
    assert search["p99_ms_at_rate"] == {"median": 19, "min": 12, "max": 400, "n": 3}
    assert search["p99_target_met"] is True and search["lone_p50_target_met"] is True
    assert recommend["p99_ms_at_rate"]["median"] == 16 and recommend["p99_target_met"] is False
    assert recommend["lone_p50_target_met"] is None  # no lone-request target for /recommend
    table = markdown(report(runs))
    assert "median 19 ms (min 12, max 400, 3 runs) at 149 req/s" in table
    assert "lone p50 3 ms; p99 median 10 ms (min 9, max 11) at 150 req/s" in table
    assert "served 0.4441, ranked exactly as evaluated 0.4443; served − exact -0.0002 [-0.0009, +0.0004]" in table
    assert "3 (HTTP 503: 3) failed, slowest answer 1001 ms (bound 1010 ms: the deadline + 10 ms)" in table
    assert "reload 4.2 s from the admin call to /ping naming the new versions, 1000 requests, 0 failed" in table
    assert "Met (0 failed): True." in table
    assert "offered 450 req/s (3x its sustainable rate, 150 req/s) by 64 users" in table
    skipped = markdown(report(runs, {"skipped": "registry postgresql://db is not SQLite"}))
    assert "Champion swap under load: not measured (registry postgresql://db is not SQLite)." in skipped


def test_overload_and_swap_are_sized_to_the_throughput_this_machine_achieved():
    closed = [run("search", users, 5, 9, rps) for users, rps in ((1, 60), (8, 80), (32, 75))]
    fixed = [run("search", 32, 400, 500, 70, rate=150.0)]  # a fixed-rate run never sets the capacity
    other = [run("search", 32, 5, 9, 200, batching=False), run("recommend", 32, 5, 9, 400)]
    assert benchmark.sustainable_rate(closed + fixed + other) == 75  # the highest concurrency's throughput
    assert benchmark.sustainable_rate([run("search", 32, 5, 9, 400)]) == 150.0  # never above the target
    assert benchmark.sustainable_rate([]) == 150.0


def test_too_slow_an_achieved_rate_misses_the_target_even_with_a_low_p99():
    runs = [run("search", 32, 3, 5, rps, rate=150.0) for rps in (100, 110, 120)]
    assert verdicts(runs)["search"]["p99_target_met"] is False
    assert verdicts(runs)["recommend"]["p99_ms_at_rate"] is None


def test_failures_are_reported_by_kind():
    overloaded = {**run("recommend", 32, 900, 1100, 25, rate=200.0), "failures": 7}
    overloaded["failure_kinds"] = {"HTTP 503": 5, "ConnectionResetError(104)": 2}
    table = markdown(report([overloaded]))
    assert "| 7 (ConnectionResetError(104): 2, HTTP 503: 5) |" in table
    assert "| on | on | recommend | 32 | 200.0 |" in table
    plain = markdown({**report([overloaded]), "search_reranker": False})  # a champion without a re-ranker
    assert "| on | none | recommend | 32 | 200.0 |" in plain


def test_the_fixed_rate_load_keeps_its_rate_when_answers_are_slow(tmp_path):
    """40 req/s from 4 users against a real server answering in 60 ms: a wait counted from each answer would
    send at most 4 / (0.1 s + 0.06 s) = 25 req/s; the per-user send schedule keeps the offered rate."""

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(0.06)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bodies = tmp_path / "bodies.json"
    bodies.write_text(json.dumps([{"k": 1}]))
    try:
        result = run_locust(f"http://127.0.0.1:{server.server_address[1]}", "ping", 4, 40.0, 8, bodies, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert result["failures"] == 0 and result["p50_ms"] >= 60
    assert result["rps"] >= 34, result  # 85% of 40 (ramp-up and Poisson noise over 8 s)


def test_a_locust_run_that_writes_no_results_is_one_error_naming_why(tmp_path):
    missing = tmp_path / "no-such-bodies.json"  # the locustfile cannot read its payloads: locust exits at once
    with pytest.raises(ShopError, match=r"^locust \(ping-1-0\) wrote no results, exit [1-9]\d*: .*no-such-bodies"):
        run_locust("http://127.0.0.1:9", "ping", 1, 0, 1, missing, tmp_path)


def test_a_deployment_with_a_task_off_is_refused_in_one_line(tmp_path):
    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    params["data"]["search"] = None
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ShopError, match=r"^data\.search is null: the benchmark loads /recommend and /search"):
        benchmark.main(params=tmp_path / "params.yaml", out=tmp_path / "report.json")
    assert not (tmp_path / "report.json").exists()
