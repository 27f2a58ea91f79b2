"""Locust load for the benchmark: one endpoint per run, bodies cycled from a JSON file (serving/benchmark.py).

Environment: BENCH_ENDPOINT (recommend | search | ping), BENCH_PAYLOADS (JSON list of request bodies),
BENCH_RATE (total requests per second over all users, as Poisson arrivals: each user waits an exponential time
with mean USERS / RATE; 0 = closed loop, each user sends as fast as it can). Fixed per-user cadences would make
users started together fire in synchronised bursts, measuring burst queueing rather than a steady rate.
"""

import itertools
import json
import os
import random

from locust import FastHttpUser, constant, task

ENDPOINT = os.environ.get("BENCH_ENDPOINT", "ping")
PAYLOADS = json.loads(open(os.environ["BENCH_PAYLOADS"]).read()) if os.environ.get("BENCH_PAYLOADS") else [{}]
RATE = float(os.environ.get("BENCH_RATE", "0"))
USERS = int(os.environ.get("BENCH_USERS", "1"))
_bodies = itertools.cycle(PAYLOADS)


class ServiceUser(FastHttpUser):
    wait_time = (lambda self: random.expovariate(RATE / USERS)) if RATE > 0 else constant(0)

    def on_start(self) -> None:
        if RATE > 0:  # users spawn together: start each one a random wait later, not all in one burst
            self.wait()

    @task
    def call(self) -> None:
        with self.client.post(f"/{ENDPOINT}", json=next(_bodies), name=ENDPOINT, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
