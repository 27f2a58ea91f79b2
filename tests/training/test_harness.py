"""The harness on tiny frames: all-item and new-to-user metrics, catalogue filtering, segments, refusals."""

import pandas as pd
import pytest

from core.errors import ShopError
from core.params import load_params
from training.harness import evaluate_recommender, evaluate_retriever

PARAMS = load_params().evaluation.model_copy(
    update={
        "k": 2,
        "recall_ks": [2],
        "catalogue_recall_k": 3,
        "bootstrap_samples": 50,
        "cold_user_max_purchases": 1,
        "new_item_days": 5,
    }
)
CUTOFF = pd.Timestamp("2011-11-01", tz="UTC")


def rows(records):
    return pd.DataFrame(records, columns=["user_id", "item_id", "ts", "basket_id"]).assign(
        ts=lambda d: pd.to_datetime(d["ts"], utc=True), event="purchase", quantity=1, value=1.0
    )


HISTORY = rows(
    [
        ("cold", "a", "2011-09-01", "b1"),
        ("warm", "a", "2011-09-01", "b2"),
        ("warm", "b", "2011-09-10", "b3"),
        ("warm", "c", "2011-09-20", "b4"),
        (None, "n", "2011-10-30", "g1"),  # a guest basket: "n" is a new item, first seen 2 days before the cutoff
    ]
)
TARGETS = rows(
    [
        ("cold", "b", "2011-11-02", "t1"),
        ("cold", "n", "2011-11-02", "t1"),
        ("warm", "a", "2011-11-03", "t2"),
        ("warm", "d", "2011-11-03", "t2"),
    ]
)
ITEMS = pd.DataFrame({"item_id": list("abcdn")})


class Fixed:
    name = "fixed"

    def __init__(self, lists):
        self.lists = lists

    def recommend(self, history, user_ids, k):
        return {u: self.lists[u][:k] for u in user_ids}


def test_recommender_metrics_new_to_user_and_segments_follow_the_protocol():
    # "zzz" is outside the catalogue (never in the history) and is dropped before scoring.
    model = Fixed({"cold": ["zzz", "a", "b", "n"], "warm": ["a", "c", "b"]})
    units: dict = {}
    out = evaluate_recommender(model, HISTORY, TARGETS, ITEMS, PARAMS, cutoff=CUTOFF, per_unit=units)
    assert units["table"].loc["cold", "cold_user"] and not units["table"].loc["warm", "cold_user"]
    assert units["table"]["hr@2"].mean() == out["hr@2"]["value"]  # the rows the summary was computed from
    # cold: [a, b] -> 1 hit of {b, n}; warm: [a, c] -> 1 hit of {a, d} ("d" unseen: an unavoidable miss)
    assert out["hr@2"]["value"] == 1.0
    assert out["recall@2"]["value"] == pytest.approx(0.5)
    assert out["mrr"]["value"] == pytest.approx((1 / 2 + 1) / 2)
    # new to user: past items removed -> cold [b, n] hits both; warm [] (only past items left) hits nothing of {d}
    assert out["recall@2_new"]["value"] == pytest.approx(0.5)
    assert out["hr@2_new"]["n"] == 2
    cold = out["segments"]["cold_users"]
    assert cold["hr@2"]["n"] == 1 and cold["recall@2"]["value"] == pytest.approx(0.5)
    new_items = out["segments"]["new_items"]["recall@2"]
    assert new_items["n"] == 1 and new_items["value"] == 0.0  # cold user's "n" is 3rd after filtering
    assert set(out["hr@2"]) == {"value", "ci_low", "ci_high", "n"}


def test_recommender_refuses_empty_targets_and_users_without_history():
    with pytest.raises(ShopError, match="empty"):
        evaluate_recommender(Fixed({}), HISTORY, TARGETS.iloc[:0], ITEMS, PARAMS)
    stranger = rows([("stranger", "a", "2011-11-02", "t9")])
    with pytest.raises(ShopError, match="no history"):
        evaluate_recommender(Fixed({}), HISTORY, stranger, ITEMS, PARAMS)


class FixedRetriever:
    name = "fixed"

    def search(self, queries, k):
        return [[("x", 3.0), ("a", 2.0), ("b", 1.0)] for _ in queries]

    def score(self, queries, item_ids):
        return [{"a": 1.0, "b": 2.0, "c": 0.0}[i] for i in item_ids]


def test_retriever_catalogue_and_rerank_metrics_match_hand_computation():
    queries = pd.DataFrame(
        {"query_id": ["q"] * 3, "query": ["red lamp"] * 3, "item_id": ["a", "b", "c"], "relevance": [1.0, 0.5, 0.0]}
    )
    items = pd.DataFrame({"item_id": ["a", "b", "c", "x"]})
    units: dict = {}
    out = evaluate_retriever(FixedRetriever(), queries, items, PARAMS, per_unit=units)
    assert list(units["table"].index) == ["q"] and units["table"].loc["q", "ndcg@2"] == out["ndcg@2"]["value"]
    ideal = 1.0 + 0.5 / 1.5849625007211563
    assert out["ndcg@2"]["value"] == pytest.approx((1.0 / 1.5849625007211563) / ideal)  # x unjudged: gain 0
    assert out["recall@3"]["value"] == 1.0  # only "a" reaches relevant_threshold 0.75
    assert out["rerank_ndcg@2"]["value"] == pytest.approx((0.5 + 1.0 / 1.5849625007211563) / ideal)
    assert out["pairwise_accuracy"]["value"] == pytest.approx(2 / 3)
