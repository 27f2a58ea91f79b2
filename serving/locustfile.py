"""Locust load for the benchmark: one endpoint per run, bodies cycled from a JSON file (serving/benchmark.py).

Environment: BENCH_ENDPOINT (recommend | search | ping), BENCH_PAYLOADS (JSON list of request bodies),
BENCH_RATE (total requests per second over all users, as Poisson arrivals; 0 = closed loop, each user sends as
fast as it can). Each user keeps its own schedule of send times, exponential gaps with mean USERS / RATE, and
waits only until the next one: the offered rate does not drop when answers get slow (a wait counted from each
answer would send at most USERS / (gap + latency) requests per second). Fixed per-user cadences would make
users started together fire in synchronised bursts, measuring burst queueing rather than a steady rate.
"""

import itertools
import json
import os
import random
import time

from locust import FastHttpUser, task

ENDPOINT = os.environ.get("BENCH_ENDPOINT", "ping")
PAYLOADS = json.loads(open(os.environ["BENCH_PAYLOADS"]).read()) if os.environ.get("BENCH_PAYLOADS") else [{}]
RATE = float(os.environ.get("BENCH_RATE", "0"))
USERS = int(os.environ.get("BENCH_USERS", "1"))
_bodies = itertools.cycle(PAYLOADS)


class ServiceUser(FastHttpUser):
    def wait_time(self) -> float:
        """Seconds until this user's next scheduled send (0 when it is late: it catches up at once)."""
        if RATE <= 0:
            return 0.0
        self.next_send += random.expovariate(RATE / USERS)
        return max(0.0, self.next_send - time.monotonic())

    def on_start(self) -> None:
        self.next_send = time.monotonic()
        if RATE > 0:  # users spawn together: start each one a random wait later, not all in one burst
            self.wait()

    @task
    def call(self) -> None:
        with self.client.post(f"/{ENDPOINT}", json=next(_bodies), name=ENDPOINT, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
