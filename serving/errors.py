"""ASGI middleware: every 4xx answer becomes `{"error": "<one line>"}` naming the field or id at fault."""

import json

MAX_REASON = 300


def one_line_reason(body: bytes, status: int) -> str:
    """Return a single-line reason from a BentoML/pydantic error body (validation details, [{"error"}], text)."""
    try:
        data = json.loads(body)
    except ValueError:
        data = body.decode("utf-8", "replace")
    if isinstance(data, list) and data:
        data = data[0]
    reason = None
    if isinstance(data, dict):
        detail = data.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            first = detail[0]
            where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
            reason = f"{where}: {first.get('msg', 'invalid value')}"
            if len(detail) > 1:
                reason += f" (and {len(detail) - 1} more)"
        else:
            reason = str(data.get("error") or data.get("detail") or "")
    elif isinstance(data, str):
        reason = data
    reason = " ".join((reason or f"HTTP {status}").split())
    return reason[:MAX_REASON]


class OneLineErrors:
    """Rewrite 4xx response bodies; other responses stream through untouched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict = {}
        chunks: list[bytes] = []

        async def rewrite(message):
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                held["start"] = message
                return
            if "start" not in held or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            start = held["start"]
            payload = json.dumps({"error": one_line_reason(b"".join(chunks), start["status"])}).encode()
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")
            ]
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": payload})

        await self.app(scope, receive, rewrite)
