"""Sampled, bounded request log: Parquet files in data/serving/requests/ that the monitoring stage reads; and
the event log (the same writer, every row, never pruned): /events rows as canonical interactions that ingest
reads back (pipelines/serving_events.py).

Several replicas may share a folder, on a shared volume or in an object store (`s3://...`, core/logfolder.py):
each names its files after its own replica id and prunes only those.
"""

import datetime as dt
import logging
import os
import random
import re
import socket
import threading
import uuid
from collections import deque
from pathlib import Path

import pyarrow as pa

from core.logfolder import LogFolder

logger = logging.getLogger(__name__)

# The contract with monitoring (CONTRACTS.md): ids, query text, returned items, scores, latency; no other
# personal data (no country, no recent-item lists, no client address).
REQUEST_LOG_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us", tz="UTC")),
        ("request_id", pa.string()),
        ("endpoint", pa.string()),
        ("user_id", pa.string()),
        ("query", pa.string()),
        ("item_id", pa.string()),
        ("k", pa.int64()),
        ("strategy", pa.string()),
        ("returned_items", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float64())),
        ("latency_ms", pa.float64()),
    ]
)
# The contract with ingest: a canonical interaction row (core/schema.py) per event, plus the request it came in.
EVENT_LOG_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("event", pa.string()),
        ("quantity", pa.float64()),
        ("value", pa.float64()),
        ("basket_id", pa.string()),
        ("source", pa.string()),
        ("request_id", pa.string()),
    ]
)


def replica_id() -> str:
    """A new id for this process: host name, process id and a random part (unique even for two pid-1 containers
    on one host name)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class RequestLog:
    """Keep a sample of request rows in a bounded buffer; a background thread writes them as Parquet files.

    A file is written every `flush_s` seconds or when `rows_per_file` rows wait; beyond `max_files` this replica's
    oldest files are deleted (other replicas' files never are; None keeps all); rows arriving while
    `max_buffered_rows` wait are dropped (counted in `dropped`). Files are named
    `<prefix>-<replica>.<time>-<sequence>.parquet` and hold `schema`'s columns.
    """

    def __init__(
        self,
        directory: Path | str,
        sample_rate: float,
        rows_per_file: int,
        flush_s: float,
        max_files: int | None,
        max_buffered_rows: int,
        seed: int | None = None,
        replica: str | None = None,
        schema: pa.Schema = REQUEST_LOG_SCHEMA,
        prefix: str = "requests",
    ):
        self.folder = LogFolder(directory)  # a local folder or an object-store location
        # no dots in the id: `<prefix>-<replica>.` is then the prefix of this replica's files only
        self.replica = re.sub(r"[^A-Za-z0-9-]", "-", replica or replica_id())
        self.schema, self.prefix = schema, prefix
        self.sample_rate, self.rows_per_file, self.flush_s = sample_rate, rows_per_file, flush_s
        self.max_files = max_files
        self._rows: deque[dict] = deque()
        self._max_buffered = max_buffered_rows
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sequence = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name=f"{prefix}-log", daemon=True)
        self._thread.start()

    def record(self, row: dict) -> None:
        """Add one row (the schema's columns) if it falls in the sample; never blocks on IO."""
        if self.sample_rate < 1 and self._random.random() >= self.sample_rate:
            return
        with self._lock:
            if len(self._rows) >= self._max_buffered:
                self.dropped += 1
                return
            self._rows.append(row)
            if len(self._rows) >= self.rows_per_file:
                self._wake.set()

    def flush(self) -> str | None:
        """Write the buffered rows (at most `rows_per_file`) as one file; return its name, or None if empty."""
        with self._lock:
            rows = [self._rows.popleft() for _ in range(min(len(self._rows), self.rows_per_file))]
        if not rows:
            return None
        table = pa.Table.from_pylist(rows, schema=self.schema)
        self._sequence += 1
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{self.prefix}-{self.replica}.{stamp}-{self._sequence:06d}.parquet"
        self.folder.write(table, name)
        self._prune()
        return name

    def close(self) -> None:
        """Stop the writer thread and write everything still buffered."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        while self.flush() is not None:
            pass

    def _prune(self) -> None:
        if self.max_files is None:
            return
        files = self.folder.files(f"{self.prefix}-{self.replica}.")
        for old in files[: max(0, len(files) - self.max_files)]:
            self.folder.delete(old)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.flush_s)
            self._wake.clear()
            try:
                while self.flush() is not None and len(self._rows) >= self.rows_per_file:
                    pass
            except Exception:  # a full disk must not take the service down; the rows are lost and logged
                logger.exception("%s log: writing to %s failed", self.prefix, self.folder)
