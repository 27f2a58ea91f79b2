"""The search query tower exported to ONNX Runtime: same vectors and same hybrid results as torch on real Home
Depot queries, shipped in the bundle and loaded back; torch encodes queries when the params say so."""

import numpy as np
import pytest
from search_slice import search_slice

from core.params import load_params
from serving.benchmark import exact_rankings
from serving.champion import assemble_bundle, load_bundle, save_bundle
from serving.engine import hybrid_top
from serving.query_encoder import INT8_MIN_COSINE, OnnxQueryEncoder
from training.models import BiEncoder, TextTower
from training.rerank import examples, train_reranker
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


def serve_params(query_encoder: str):
    return load_params().serve.model_copy(update={"query_encoder": query_encoder})


def test_packaged_onnx_encoder_reproduces_torch_vectors_and_results(catalogue, tmp_path):
    items, queries = catalogue
    model = real_search_model(items)
    bundle = assemble_bundle("search", "shopaug-search", "1", model, items, None, None, serve_params("onnx"))
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


def test_int8_encoder_stays_close_to_torch_and_keeps_the_hybrid_results(catalogue):
    """int8 weights move the vectors a little (cosine >= INT8_MIN_COSINE, checked at export); the hybrid's top 10
    barely changes (BM25 carries part of the score and the dense order mostly survives)."""
    items, queries = catalogue
    model = real_search_model(items)
    bundle = assemble_bundle("search", "shopaug-search", "1", model, items, None, None, serve_params("onnx_int8"))
    float32 = assemble_bundle("search", "shopaug-search", "1", model, items, None, None, serve_params("onnx"))
    assert len(bundle.query_encoder.graph) < len(float32.query_encoder.graph) / 2
    int8, torch_vectors = bundle.query_encoder.encode_queries(queries), model.encode_queries(queries)
    cosine = (int8 * torch_vectors).sum(1)
    assert cosine.min() >= INT8_MIN_COSINE and cosine.mean() > 0.98
    overlap = [
        len(set(hybrid_top(bundle, q, a, 10)[0]) & set(hybrid_top(bundle, q, b, 10)[0])) / 10
        for q, a, b in zip(queries, int8, torch_vectors, strict=True)
    ]
    assert np.mean(overlap) >= 0.9, np.mean(overlap)


def test_torch_encodes_queries_when_the_params_say_so(catalogue):
    items, queries = catalogue
    model = real_search_model(items)
    bundle = assemble_bundle("search", "shopaug-search", "1", model, items, None, None, serve_params("torch"))
    assert bundle.query_encoder is None


def same_ranking(items: list[str], scores: np.ndarray, expected: list[tuple[str, float]]) -> bool:
    """The same top-k scores, each item with its expected score (an item tied with the last may replace another)."""
    want, last = dict(expected), expected[-1][1]
    return np.allclose(scores, [s for _, s in expected], atol=1e-5) and all(
        abs(want.get(i, -np.inf) - s) <= 1e-5 or abs(s - last) <= 1e-5 for i, s in zip(items, scores, strict=True)
    )


def test_served_hybrid_ranks_as_the_exact_evaluated_ranking_with_a_flat_index_and_nearly_with_hnsw(catalogue):
    """`hybrid_top` (dense candidates from the item index, scored exactly) gives the benchmark's reference, the
    whole-catalogue fusion the harness evaluates, when the index is exact (items with equal scores may swap); with
    HNSW (forced on this catalogue) nearly every query keeps its top 10."""
    items, queries = catalogue
    model = real_search_model(items)
    vectors = model.encode_queries(queries)
    for flat_max, agreement in ((10_000, 1.0), (100, 0.95)):
        serve = serve_params("torch").model_copy(update={"flat_index_max_items": flat_max})
        bundle = assemble_bundle("search", "shopaug-search", "1", model, items, None, None, serve)
        same = []
        for query, vector, expected in zip(queries, vectors, exact_rankings(bundle, queries, 10), strict=True):
            positions, scores = hybrid_top(bundle, query, vector, 10)
            same.append(same_ranking(bundle.index.item_ids[positions].tolist(), scores, expected))
        assert np.mean(same) >= agreement, (flat_max, np.mean(same))


def test_served_reranker_orders_as_the_evaluated_model_and_ships_in_the_bundle(catalogue, tmp_path):
    """A search model with a re-ranker (trained here on the slice's judged training queries): `hybrid_top` with
    `rerank` gives the evaluated ranking (`SearchModel.search` = the benchmark's exact reference), the bundle
    ships the item words it reads, and `rerank` off serves the hybrid's own order."""
    items, queries = catalogue
    train = search_slice(n_queries=200, n_items=1500)["train"]
    model = real_search_model(items)
    settings = load_params().train.search.rerank.model_copy(update={"depth": 20, "min_data_in_leaf": 5, "rounds": 30})
    args = (model.stage_scores, model.lexical(), model.words(), model.item_ids, settings.depth)
    model.reranker, _ = train_reranker(examples(train, *args, "train"), examples(train, *args, "valid"), settings, 0)
    model.config = {**model.config, "rerank": {"depth": settings.depth}}
    bundle = assemble_bundle("search", "shopaug-search", "1", model, items, None, None, serve_params("torch"))
    save_bundle(bundle, tmp_path)
    loaded = load_bundle(tmp_path, load_model=lambda _: model, threads=1)
    assert loaded.words is not None and len(loaded.words.titles) == len(items)
    evaluated = model.search(queries, 10)
    exact = exact_rankings(loaded, queries, 10, rerank=True)
    assert [[i for i, _ in r] for r in exact] == [[i for i, _ in r] for r in evaluated]
    same, changed = [], []
    for query, vector, expected in zip(queries, model.encode_queries(queries), exact, strict=True):
        positions, scores = hybrid_top(loaded, query, vector, 10, rerank=True)
        same.append(same_ranking(loaded.index.item_ids[positions].tolist(), scores, expected))
        changed.append(positions.tolist() != hybrid_top(loaded, query, vector, 10)[0].tolist())
    assert np.mean(same) >= 0.95, np.mean(same)
    assert any(changed)  # the re-ranker re-orders some queries' top 10
    deeper = model.search(queries[:5], 30)  # k over the re-ranked depth: the fused order continues after it
    for query, vector, expected in zip(queries[:5], model.encode_queries(queries[:5]), deeper, strict=True):
        positions, scores = hybrid_top(loaded, query, vector, 30, rerank=True)
        assert same_ranking(loaded.index.item_ids[positions].tolist(), scores, expected), query
