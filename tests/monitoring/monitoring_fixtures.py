"""Tiny real-looking tables and a local webhook receiver, built in code for the monitoring tests."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd

WORDS = [
    "lamp",
    "solar",
    "outdoor",
    "white",
    "paint",
    "door",
    "handle",
    "chrome",
    "faucet",
    "kitchen",
    "wood",
    "deck",
    "screw",
    "stainless",
    "steel",
    "light",
    "bulb",
    "led",
    "garden",
    "hose",
]
TITLES = [
    "RED HEART LANTERN",
    "WHITE METAL CANDLE HOLDER",
    "BLUE SPOTTY MUG",
    "GARDEN TOOL SET",
    "PAPER CHAIN KIT",
    "VINTAGE BELL",
    "SILVER STAR DECORATION",
    "PINK TEA CUP",
    "WOODEN HEART",
    "GLASS JAR",
]


def make_queries(n: int, seed: int, relevance_shift: float = 0.0, source: str = "homedepot") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    queries = [" ".join(rng.choice(WORDS, size=rng.integers(1, 4), replace=False)) for _ in range(n)]
    return pd.DataFrame(
        {
            "query_id": [f"q{seed}_{i}" for i in range(n)],
            "query": queries,
            "item_id": [str(100000 + int(i)) for i in rng.integers(0, 400, n)],
            "relevance": np.clip(rng.choice([0.5, 0.665, 0.835, 1.0], n) + relevance_shift, 0, 1),
            "is_synthetic": source != "homedepot",
            "source": source,
            "parent_id": pd.NA,
        }
    )


def make_items() -> pd.DataFrame:
    n = len(TITLES)
    return pd.DataFrame(
        {
            "item_id": [str(20000 + i) for i in range(n)],
            "title": TITLES,
            "description": "",
            "category": "",
            "price": np.linspace(0.5, 5, n),
            "is_synthetic": False,
            "source": "online_retail",
            "parent_id": pd.NA,
        }
    )


def make_purchases(n_users: int, seed: int, prefix: str = "", start: str = "2011-01-03") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        user = f"{prefix}{13000 + u}"
        for b in range(int(rng.integers(2, 5))):
            ts = pd.Timestamp(start, tz="UTC") + pd.Timedelta(
                days=int(rng.integers(0, 200)), hours=int(rng.integers(8, 18))
            )
            for item in rng.choice(10, size=int(rng.integers(1, 5)), replace=False):
                q = int(rng.integers(1, 13))
                rows.append((user, str(20000 + int(item)), ts, "purchase", q, q * 1.25, f"{user}-{b}"))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "event", "quantity", "value", "basket_id"])
    return frame.assign(
        is_synthetic=bool(prefix), source="online_retail" if not prefix else "synthetic_users", parent_id=pd.NA
    )


class Receiver:
    """A local webhook receiver (stdlib http.server on 127.0.0.1, free port) that can fail the first calls."""

    def __init__(self, fail_first: int = 0):
        self.payloads, self.calls, self.fail_first = [], 0, fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                receiver.calls += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.calls <= receiver.fail_first:
                    self.send_response(500)
                else:
                    receiver.payloads.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
