"""The noisy test queries: one deterministic perturbation per query, judgments unchanged."""

import numpy as np
import pandas as pd

from pipelines.noise import noisy_queries, perturb, typo


def test_each_query_gets_one_repeatable_perturbation_and_keeps_its_judgments():
    queries = pd.DataFrame(
        {
            "query_id": ["q1", "q1", "q2", "q3", "q4"],
            "query": ["white heat register 10 inch", "white heat register 10 inch", "gas grill", "bernzomatic", "x"],
            "item_id": ["a", "b", "c", "d", "e"],
            "relevance": [1.0, 0.5, 1.0, 0.25, 1.0],
        }
    )
    first, again = noisy_queries(queries, 42), noisy_queries(queries, 42)
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first.drop(columns=["query", "noise"]), queries.drop(columns=["query"]))
    changed = first["query"] != queries["query"]
    assert changed[first["noise"] != "none"].all()
    assert first.loc[first["query_id"] == "q4", "noise"].item() == "none"  # nothing to perturb in "x"
    assert first.groupby("query_id")["query"].nunique().eq(1).all()


def test_operations_do_what_they_say():
    seen = {}
    for i in range(200):
        text, op = perturb("steel 3/4 in. pipe fitting", f"q{i}", 0)
        seen.setdefault(op, text)
    assert set(seen) == {"typo", "drop", "swap", "unit"}
    assert len(seen["drop"].split()) == 4
    assert sorted(seen["swap"].split()) == sorted("steel 3/4 in. pipe fitting".split())
    assert "in." not in seen["unit"] and "3/4" in seen["unit"]
    word = typo("kitchen", np.random.default_rng(0))
    assert word != "kitchen" and word[0] == "k" and abs(len(word) - 7) <= 1
