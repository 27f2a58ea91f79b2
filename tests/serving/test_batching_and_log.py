"""Adaptive batcher, one-line error bodies and the request log, without a server."""

import asyncio
import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import numpy as np
import pandas as pd
from moto.server import ThreadedMotoServer
from prometheus_client import REGISTRY

from core.logfolder import LogFolder
from monitoring.drift import read_request_log
from serving.batching import AdaptiveBatcher
from serving.errors import one_line_reason
from serving.request_log import RequestLog


def slow_encode(batch: list[int]) -> np.ndarray:
    time.sleep(0.02)  # a model call costs about the same for 1 or 32 inputs
    return np.array([[x, x * 2] for x in batch], dtype=np.float32)


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    async def run():
        batcher = AdaptiveBatcher(slow_encode, ThreadPoolExecutor(1), max_batch_size=16, max_latency_ms=10)
        rows = await asyncio.gather(*(batcher.submit(i) for i in range(40)))
        return batcher, rows

    batcher, rows = asyncio.run(run())
    assert [int(r[0]) for r in rows] == list(range(40)) and all(r[1] == 2 * r[0] for r in rows)
    assert max(batcher.batch_sizes) == 16 and len(batcher.batch_sizes) <= 5


def test_a_lone_request_does_not_wait_for_max_latency():
    async def run():
        batcher = AdaptiveBatcher(lambda b: np.zeros((len(b), 1)), ThreadPoolExecutor(1), 32, max_latency_ms=500)
        started = time.perf_counter()
        await batcher.submit(1)
        return time.perf_counter() - started

    assert asyncio.run(run()) < 0.25


def test_batching_off_runs_one_request_per_call():
    async def run():
        batcher = AdaptiveBatcher(slow_encode, ThreadPoolExecutor(1), max_batch_size=1, max_latency_ms=10)
        await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        return batcher.batch_sizes

    assert asyncio.run(run()) == [1] * 5


def test_an_encoder_error_reaches_every_waiting_request_and_the_batcher_survives():
    def broken(batch):
        if 0 in batch:
            raise ValueError("boom")
        return np.ones((len(batch), 1))

    async def run():
        batcher = AdaptiveBatcher(broken, ThreadPoolExecutor(1), 8, 5)
        first = await asyncio.gather(batcher.submit(0), return_exceptions=True)
        return first, await batcher.submit(3)

    first, later = asyncio.run(run())
    assert isinstance(first[0], ValueError) and later[0] == 1


def test_cancelled_requests_leave_the_queue_unencoded_and_batches_are_measured():
    encoded: list[int] = []

    def encode(batch):
        encoded.extend(batch)
        time.sleep(0.05)
        return np.zeros((len(batch), 1))

    async def run():
        batcher = AdaptiveBatcher(encode, ThreadPoolExecutor(1), 4, 5, task="unit")
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)  # 0 is being encoded; 1 and 2 queue behind it, 2 gives up (its deadline)
        late, kept = asyncio.ensure_future(batcher.submit(2)), asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0)
        late.cancel()
        await asyncio.gather(first, kept)

    asyncio.run(run())
    assert encoded == [0, 1]
    assert REGISTRY.get_sample_value("shopaug_batch_size_count", {"task": "unit"}) == 2
    assert REGISTRY.get_sample_value("shopaug_batch_queue_wait_seconds_count", {"task": "unit"}) == 2


def test_validation_bodies_become_one_line_naming_the_field():
    body = (
        b'{"error": "1 validation error for SearchRequest", '
        b'"detail": [{"loc": ["k"], "msg": "Input should be\\n <= 100"}]}'
    )
    assert one_line_reason(body, 400) == "k: Input should be <= 100"
    assert one_line_reason(b'[{"error": "item_id \'x\' is in neither catalogue"}]', 404).startswith("item_id 'x'")
    assert one_line_reason(b"", 400) == "HTTP 400"


LOG_ROW = {
    "ts": dt.datetime.now(dt.UTC),
    "request_id": "r",
    "endpoint": "search",
    "user_id": None,
    "query": "q",
    "item_id": None,
    "k": 2,
    "strategy": "search",
    "returned_items": ["a", "b"],
    "scores": [0.5, 0.4],
    "latency_ms": 1.5,
}


def test_request_log_writes_bounded_files_and_drops_over_the_buffer(tmp_path):
    log = RequestLog(tmp_path, sample_rate=1.0, rows_per_file=3, flush_s=60, max_files=2, max_buffered_rows=7)
    for _ in range(10):
        log.record(LOG_ROW)
    log.close()
    files = sorted(tmp_path.glob("requests-*.parquet"))
    assert len(files) <= 2 and log.dropped + 7 >= 10
    frame = pd.read_parquet(files[-1])
    assert frame["returned_items"].iloc[0].tolist() == ["a", "b"] and str(frame["ts"].dtype) == "datetime64[us, UTC]"


def test_each_replica_prunes_only_its_own_request_log_files(tmp_path):
    def write(replica: str, files: int) -> RequestLog:
        log = RequestLog(tmp_path, 1.0, rows_per_file=1, flush_s=60, max_files=2, max_buffered_rows=10, replica=replica)
        for _ in range(files):
            log.record({"request_id": replica, "endpoint": "search"})
            log.flush()
        log.close()
        return log

    (tmp_path / "part-0.parquet").write_bytes(b"")  # a file no replica wrote
    short, longer = write("pod-1", 2), write("pod-1.x", 5)  # "pod-1-x" after sanitising: shares a prefix
    names = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert "part-0.parquet" in names and short.replica == "pod-1" and longer.replica == "pod-1-x"
    assert sum(n.startswith("requests-pod-1.") for n in names) == 2  # pod-1's files, untouched by pod-1-x
    assert sum(n.startswith("requests-pod-1-x.") for n in names) == 2
    first, second = (RequestLog(tmp_path, 1.0, 1, 60, 1, 1) for _ in range(2))  # default ids: one per process start
    assert first.replica != second.replica
    first.close()
    second.close()


def test_sampling_keeps_about_the_configured_share(tmp_path):
    log = RequestLog(
        tmp_path, sample_rate=0.1, rows_per_file=10_000, flush_s=60, max_files=5, max_buffered_rows=10_000, seed=1
    )
    for _ in range(2000):
        log.record({"request_id": "r"})
    assert 120 < len(log._rows) < 280
    log._rows.clear()
    log.close()


def test_replicas_share_a_request_log_in_an_object_store_that_monitoring_reads(monkeypatch):
    """Two replicas write to one S3 location (moto's S3 server speaks the real protocol, as MinIO would): each
    prunes only its own objects, and monitoring.drift reads every replica's rows back from the same URI."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1").create_bucket(Bucket="logs")
        location = f"s3://logs/requests?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        for replica, rows in (("pod-0", 4), ("pod-1", 1)):
            log = RequestLog(
                location, 1.0, rows_per_file=1, flush_s=60, max_files=2, max_buffered_rows=10, replica=replica
            )
            for n in range(rows):
                log.record({**LOG_ROW, "request_id": f"{replica}-{n}"})
                log.flush()
            log.close()
        names = LogFolder(location).files()
        assert [n.split(".")[0] for n in names] == ["requests-pod-0"] * 2 + ["requests-pod-1"]
        frame = read_request_log(location)
        assert sorted(frame["request_id"]) == ["pod-0-2", "pod-0-3", "pod-1-0"]
        assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    finally:
        server.stop()
