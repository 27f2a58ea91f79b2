"""Serving drift catches a drifted request window; alerts reach a webhook, retry after a 500, respect cool-down."""

import datetime as dt
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from monitoring_fixtures import WORDS, make_items, make_purchases, make_queries
from typer.testing import CliRunner

from core.errors import ShopError
from core.io import write_table
from core.paths import repo_root
from monitoring.alerts import raise_alert
from monitoring.drift import Reference, app, read_request_log, run_drift, save_to_workspace, split_window

NOW = pd.Timestamp("2026-11-20 12:00", tz="UTC")


def reference() -> Reference:
    purchases = make_purchases(60, seed=1)
    users = pd.DataFrame({"user_id": purchases["user_id"].unique(), "country": "United Kingdom"})
    return Reference(make_queries(300, seed=1), purchases, users, make_items())


def request_log(n: int, seed: int, drifted: bool = False, start: pd.Timestamp = NOW) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ts = start - pd.Timedelta(minutes=int(rng.integers(0, 600)))
        if i % 2:  # search
            n_words = int(rng.integers(1, 4))
            words = ["xqz" + str(rng.integers(1000)), "#@!"] if drifted else list(rng.choice(WORDS, n_words, False))
            rows.append(
                (
                    ts,
                    f"r{seed}-{i}",
                    "search",
                    None,
                    " ".join(words),
                    None,
                    5,
                    "search",
                    [str(100000 + j) for j in range(5)],
                    list(np.sort(rng.random(5))[::-1]),
                    12.0,
                )
            )
        else:  # recommend
            user = f"ghost{i}" if drifted else str(13000 + int(rng.integers(0, 60)))
            items = [
                str(20000 + int(j))
                for j in (rng.choice(2, 2, replace=False) if drifted else rng.choice(10, 5, replace=False))
            ]
            scores = list(np.sort(rng.random(len(items)) + (3 if drifted else 0))[::-1])
            rows.append((ts, f"r{seed}-{i}", "recommend", user, None, None, 5, "two_tower", items, scores, 8.0))
    return pd.DataFrame(
        rows,
        columns=[
            "ts",
            "request_id",
            "endpoint",
            "user_id",
            "query",
            "item_id",
            "k",
            "strategy",
            "returned_items",
            "scores",
            "latency_ms",
        ],
    )


def test_drifted_window_fails_tests_and_clean_window_passes(params):
    ref = reference()
    previous = request_log(80, seed=2, start=NOW - pd.Timedelta(hours=24))
    clean, _ = run_drift(params, request_log(80, seed=3), previous, ref, None)
    assert "recommendations" in clean and "users" in clean and "scores" in clean
    assert [t for s in clean.values() for t in s["failed"]] == []
    drifted, snapshots = run_drift(params, request_log(80, seed=4, drifted=True), previous, ref, None)
    failed = {s for s, v in drifted.items() if v["failed"]}
    assert {"queries", "users", "scores"} <= failed, drifted


def test_snapshots_go_to_a_local_evidently_workspace(params, tmp_path):
    from evidently.ui.workspace import Workspace

    _, snapshots = run_drift(params, request_log(40, seed=3), request_log(10, seed=2), reference(), None)
    save_to_workspace(tmp_path / "ws", snapshots)
    save_to_workspace(tmp_path / "ws", snapshots)  # a second run reuses the project
    workspace = Workspace.create(str(tmp_path / "ws"))
    projects = workspace.list_projects()
    assert [p.name for p in projects] == ["shopaug serving drift"]
    runs = workspace.list_runs(projects[0].id)
    assert len(runs) == 2 * len(snapshots)
    window_end = request_log(40, seed=3)["ts"].max()  # snapshots are dated by the window, not by when they ran
    stamps = {pd.Timestamp(workspace.get_run(projects[0].id, run).timestamp) for run in runs}
    assert {s.tz_localize("UTC") if s.tzinfo is None else s for s in stamps} == {window_end}


