"""Load shedding: a bounded number of requests in flight and a deadline per request, both answered with a fast 503.

BentoML's own `traffic` settings answer 429 (`max_concurrency`) and 504 (`timeout`) without `Retry-After`; this
ASGI middleware gives load balancers and clients the standard "busy, retry later" answer instead.
"""

import asyncio
import contextlib
import json
import math
from collections.abc import Iterable

from prometheus_client import Counter

SHED = Counter(
    "shopaug_requests_shed",
    "requests answered 503 + Retry-After instead of being served",
    ["endpoint", "reason"],
)


class LoadShedding:
    """ASGI middleware over `paths`: at most `max_in_flight` requests at once, each answered within `deadline_s`.

    A request over the limit gets 503 at once; one not answered by its deadline is cancelled (its encoder input
    leaves the batcher queue unencoded) and gets 503. Both carry `Retry-After` (the deadline rounded up to
    seconds). A response that has started is let finish.
    """

    def __init__(self, app, paths: Iterable[str], max_in_flight: int, deadline_s: float):
        self.app, self.paths = app, frozenset(paths)
        self.max_in_flight, self.deadline_s = max_in_flight, deadline_s
        self.retry_after = str(max(1, math.ceil(deadline_s))).encode()
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_in_flight:
            return await self._unavailable(scope, send, "over_capacity", f"{self.max_in_flight} requests in flight")
        self.in_flight += 1
        responded = asyncio.Event()

        async def marked(message):
            responded.set()
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, marked))
        waiter = asyncio.ensure_future(responded.wait())
        try:
            await asyncio.wait({task, waiter}, timeout=self.deadline_s, return_when=asyncio.FIRST_COMPLETED)
            if not responded.is_set() and task.cancel():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                if not responded.is_set():
                    deadline_ms = round(self.deadline_s * 1000)
                    return await self._unavailable(scope, send, "deadline", f"not answered within {deadline_ms} ms")
            await task
        finally:
            waiter.cancel()
            task.cancel()  # no-op once done; stops the request's work when this call itself is cancelled
            self.in_flight -= 1

    async def _unavailable(self, scope, send, reason: str, detail: str) -> None:
        SHED.labels(endpoint=scope["path"].strip("/"), reason=reason).inc()
        body = json.dumps({"error": f"service overloaded: {detail}; retry later"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", self.retry_after),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
