"""Adaptive micro-batching of encoder calls inside the service process, bounded by an explicit max latency.

BentoML's own adaptive batching works on batchable APIs whose HTTP body is a list, or across a process hop to
a dependent service; ours batches the encoder call *inside* the single-object endpoints, so the endpoint
schemas stay one request = one object and a champion swap replaces model, index and batcher together.
"""

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
from prometheus_client import Histogram

# on the service's /metrics; `task` is the bundle's task (retail: user encoder, search: query encoder)
BATCH_SIZE = Histogram(
    "shopaug_batch_size",
    "inputs per encoder call of the adaptive batcher",
    ["task"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
QUEUE_WAIT = Histogram(
    "shopaug_batch_queue_wait_seconds",
    "time an input waited in the adaptive batcher before its encoder call started",
    ["task"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class AdaptiveBatcher:
    """Queue single encoder inputs; run them as one batch when full, when the oldest waited `max_latency_ms`,
    or at once when load is low (the last batch held one request), so a lone request never waits.

    `encode(batch)` maps a list of inputs to an (n, d) array; it runs on `executor` (one model thread). Inputs
    whose request was cancelled (past its deadline) leave the queue unencoded. Batch sizes and queue waits go to
    Prometheus under `task`.
    """

    def __init__(
        self,
        encode: Callable[[list[Any]], np.ndarray],
        executor: Executor,
        max_batch_size: int,
        max_latency_ms: float,
        task: str = "encoder",
    ):
        self.encode, self.executor = encode, executor
        self._size_metric, self._wait_metric = BATCH_SIZE.labels(task=task), QUEUE_WAIT.labels(task=task)
        self.max_batch_size, self.max_latency_s = max_batch_size, max_latency_ms / 1000
        self._pending: list[tuple[Any, asyncio.Future, float]] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._last_batch = 1
        self.batch_sizes: list[int] = []  # recent sizes, for tests and the benchmark

    async def submit(self, item: Any) -> np.ndarray:
        """Return the encoder's output row for `item` (computed in a batch with concurrent callers)."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._run())
        future = loop.create_future()
        self._pending.append((item, future, time.perf_counter()))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._cork()
                live = [entry for entry in self._pending if not entry[1].done()]
                batch, self._pending = live[: self.max_batch_size], live[self.max_batch_size :]
                if not batch:
                    continue
                self._last_batch = len(batch)
                self.batch_sizes = (self.batch_sizes + [len(batch)])[-1000:]
                self._size_metric.observe(len(batch))
                now = time.perf_counter()
                for _, _, queued in batch:
                    self._wait_metric.observe(now - queued)
                try:
                    rows = await loop.run_in_executor(self.executor, self.encode, [item for item, _, _ in batch])
                except Exception as exc:  # every waiting request gets the error, the worker keeps running
                    for _, future, _ in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for row, (_, future, _) in zip(rows, batch, strict=True):
                    if not future.done():
                        future.set_result(row)

    async def _cork(self) -> None:
        """Under load, wait for as many requests as the last batch held, never past the oldest one's deadline."""
        if self.max_batch_size == 1 or self._last_batch <= 1:
            await asyncio.sleep(0)  # let requests already parsed by the event loop join
            return
        deadline = self._pending[0][2] + self.max_latency_s
        target = min(self._last_batch, self.max_batch_size)
        while len(self._pending) < target and (left := deadline - time.perf_counter()) > 0:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=left)
            except TimeoutError:
                break


def stack_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Return the (n, d) float32 matrix of `rows`."""
    return np.ascontiguousarray(np.stack(rows), dtype=np.float32)
