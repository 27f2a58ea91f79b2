"""Document expansion: items gain the words of their synthetic queries that their titles lack."""

import pandas as pd

from pipelines.expansion import expand_items, expansion_terms


def test_terms_are_new_words_most_frequent_first_and_capped():
    queries = ["kitchen sink", "undermount kitchen sink", "kitchen basin", "the sink"]
    assert expansion_terms("KRAUS Undermount Stainless Steel Sink", queries, 2) == ["kitchen", "basin"]
    assert expansion_terms("Kitchen Sink", ["kitchen sink"], 5) == []


def test_expanded_items_keep_the_title_first_and_leave_items_without_queries_alone():
    items = pd.DataFrame({"item_id": ["1", "2"], "title": ["Weber Genesis II", "Copper Pipe"], "price": [1.0, 2.0]})
    queries = pd.DataFrame({"item_id": ["1", "1"], "query": ["gas grill", "weber grill"]})
    out, count = expand_items(items, queries, 8)
    assert count == 1
    assert out["search_text"].tolist() == ["Weber Genesis II grill gas", "Copper Pipe"]
    assert out["title"].tolist() == items["title"].tolist()
