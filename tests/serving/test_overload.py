"""Overload: requests over the in-flight limit or past their deadline get a fast 503 with Retry-After."""

import asyncio
import concurrent.futures
import time

import httpx
from serving_fixture_models import SLOW_DEADLINE_MS, SLOW_QUERY_S

from serving.overload import LoadShedding


def test_overloaded_requests_get_a_fast_503_with_retry_after_and_the_service_stays_healthy(slow_server, world):
    def search(i: int) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = httpx.post(f"{slow_server}/search", json={"query": f"drill {i}", "k": 3}, timeout=30)
        return response, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(search, range(12)))
    for response, took in results:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1" and "\n" not in response.json()["error"]
        assert took < SLOW_QUERY_S + 2  # at the deadline or at once: never a hang
    reasons = {response.json()["error"] for response, _ in results}
    assert any("in flight" in r for r in reasons) and any(f"{SLOW_DEADLINE_MS} ms" in r for r in reasons)

    # the slots are free again: endpoints without encoder work are served; health and metrics stay outside
    item = world["retail"]["items"]["item_id"].iloc[0]
    assert httpx.post(f"{slow_server}/similar", json={"item_id": item, "k": 3}, timeout=30).status_code == 200
    assert httpx.get(f"{slow_server}/readyz").status_code == 200
    metrics = httpx.get(f"{slow_server}/metrics").text
    assert 'shopaug_requests_shed_total{endpoint="search",reason="deadline"}' in metrics
    assert 'shopaug_requests_shed_total{endpoint="search",reason="over_capacity"}' in metrics


def test_load_shedding_cancels_late_work_lets_started_responses_finish_and_frees_its_slots():
    cancelled = []

    async def app(scope, receive, send):
        try:
            if scope["path"] == "/stream":  # starts at once, ends after the deadline
                await send({"type": "http.response.start", "status": 200, "headers": []})
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            cancelled.append(scope["path"])
            raise
        if scope["path"] != "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    async def call(shedder: LoadShedding, path: str) -> list[dict]:
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        await shedder({"type": "http", "path": path}, None, send)
        return sent

    async def run():
        shedder = LoadShedding(app, ["/slow", "/stream"], max_in_flight=1, deadline_s=0.05)
        late, busy = await asyncio.gather(call(shedder, "/slow"), call(shedder, "/slow"))
        stream = await call(shedder, "/stream")
        free = await call(LoadShedding(app, ["/other"], 1, 0.05), "/slow")  # not a guarded path
        return shedder, late, busy, stream, free

    shedder, late, busy, stream, free = asyncio.run(run())
    assert late[0]["status"] == busy[0]["status"] == 503 and (b"retry-after", b"1") in late[0]["headers"]
    assert b"within 50 ms" in late[1]["body"] and b"1 requests in flight" in busy[1]["body"]
    assert cancelled == ["/slow"] and shedder.in_flight == 0
    assert stream[0]["status"] == 200 and stream[1]["body"] == b"done"
    assert free[0]["status"] == 200
