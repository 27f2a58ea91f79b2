"""The search query tower exported to ONNX Runtime: same vectors and same hybrid results as torch on real Home
Depot queries, shipped in the bundle and loaded back; torch encodes queries when the params say so."""

import numpy as np
import pytest
from search_slice import search_slice

from core.params import load_params
from serving.champion import assemble_bundle, load_bundle, save_bundle
from serving.engine import hybrid_top
from serving.query_encoder import OnnxQueryEncoder
from training.models import BiEncoder, TextTower
from training.serving_api import FrozenTextVectors, SearchModel

HYBRID = {"weight": 0.6, "depth": 100, "bm25": load_params().baselines.bm25.model_dump(), "text_column": "title"}


@pytest.fixture(scope="module")
def catalogue():
    data = search_slice(n_queries=200, n_items=1500)
    items = data["items"].reindex(columns=["item_id", "title", "description", "category", "price"])
    items = items.fillna({"description": "", "category": "", "price": 0.0})
    return items, sorted(set(data["test"]["query"]))[:60]


def real_search_model(items) -> SearchModel:
    """The packaged MiniLM as a real (untrained: zero-shot) bi-encoder, fused with BM25 as a trained hybrid is."""
    net = BiEncoder(TextTower("minilm", max_length=32), shared_items=False, temperature=0.05)
    return SearchModel(net, items, {"name": "hybrid", "hybrid": HYBRID}, FrozenTextVectors("minilm", 32))


def test_packaged_onnx_encoder_reproduces_torch_vectors_and_results(catalogue, tmp_path):
    items, queries = catalogue
    model = real_search_model(items)
    bundle = assemble_bundle("search", "shopaug-search", "1", model, items, None, None, load_params().serve)
    assert isinstance(bundle.query_encoder, OnnxQueryEncoder)
    save_bundle(bundle, tmp_path)
    loaded = load_bundle(tmp_path, load_model=lambda _: model, threads=1)
    onnx, torch_vectors = loaded.query_encoder.encode_queries(queries), model.encode_queries(queries)
    assert onnx.shape == torch_vectors.shape == (len(queries), 384)
    assert np.allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5)
    assert (onnx * torch_vectors).sum(1).min() > 0.9999
    one_by_one = np.stack([loaded.query_encoder.encode_queries([q])[0] for q in queries[:5]])
    assert np.allclose(one_by_one, onnx[:5], atol=1e-5)  # padding in a batch changes nothing
    for query, a, b in zip(queries, onnx, torch_vectors, strict=True):
        assert hybrid_top(loaded, query, a, 10)[0].tolist() == hybrid_top(loaded, query, b, 10)[0].tolist(), query


def test_torch_encodes_queries_when_the_params_say_so(catalogue):
    items, queries = catalogue
    serve = load_params().serve.model_copy(update={"query_encoder": "torch"})
    model = real_search_model(items)
    bundle = assemble_bundle("search", "shopaug-search", "1", model, items, None, None, serve)
    assert bundle.query_encoder is None
