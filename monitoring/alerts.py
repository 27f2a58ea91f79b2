"""Alert delivery: a Slack-compatible JSON webhook with retries, a cool-down per alert, and a JSON-lines log."""

import datetime as dt
import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from core.errors import ShopError
from core.io import write_json
from core.params import AlertParams

log = logging.getLogger(__name__)
WEBHOOK_ENV = "SHOPAUG_ALERT_WEBHOOK"


class WebhookError(Exception):
    """The receiver did not accept the alert (network error or HTTP status >= 300)."""


def alert_key(source: str, failed: list[str]) -> str:
    """Stable id of an alert: the same failed tests from the same source give the same key."""
    return hashlib.sha256(json.dumps([source, sorted(failed)]).encode()).hexdigest()[:16]


def slack_payload(title: str, failed: list[str], details: dict) -> dict:
    """Slack incoming-webhook JSON (`text` + blocks); any JSON receiver can read `text` and `shopaug`."""
    lines = "\n".join(f"• {name}" for name in failed[:20])
    return {
        "text": f":rotating_light: {title}: {len(failed)} test(s) failed",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n{lines}"}}],
        "shopaug": details,
    }


def post_json(url: str, payload: dict, p: AlertParams) -> int:
    """POST `payload` to `url`, retrying network errors and HTTP errors (tenacity, exponential backoff)."""

    @retry(
        stop=stop_after_attempt(p.retries + 1),
        wait=wait_exponential(multiplier=p.retry_wait_s, max=30),
        retry=retry_if_exception_type(WebhookError),
        reraise=True,
    )
    def send() -> int:
        request = urllib.request.Request(
            url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=p.timeout_s) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            raise WebhookError(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise WebhookError(str(getattr(exc, "reason", exc))) from None

    return send()


def _read_state(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("alerts: %s is not valid JSON; starting a fresh cool-down state", path)
        return {}


def raise_alert(
    title: str,
    source: str,
    failed: list[str],
    details: dict,
    p: AlertParams,
    root: Path,
    now: dt.datetime | None = None,
) -> dict:
    """Log the alert and send it unless the same alert was sent within the cool-down; return the log record.

    The record's `delivery` is `sent`, `cooldown` (suppressed), `no_webhook` or `failed: <reason>`.
    """
    now = now or dt.datetime.now(dt.UTC)
    key = alert_key(source, failed)
    state_path = Path(p.state_file) if Path(p.state_file).is_absolute() else root / p.state_file
    log_path = Path(p.log_file) if Path(p.log_file).is_absolute() else root / p.log_file
    state = _read_state(state_path)
    url = os.environ.get(WEBHOOK_ENV) or p.webhook_url
    last = state.get(key, {}).get("sent_at")
    cooling = last is not None and now - dt.datetime.fromisoformat(last) < dt.timedelta(minutes=p.cooldown_minutes)
    if cooling:
        delivery = "cooldown"
    elif not url:
        delivery = "no_webhook"
    else:
        try:
            post_json(url, slack_payload(title, failed, details), p)
            delivery = "sent"
            state[key] = {"sent_at": now.isoformat(), "title": title, "failed": sorted(failed)}
            write_json(state, state_path)
        except WebhookError as exc:
            delivery = f"failed: {exc}"
    record = {
        "time": now.isoformat(),
        "key": key,
        "source": source,
        "title": title,
        "failed": sorted(failed),
        "delivery": delivery,
        "details": details,
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
    if delivery.startswith("failed"):
        log.error("alerts: webhook delivery %s", delivery)
    return record


def check_webhook_url(url: str | None) -> None:
    """Refuse a webhook URL that is not http(s)."""
    if url and not url.startswith(("http://", "https://")):
        raise ShopError(f"monitoring.alerts.webhook_url / ${WEBHOOK_ENV}: '{url}' is not an http(s) URL")
