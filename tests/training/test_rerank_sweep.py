import pandas as pd

from training.rerank_sweep import halves


def test_validation_halves_split_whole_queries_evenly_and_follow_the_seed():
    valid = pd.DataFrame(
        {"query": [f"q{i // 3}" for i in range(33)], "item_id": [str(i) for i in range(33)], "relevance": 1.0}
    )
    one, two = halves(valid, 42)
    assert set(one["query"]).isdisjoint(two["query"])  # a query's judged rows stay together
    assert len(one) + len(two) == len(valid) and {one["query"].nunique(), two["query"].nunique()} == {5, 6}
    assert one.equals(halves(valid, 42)[0]) and not one.equals(halves(valid, 7)[0])
