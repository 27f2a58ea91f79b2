"""Generation backends: the learned offline model, the cache, a tiny local HF model, and the OpenAI protocol."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from search_slice import search_slice

from core.errors import ShopError
from core.params import load_params
from core.schema import validate_table
from pipelines.augment.backends import GenerationCache, Request, clean_output, fit_offline_model, make_backend
from pipelines.augment.backends.offline import OfflineBackend
from pipelines.augment.backends.openai_compat import OpenAIBackend
from pipelines.augment.manifest import check_generators

SETTINGS = {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 8}
BACKEND = load_params().augment.backend


@pytest.fixture(scope="module")
def real():
    s = search_slice()
    return validate_table(s["train"], "queries", "train"), validate_table(s["items"], "items", "items")


@pytest.fixture(scope="module")
def offline_model(real):
    return fit_offline_model(*real)


def item_requests(items, n=3):
    return [Request("query", {"title": t, "category": ""}, n=n) for t in items["title"].head(50)]


# ---------- offline ----------


def test_offline_model_is_learned_from_training_pairs(offline_model, real):
    train, _ = real
    # shoppers rarely type connective words of a title, often its product nouns: the learned keep rates say so
    tokens = (("in", "in", 5, 0), ("faucet", "faucet", 5, 0))
    filler, noun = offline_model.keep_logodds(tokens)
    assert noun > filler
    assert offline_model.pairs_used == int((train["relevance"] >= 0.75).sum())
    lengths = offline_model.joint
    assert lengths and all(abs(cdf[-1] - 1) < 1e-9 for _, cdf in lengths.values())


def test_offline_backend_is_deterministic_and_seed_dependent(offline_model, real):
    _, items = real
    a = OfflineBackend(offline_model, "offline-test", SETTINGS, seed=1).generate(item_requests(items))
    b = OfflineBackend(offline_model, "offline-test", SETTINGS, seed=1).generate(item_requests(items))
    c = OfflineBackend(offline_model, "offline-test", SETTINGS, seed=2).generate(item_requests(items))
    assert a == b and a != c
    assert all(1 <= len(q) <= 3 and len(set(q)) == len(q) for q in a)
    lengths = [len(x.split()) for q in a for x in q]
    assert 1.5 <= np.mean(lengths) <= 6  # real queries average ~3 words


CROSS_PROCESS = """
import hashlib, json, sys
sys.path.insert(0, sys.argv[1])
from search_slice import search_slice
from pipelines.augment.backends import Request, fit_offline_model
from pipelines.augment.backends.offline import OfflineBackend
from core.schema import validate_table
s = search_slice()
model = fit_offline_model(validate_table(s["train"], "queries", "t"), validate_table(s["items"], "items", "i"))
requests = [Request("query", {"title": t}, n=3) for t in s["items"]["title"][:300]]
out = OfflineBackend(model, "m", {}, seed=5).generate(requests)
print(model.fingerprint(), hashlib.sha256(json.dumps(out).encode()).hexdigest())
"""


def test_offline_backend_is_deterministic_across_processes():
    """String hashing differs per process (PYTHONHASHSEED); the learned model and its samples must not."""
    here = str(Path(__file__).parent)
    runs = {
        subprocess.run(
            [sys.executable, "-c", CROSS_PROCESS, here],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        .stdout.strip()
        .splitlines()[-1]
        for seed in ("1", "2")
    }
    assert len(runs) == 1


def test_offline_backend_result_does_not_depend_on_batch_order(offline_model, real):
    _, items = real
    backend = OfflineBackend(offline_model, "offline-test", SETTINGS, seed=3)
    requests = item_requests(items)
    forward = backend.generate(requests)
    backward = backend.generate(requests[::-1])[::-1]
    assert forward == backward


def test_cache_makes_an_unchanged_rerun_free(offline_model, real, tmp_path, monkeypatch):
    _, items = real
    requests = item_requests(items)
    first = OfflineBackend(offline_model, "m", SETTINGS, GenerationCache(tmp_path / "c.sqlite"), seed=0)
    out1 = first.generate(requests)
    assert first.stats["generated"] == len({first.request_key(r) for r in requests})
    second = OfflineBackend(offline_model, "m", SETTINGS, GenerationCache(tmp_path / "c.sqlite"), seed=0)
    monkeypatch.setattr(second, "_generate", lambda *a: pytest.fail("cache miss on an unchanged re-run"))
    assert second.generate(requests) == out1
    assert second.stats["cache_hits"] == len(requests)
    # a changed param is a different cache key
    other = OfflineBackend(offline_model, "m", {**SETTINGS, "temperature": 0.1}, seed=0)
    assert other.request_key(requests[0]) != second.request_key(requests[0])


def test_offline_backend_refuses_free_text(offline_model):
    with pytest.raises(ShopError, match="augment.backend.name"):
        OfflineBackend(offline_model, "m", SETTINGS).complete(["write a poem"])


def test_offline_paraphrase_changes_the_query(offline_model):
    backend = OfflineBackend(offline_model, "m", SETTINGS, seed=0)
    out = backend.generate([Request("paraphrase", {"query": q}, n=2) for q in ("angle bracket", "shower head")])
    assert all(p != q for p, q in zip([o[0] for o in out if o], ("angle bracket", "shower head"), strict=False))


def test_clean_output_takes_the_first_line_without_labels():
    assert clean_output('  Query: "Cordless Drill"\nsecond line') == "cordless drill"
    assert clean_output("\n\n") == ""
    assert clean_output(" Garden Tools\nfor the yard ", task="text") == "Garden Tools\nfor the yard"


# ---------- configuration ----------


def test_unknown_backend_and_generator_and_negative_counts_name_the_key():
    with pytest.raises(ShopError, match=r"augment\.backend\.name"):
        load_params(overrides={"augment": {"backend": {"name": "llama-magic"}}})
    with pytest.raises(ShopError, match=r"augment\.doc2query_v9"):
        load_params(overrides={"augment": {"doc2query_v9": {}}})
    with pytest.raises(ShopError, match=r"generators\.synthetic_queries\.settings\.queries_per_item"):
        check_generators(load_params(overrides=settings("synthetic_queries", queries_per_item=-1)))
    with pytest.raises(ShopError, match=r"generators\.hard_negatives\.settings\.negatives_per_query"):
        check_generators(load_params(overrides=settings("hard_negatives", negatives_per_query=-3)))


def settings(generator: str, **values) -> dict:
    """params overrides that set a generator's own settings (validated by its module's Settings)."""
    return {"generators": {generator: {"settings": values}}}


def test_offline_backend_needs_training_data():
    with pytest.raises(ShopError, match="offline needs the training queries"):
        make_backend(BACKEND.model_copy(update={"name": "offline", "cache": False}), 0)


# ---------- huggingface (tiny random model built locally; nothing is downloaded) ----------


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    from core.encoder import load_encoder

    tokenizer, _ = load_encoder("minilm")
    path = tmp_path_factory.mktemp("tiny-gpt2")
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=1024,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    import torch

    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_huggingface_backend_generates_batches_from_a_local_model(tiny_causal_lm, tmp_path):
    bp = BACKEND.model_copy(
        update={
            "name": "huggingface",
            "model": str(tiny_causal_lm),
            "batch_size": 2,
            "max_new_tokens": 5,
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    backend = make_backend(bp, seed=7, root=tmp_path)
    requests = [
        Request("query", {"title": t}, n=2, examples=(("Drill Set", "drill bits"),))
        for t in ("Cordless Drill", "Garden Hose 50 ft.", "LED Bulb")
    ]
    out = backend.generate(requests)
    assert len(out) == 3 and all(isinstance(o, list) and len(o) <= 2 for o in out)
    assert backend.model_hash and backend.tokens_generated > 0
    assert backend.describe()["backend"] == "huggingface"
    again = make_backend(bp, seed=7, root=tmp_path)
    assert again.generate(requests) == out and again.stats["cache_hits"] == 3


def test_huggingface_backend_refuses_a_remote_id_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ShopError, match="augment.backend.model"):
        make_backend(
            BACKEND.model_copy(update={"name": "huggingface", "model": "no-such-org/no-such-model", "cache": False}), 0
        )


# ---------- openai-compatible server ----------


class FakeOpenAI:
    """A local server speaking /v1/chat/completions and /v1/completions; `script` shapes its failures."""

    def __init__(self):
        self.script: list[str] = []  # per request, in order: ok | 429 | 500 | slow | malformed
        self.calls = 0
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    action = outer.script[outer.calls] if outer.calls < len(outer.script) else "ok"
                    outer.calls += 1
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    time.sleep(0.05)
                    if action == "slow":
                        time.sleep(1.0)
                    if action in ("429", "500"):
                        self.send_response(int(action))
                        self.end_headers()
                        self.wfile.write(b'{"error": "try later"}')
                        return
                    prompt = body["messages"][0]["content"] if "messages" in body else body["prompt"]
                    item = prompt.rsplit("title: ", 1)[-1].split(";")[0].split("\n")[0]
                    texts = [f"{item.lower()} {i}" for i in range(body.get("n", 1))]
                    choices = [
                        {"message": {"role": "assistant", "content": t}} if "messages" in body else {"text": t}
                        for t in texts
                    ]
                    payload = (
                        b"{not json"
                        if action == "malformed"
                        else json.dumps(
                            {"choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
                        ).encode()
                    )
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server():
    fake = FakeOpenAI()
    yield fake
    fake.close()


def openai_backend(url, **kw):
    options = {
        "base_url": url,
        "concurrency": 2,
        "timeout_s": 0.5,
        "max_retries": 3,
        "retry_wait_s": 0.01,
        **kw,
    }
    return OpenAIBackend("served-model", SETTINGS, None, 0, **options)


REQUESTS = [Request("query", {"title": f"Item {i}"}, n=2) for i in range(6)]


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_openai_backend_returns_n_choices_per_prompt(server, endpoint):
    backend = openai_backend(server.url, endpoint=endpoint)
    out = backend.generate(REQUESTS)
    assert out[0] == ["item 0 0", "item 0 1"] and len(out) == 6
    assert backend.usage["completion_tokens"] == 18
    assert server.max_in_flight <= 2  # the concurrency limit holds


@pytest.mark.parametrize("failure", ["429", "500", "slow"])
def test_openai_backend_retries_rate_limits_server_errors_and_timeouts(server, failure):
    server.script = [failure, failure]
    backend = openai_backend(server.url, concurrency=1)
    out = backend.generate(REQUESTS[:2])
    assert out[1] == ["item 1 0", "item 1 1"]
    assert backend.usage["retries"] == 2


def test_openai_backend_gives_up_on_a_server_that_always_times_out(server):
    server.script = ["slow"] * 10
    with pytest.raises(ShopError, match="timed out"):
        openai_backend(server.url, concurrency=1, max_retries=1).generate(REQUESTS[:1])


def test_openai_backend_reports_malformed_json(server):
    server.script = ["malformed"]
    with pytest.raises(ShopError, match="malformed"):
        openai_backend(server.url, concurrency=1).generate(REQUESTS[:1])


def test_openai_backend_reports_an_absent_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ShopError, match="not reachable"):
        openai_backend(f"http://127.0.0.1:{port}/v1", max_retries=1).generate(REQUESTS[:1])
