"""Text quality of synthetic queries: distinct-n, self-BLEU, title copies, lengths and the round-trip pass rate."""

import pandas as pd
import pytest
from monitoring_fixtures import make_queries

from monitoring.checks import text_descriptors
from monitoring.text_quality import (
    distinct_n,
    length_histograms,
    query_text_quality,
    round_trip_pass_rate,
    self_bleu,
    title_copy_share,
)


def test_identical_queries_have_low_distinct_n_and_self_bleu_one():
    queries = ["white paint roller"] * 10
    assert distinct_n(queries, 1) == pytest.approx(3 / 30)
    assert distinct_n(queries, 2) == pytest.approx(2 / 20)
    assert self_bleu(queries, sample=10, seed=0) == pytest.approx(1.0)


def test_queries_without_shared_words_have_distinct_n_one_and_self_bleu_zero():
    queries = [f"lamp{i} door{i} hose{i}" for i in range(20)]
    assert distinct_n(queries, 1) == 1.0
    assert distinct_n(queries, 2) == 1.0
    assert self_bleu(queries, sample=20, seed=0) == 0.0


def test_distinct_n_counts_ngrams_and_is_none_without_any():
    assert distinct_n(["red lamp", "red door", "Red  LAMP"], 1) == pytest.approx(3 / 6)  # red, lamp, door
    assert distinct_n(["red lamp", "red door", "red lamp"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["lamp", "door"], 2) is None


def test_self_bleu_of_partly_shared_queries_is_between_and_seeded():
    queries = make_queries(400, seed=1)["query"].tolist()  # 20 words, 1-3 per query: many shared words
    score = self_bleu(queries, sample=50, seed=3)
    assert 0.05 < score < 0.95
    assert self_bleu(queries, sample=50, seed=3) == score
    assert self_bleu(["one query"], sample=10, seed=0) is None


def test_title_copy_share_ignores_case_and_spacing_and_skips_unknown_items():
    titles = pd.Series({"1": "Solar  Garden Lamp", "2": "Chrome Door Handle"})
    rows = pd.DataFrame(
        {
            "query": ["solar garden lamp", "door handle", " CHROME door   handle ", "solar garden lamp"],
            "item_id": ["1", "2", "2", "9"],  # item 9 is not in the catalogue: left out
        }
    )
    assert title_copy_share(rows, titles) == pytest.approx(2 / 3)
    assert title_copy_share(rows.assign(item_id="9"), titles) is None


def test_round_trip_pass_rate_comes_from_the_manifest():
    assert round_trip_pass_rate({"kept_fraction": 0.5286, "kept": 1, "generated": 4}) == 0.5286
    assert round_trip_pass_rate({"kept": 3, "generated": 4}) == 0.75
    assert round_trip_pass_rate({"rows": 10}) is None
    assert round_trip_pass_rate(None) is None


def test_length_histograms_put_each_query_in_one_bin():
    hist = length_histograms(["lamp", "solar lamp", "solar garden lamp outdoor white"], ["x" * 70])
    assert hist["words"]["synthetic"][:5] == pytest.approx([1 / 3, 1 / 3, 0, 0, 1 / 3])
    assert sum(hist["characters"]["synthetic"]) == pytest.approx(1.0, abs=1e-5)  # shares rounded to 6 places
    assert hist["characters"]["real"][-1] == 1.0  # 70 characters: the open last bin
    assert len(hist["words"]["bins"]) == len(hist["words"]["real"])


def test_section_puts_synthetic_beside_real_on_equal_sizes_with_notes():
    real = make_queries(400, seed=1)
    synthetic = make_queries(300, seed=2, source="synthetic_queries")
    synthetic.loc[:49, "query"] = "solar lamp"  # a collapsed generator repeats itself
    titles = pd.Series({item: "solar lamp" for item in synthetic["item_id"].iloc[:50]})
    section = query_text_quality(synthetic, real, titles, {"generated": 400, "kept": 300}, seed=42)
    syn, ref = section["synthetic"], section["real"]
    assert section["distinct_n_queries"] == min(syn["queries"], ref["queries"])
    assert syn["rows"] == 300 and syn["queries"] < 300
    assert syn["round_trip_pass_rate"] == 0.75 and "round_trip_pass_rate" not in ref
    assert syn["title_copy_share"] > ref["title_copy_share"] >= 0
    assert syn["words_mean"] > 0 and ref["chars_median"] > 0
    assert section["notes"] == []
    bare = query_text_quality(synthetic.iloc[:60], real.iloc[:60], None, None, seed=42)
    assert bare["synthetic"]["title_copy_share"] is None and bare["synthetic"]["round_trip_pass_rate"] is None
    assert len(bare["notes"]) == 2


def test_text_descriptors_count_digits_as_words_and_oov_against_the_shop_vocabulary():
    frame = pd.DataFrame({"query": ["18 in. vanity", "Kitchen sink", "", None]}, index=[5, 6, 7, 8])
    described = text_descriptors(frame, "query", {"vanity", "sink", "kitchen"})
    assert described.index.tolist() == [5, 6, 7, 8]
    assert described["query_chars"].tolist() == [13.0, 12.0, 0.0, 4.0]  # a missing text reads as "None"
    assert described["query_words"].tolist() == [3.0, 2.0, 0.0, 1.0]
    assert described["query_oov"].tolist() == pytest.approx([2 / 3, 0.0, 0.0, 1.0])