def test_window_split_uses_newest_request():
    log = pd.concat([request_log(20, 1), request_log(20, 2, start=NOW - pd.Timedelta(hours=30))])
    current, previous = split_window(log, 24, None)
    assert len(current) == 20 and len(previous) == 20


def test_alert_reaches_receiver_after_a_500_and_respects_cooldown(params, receiver, tmp_path):
    p = params.monitoring.alerts.model_copy(
        update={
            "webhook_url": receiver.url,
            "retry_wait_s": 0.01,
            "state_file": str(tmp_path / "state.json"),
            "log_file": str(tmp_path / "alerts.jsonl"),
        }
    )
    t0 = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
    first = raise_alert("drift", "test", ["users: drift"], {"n": 1}, p, tmp_path, now=t0)
    assert first["delivery"] == "sent"
    assert receiver.calls == 2 and receiver.payloads[0]["text"].endswith("1 test(s) failed")
    again = raise_alert("drift", "test", ["users: drift"], {"n": 1}, p, tmp_path, now=t0 + dt.timedelta(minutes=5))
    assert again["delivery"] == "cooldown" and receiver.calls == 2
    other = raise_alert("drift", "test", ["queries: drift"], {}, p, tmp_path, now=t0 + dt.timedelta(minutes=6))
    later = raise_alert("drift", "test", ["users: drift"], {}, p, tmp_path, now=t0 + dt.timedelta(minutes=61))
    assert other["delivery"] == "sent" and later["delivery"] == "sent" and receiver.calls == 4
    log = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [r["delivery"] for r in log] == ["sent", "cooldown", "sent", "sent"]


def test_cli_alerts_on_a_drifted_log_and_exits_nonzero(params, receiver, tmp_path, monkeypatch):
    logs, splits, canonical = tmp_path / "requests", tmp_path / "splits", tmp_path / "canonical"
    logs.mkdir()
    request_log(60, seed=4, drifted=True).to_parquet(logs / "part-0.parquet")
    ref_purchases = make_purchases(60, seed=1)
    write_table(make_queries(300, seed=1), splits / "search" / "train.parquet", "queries")
    write_table(ref_purchases, splits / "retail" / "train.parquet", "interactions")
    write_table(
        pd.DataFrame({"user_id": ref_purchases["user_id"].unique(), "country": "United Kingdom"}),
        canonical / "retail" / "users.parquet",
        "users",
    )
    write_table(make_items(), canonical / "retail" / "items.parquet", "items")
    params_file = tmp_path / "params.yaml"
    raw = yaml.safe_load((repo_root() / "params.yaml").read_text())
    raw["monitoring"]["drift"]["min_requests"] = 5
    raw["monitoring"]["alerts"].update(
        retry_wait_s=0.01, state_file=str(tmp_path / "state.json"), log_file=str(tmp_path / "alerts.jsonl")
    )
    params_file.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("SHOPAUG_ALERT_WEBHOOK", receiver.url)
    args = [
        "--params",
        str(params_file),
        "--log-dir",
        str(logs),
        "--splits",
        str(splits),
        "--canonical",
        str(canonical),
        "--out",
        str(tmp_path / "drift"),
        "--no-embeddings",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("alert:") and "delivery sent" in result.output
    assert receiver.payloads and (tmp_path / "drift" / "users.html").exists()
    summary = json.loads((tmp_path / "drift" / "drift.json").read_text())
    assert summary["failed"]
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 1 and "delivery cooldown" in second.output and len(receiver.payloads) == 1


def test_missing_or_broken_request_log_gives_one_line_error(tmp_path):
    cmd = [sys.executable, "-m", "monitoring.drift", "--log-dir", str(tmp_path / "none"), "--no-alert"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error:") and "no request-log files" in out.stderr
    (tmp_path / "bad").mkdir()
    pd.DataFrame({"ts": [NOW], "request_id": ["r"]}).to_parquet(tmp_path / "bad" / "a.parquet")
    with pytest.raises(ShopError, match=r"missing column\(s\) \['endpoint'"):
        read_request_log(tmp_path / "bad")
