"""BM25 analysis (units, stems, short tokens), the convex fusion of BM25 and dense scores, and its weight tuning."""

import numpy as np
import pandas as pd
import pytest

from core.errors import ShopError
from core.params import load_params
from training.baselines import BM25_DEFAULTS, MiniLMRetriever
from training.harness import evaluate_retriever
from training.hybrid import HybridRetriever, fuse, tune_weight
from training.lexical import BM25Retriever, LexicalIndex, TypoCorrector, normalise_units

PARAMS = load_params()
EVAL = PARAMS.evaluation.model_copy(update={"bootstrap_samples": 0})
ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d", "e"],
        "title": [
            "3/4 in. x 10 ft. Copper Pipe",
            "Cordless Drill 20-Volt Lithium-Ion",
            "Stainless Steel Kitchen Sink Undermount",
            "2 in. x 4 in. x 8 ft. Pressure-Treated Lumber",
            "LED Light Bulbs 60-Watt Equivalent (4-Pack)",
        ],
        "price": [10.0, 99.0, 250.0, 5.0, 12.0],
    }
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('3/4" copper', "3/4 in  copper"),
        ("3/4 inch copper", "3/4 in  copper"),
        ("10 ft. pipe", "10 ft  pipe"),
        ("2x4x8", "2 x 4 x 8"),
        ("20v drill", "20 volt  drill"),
    ],
)
def test_unit_spellings_become_one_token(text, expected):
    assert normalise_units(text) == expected


def test_tuned_analysis_matches_units_sizes_and_stems_where_defaults_do_not():
    queries = ['3/4" copper pipes', "2x4 lumber", "drills"]
    tuned = LexicalIndex(PARAMS.baselines.bm25).fit(ITEMS["item_id"].tolist(), ITEMS["title"].tolist())
    plain = LexicalIndex(BM25_DEFAULTS).fit(ITEMS["item_id"].tolist(), ITEMS["title"].tolist())
    best = tuned.catalogue_scores(queries).argmax(axis=1)
    assert [tuned.item_ids[i] for i in best] == ["a", "d", "b"]
    assert plain.catalogue_scores(["drills"]).max() == 0.0  # no stemming: "drills" never meets "drill"
    assert tuned.catalogue_scores(["the of and"]).max() == 0.0


def test_fuse_normalises_each_side_over_the_candidates_and_weights_them():
    lexical = np.array([[0.0, 2.0, 4.0, 0.0]], dtype=np.float32)
    dense = np.array([[0.9, 0.1, 0.5, 0.3]], dtype=np.float32)
    close = {"rtol": 1e-6}  # float32 scores
    np.testing.assert_allclose(fuse(lexical, dense, 1.0, 4, candidates_only=False), [[0.0, 0.5, 1.0, 0.0]], **close)
    np.testing.assert_allclose(fuse(lexical, dense, 0.0, 4, candidates_only=False), [[1.0, 0.0, 0.5, 0.25]], **close)
    half = fuse(lexical, dense, 0.5, 4, candidates_only=False)
    np.testing.assert_allclose(half, [[0.5, 0.25, 0.75, 0.125]], **close)
    shallow = fuse(lexical, dense, 0.5, 1)  # candidates: lexical top 1 (item 2) and dense top 1 (item 0)
    assert np.isinf(shallow[0, [1, 3]]).all() and np.isfinite(shallow[0, [0, 2]]).all()
    with pytest.raises(ShopError, match="differ in shape"):
        fuse(lexical, dense[:, :3], 0.5, 4)


def test_hybrid_retriever_is_a_retriever_and_the_tuned_weight_is_the_best_on_validation():
    queries = pd.DataFrame(
        {
            "query_id": ["q1", "q1", "q2", "q3", "q4"],
            "query": ["copper pipe 3/4 inch", "copper pipe 3/4 inch", "kitchen sink", "2x4 lumber", "light bulb"],
            "item_id": ["a", "d", "c", "d", "e"],
            "relevance": [1.0, 0.0, 1.0, 1.0, 1.0],
        }
    )
    lexical, dense = BM25Retriever(PARAMS.baselines.bm25), MiniLMRetriever(batch_size=8)
    model = HybridRetriever(lexical, dense, 0.5, 100)
    model.fit(queries, ITEMS)
    result = evaluate_retriever(model, queries, ITEMS, EVAL)
    assert result["ndcg@10"]["value"] > 0.9
    assert len(model.search(["copper"], 3)[0]) == 3
    weight, curve = tune_weight(lexical.index, dense, queries, [0.0, 0.5, 1.0], 100)
    assert curve[weight] == max(curve.values())
    with pytest.raises(ShopError, match="weight"):
        HybridRetriever(lexical, dense, 1.5, 100)


def test_misspelled_query_words_are_corrected_to_item_words_one_edit_away():
    corrector = TypoCorrector(ITEMS["title"].tolist() + ["copper fittings", "copper"])
    assert corrector("Coper pipe") == "copper pipe"  # deletion; the more frequent candidate wins
    assert corrector("kitchen snik") == "kitchen sink"  # adjacent swap
    assert corrector("stainles stel") == "stainless steel"  # deletion, deletion
    assert corrector("3/4 in lumbar") == "3/4 in lumber"  # substitution
    assert corrector("zzzz 20v") == "zzzz 20v"  # nothing one edit away; sizes and codes stay
    tuned = LexicalIndex(PARAMS.baselines.bm25).fit(ITEMS["item_id"].tolist(), ITEMS["title"].tolist())
    assert tuned.item_ids[tuned.catalogue_scores(["kitchen snik"])[0].argmax()] == "c"
