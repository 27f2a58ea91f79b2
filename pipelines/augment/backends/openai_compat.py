"""The openai backend: an OpenAI-compatible HTTP server (vLLM, TGI, Ollama, hosted APIs) over httpx.

Requests run concurrently up to `concurrency`; 429, 5xx, timeouts and dropped connections are retried with
exponential backoff (tenacity); an unreachable server or a malformed reply becomes one ShopError.
"""

import asyncio
import json
import os

import httpx
from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_attempt, wait_exponential

from core.errors import ShopError
from pipelines.augment.backends.base import Request, TextGenerator, clean_output


class _Retryable(Exception):
    """A transient failure worth another try (rate limit, server error, timeout, connection drop)."""


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, _Retryable | httpx.TimeoutException | httpx.TransportError)


class OpenAIBackend(TextGenerator):
    """POSTs one request per prompt to /chat/completions (or /completions) and returns its `n` choices."""

    name = "openai"

    def __init__(
        self,
        model_id: str,
        settings: dict,
        cache=None,
        seed: int = 0,
        base_url: str = "",
        endpoint: str = "chat",
        concurrency: int = 8,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        retry_wait_s: float = 1.0,
        api_key_env: str = "OPENAI_API_KEY",
    ):
        super().__init__(model_id, settings, cache, seed)
        self.base_url = base_url.rstrip("/")
        self.endpoint, self.concurrency, self.timeout_s = endpoint, concurrency, timeout_s
        self.max_retries, self.retry_wait_s = max_retries, retry_wait_s
        self.api_key = os.environ.get(api_key_env, "")
        self.model_hash = None  # a served model has no weight file here; the model id names it
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "retries": 0}

    def _payload(self, request: Request, seed: int) -> dict:
        s = self.settings
        body = {
            "model": self.model_id,
            "n": request.n,
            "temperature": s["temperature"],
            "top_p": s["top_p"],
            "max_tokens": s["max_new_tokens"],
            "seed": seed,
        }
        prompt = self.cache_text(request)
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    def _parse(self, response: httpx.Response) -> list[str]:
        try:
            data = response.json()
            choices = data["choices"]
            texts = [c["message"]["content"] if self.endpoint == "chat" else c["text"] for c in choices]
            if not all(isinstance(t, str) for t in texts):
                raise TypeError("choice text is not a string")
        except (json.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
            raise ShopError(
                f"augment.backend.base_url: {self.base_url} returned a malformed "
                f"{self.endpoint} completion ({type(exc).__name__}: {exc}); is it OpenAI-compatible?"
            ) from None
        usage = data.get("usage") or {}
        for key in ("prompt_tokens", "completion_tokens"):
            self.usage[key] += int(usage.get(key) or 0)
        return texts

    async def _one(self, client: httpx.AsyncClient, gate: asyncio.Semaphore, request: Request, key: str) -> list[str]:
        url = f"{self.base_url}/{'chat/completions' if self.endpoint == 'chat' else 'completions'}"
        payload = self._payload(request, self.request_seed(self.seed, key) % (2**31))
        async with gate:
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self.max_retries + 1),
                reraise=False,
                wait=wait_exponential(multiplier=self.retry_wait_s, max=30 * self.retry_wait_s),
                retry=retry_if_exception(_transient),
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        if attempt.retry_state.attempt_number > 1:
                            self.usage["retries"] += 1
                        response = await client.post(url, json=payload)
                        if response.status_code == 429 or response.status_code >= 500:
                            raise _Retryable(f"HTTP {response.status_code}")
                        if response.status_code >= 400:
                            raise ShopError(
                                f"augment.backend: {url} refused the request with HTTP "
                                f"{response.status_code}: {response.text[:200]}"
                            )
                        texts = self._parse(response)
            except RetryError as exc:
                cause = exc.last_attempt.exception()
                what = (
                    "is not reachable"
                    if isinstance(cause, httpx.ConnectError)
                    else f"timed out after {self.timeout_s}s"
                    if isinstance(cause, httpx.TimeoutException)
                    else f"kept failing ({cause})"
                )
                raise ShopError(
                    f"augment.backend.base_url: the OpenAI-compatible server at {self.base_url} {what} "
                    f"({self.max_retries + 1} attempts); start it or fix the URL"
                ) from None
        outs = [clean_output(t, request.task) for t in texts]
        return list(dict.fromkeys(o for o in outs if o))[: request.n]

    async def _all(self, requests: list[Request], keys: list[str]) -> list[list[str]]:
        gate = asyncio.Semaphore(self.concurrency)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=headers, limits=limits) as client:
            return list(
                await asyncio.gather(*(self._one(client, gate, r, k) for r, k in zip(requests, keys, strict=True)))
            )

    def _generate(self, requests: list[Request], keys: list[str]) -> list[list[str]]:
        return asyncio.run(self._all(requests, keys))
