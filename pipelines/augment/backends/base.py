"""The text-generator interface every backend implements, its requests, prompts and on-disk cache."""

import hashlib
import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

TASKS = ("query", "doc2query", "paraphrase", "text")
DOC2QUERY_PROMPT = "Product: {title}\nQuery:"  # what a doc2query-fine-tuned model continues (doc2query.py)


@dataclass(frozen=True)
class Request:
    """One generation request: a task, its input record, optional few-shot examples, and how many outputs.

    task `query`: record = an item (title, description, category, price_band) -> shopper queries for it.
    task `doc2query`: record = {"title": ...} -> queries from a model fine-tuned on `DOC2QUERY_PROMPT` + query.
    task `paraphrase`: record = {"query": ...} -> rewordings of a real training query.
    task `text`: record = {"prompt": ...} -> free text (LLM backends only).
    `examples` are (input, output) pairs drawn from real training data only.
    """

    task: str
    record: dict
    n: int = 1
    examples: tuple[tuple[str, str], ...] = field(default=())


def _item_line(record: dict) -> str:
    parts = [f"title: {record.get('title', '')}"]
    for key in ("category", "price_band", "description"):
        if record.get(key):
            parts.append(f"{key.replace('_', ' ')}: {str(record[key])[:300]}")
    return "; ".join(parts)


def render_prompt(request: Request) -> str:
    """The instruction an LLM backend receives for `request` (InPars-style few-shot for queries)."""
    if request.task == "text":
        return str(request.record["prompt"])
    if request.task == "doc2query":
        return DOC2QUERY_PROMPT.format(title=" ".join(str(request.record["title"]).split())[:300])
    if request.task == "query":
        shots = "".join(f"Product: {src}\nQuery: {out}\n\n" for src, out in request.examples)
        return (
            "Write a short search query a shopper would type to find this product on a home-improvement "
            "store website. Reply with the query only.\n\n"
            f"{shots}Product: {_item_line(request.record)}\nQuery:"
        )
    if request.task == "paraphrase":
        shots = "".join(f"Query: {src}\nParaphrase: {out}\n\n" for src, out in request.examples)
        return (
            "Rewrite the shopper's search query with different words but the same intent. Reply with the "
            f"rewritten query only.\n\n{shots}Query: {request.record['query']}\nParaphrase:"
        )
    raise ValueError(f"unknown task '{request.task}'; expected one of {TASKS}")


def clean_output(text: str, task: str = "query") -> str:
    """Queries/paraphrases: the first non-empty line of a reply, without quotes or a leading label, lower-cased
    and collapsed. Free text (`text` task): the reply stripped, case and lines kept."""
    if task == "text":
        return text.strip()
    for line in text.strip().splitlines():
        line = line.strip().strip("\"'`").strip()
        for label in ("query:", "paraphrase:", "- ", "* "):
            if line.lower().startswith(label):
                line = line[len(label) :].strip()
        line = line.strip("\"'`").strip()
        if line:
            return " ".join(line.lower().split())[:200]
    return ""


class GenerationCache:
    """SQLite store of outputs keyed by sha256(backend, model, prompt, params); safe across threads."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS outputs (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    @staticmethod
    def key(backend: str, model: str, prompt: str, params: dict) -> str:
        blob = json.dumps([backend, model, prompt, params], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        with self._lock:
            for start in range(0, len(keys), 900):
                part = keys[start : start + 900]
                marks = ",".join("?" * len(part))
                for key, value in self._db.execute(f"SELECT key, value FROM outputs WHERE key IN ({marks})", part):
                    found[key] = json.loads(value)
        return found

    def put_many(self, values: dict[str, list[str]]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO outputs VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in values.items()],
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class TextGenerator(ABC):
    """Prompts or item records in, text out, in batches; outputs are cached so an unchanged re-run is free.

    Subclasses implement `_generate` for the requests missing from the cache. Results are deterministic for
    a seed: each request's randomness is derived from (seed, its cache key), never from batch order.
    """

    name = "base"

    def __init__(self, model_id: str, settings: dict, cache: GenerationCache | None = None, seed: int = 0):
        self.model_id, self.settings, self.cache, self.seed = model_id, settings, cache, seed
        self.model_hash: str | None = None
        self.stats = {"requests": 0, "cache_hits": 0, "generated": 0}

    def cache_text(self, request: Request) -> str:
        """What identifies a request in the cache: the rendered prompt (LLM backends)."""
        return render_prompt(request)

    def request_key(self, request: Request) -> str:
        params = {**self.settings, "n": request.n, "seed": self.seed, "task": request.task}
        return GenerationCache.key(self.name, f"{self.model_id}@{self.model_hash}", self.cache_text(request), params)

    def generate(self, requests: list[Request]) -> list[list[str]]:
        """Return, per request, up to `request.n` cleaned non-empty texts (cached outputs reused)."""
        keys = [self.request_key(r) for r in requests]
        cached = self.cache.get_many(list(dict.fromkeys(keys))) if self.cache is not None else {}
        todo = {k: r for k, r in zip(keys, requests, strict=True) if k not in cached}
        fresh = dict(zip(todo, self._generate(list(todo.values()), list(todo)), strict=True)) if todo else {}
        if self.cache is not None and fresh:
            self.cache.put_many(fresh)
        self.stats["requests"] += len(requests)
        self.stats["cache_hits"] += len(requests) - len(todo)
        self.stats["generated"] += len(todo)
        return [cached[k] if k in cached else fresh[k] for k in keys]

    def complete(self, prompts: list[str], n: int = 1) -> list[list[str]]:
        """Free-text convenience: `n` completions per prompt."""
        return self.generate([Request("text", {"prompt": p}, n=n) for p in prompts])

    @staticmethod
    def request_seed(seed: int, key: str) -> int:
        return (seed * 1_000_003 + int(key[:12], 16)) % (2**63)

    @abstractmethod
    def _generate(self, requests: list[Request], keys: list[str]) -> list[list[str]]:
        """Generate outputs for `requests` (cache misses); `keys` are their cache keys (for per-request seeds)."""

    def describe(self) -> dict:
        """Backend, model id and weight hash for a manifest."""
        return {
            "backend": self.name,
            "model_id": self.model_id,
            "model_hash": self.model_hash,
            "cache": self.stats,
        }

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
