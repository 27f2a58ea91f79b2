"""Locust load for the benchmark: one endpoint per run, bodies cycled from a JSON file (serving/benchmark.py).

Environment: BENCH_ENDPOINT (recommend | search | ping), BENCH_PAYLOADS (JSON list of request bodies),
BENCH_RATE (total requests per second over all users; 0 = closed loop, each user sends as fast as it can).
"""

import itertools
import json
import os

from locust import FastHttpUser, constant, constant_throughput, task

ENDPOINT = os.environ.get("BENCH_ENDPOINT", "ping")
PAYLOADS = json.loads(open(os.environ["BENCH_PAYLOADS"]).read()) if os.environ.get("BENCH_PAYLOADS") else [{}]
RATE = float(os.environ.get("BENCH_RATE", "0"))
USERS = int(os.environ.get("BENCH_USERS", "1"))
_bodies = itertools.cycle(PAYLOADS)


class ServiceUser(FastHttpUser):
    wait_time = constant_throughput(RATE / USERS) if RATE > 0 else constant(0)

    @task
    def call(self) -> None:
        with self.client.post(
            f"/{ENDPOINT}", json=next(_bodies), name=ENDPOINT, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
