"""Ranking metrics against hand-computed cases, and binary metrics against ranx."""

import math

import numpy as np
import pytest

from training.metrics import (
    binary_metrics,
    bootstrap_ci,
    ndcg_at_k,
    pairwise_accuracy,
    recall_at_k,
    rerank,
)

LOG3 = math.log2(3)


def test_binary_metrics_match_a_hand_computed_ranking():
    m = binary_metrics(["a", "b", "c", "d"], {"b", "d"}, k=3, recall_ks=[3, 4])
    assert m["hr@3"] == 1.0
    assert m["recall@3"] == pytest.approx(0.5)  # 1 hit of min(3, 2) relevant
    assert m["recall@4"] == pytest.approx(1.0)
    assert m["ndcg@3"] == pytest.approx((1 / LOG3) / (1 + 1 / LOG3))
    assert m["mrr"] == pytest.approx(0.5)


def test_recall_is_capped_by_k_for_baskets_larger_than_k():
    relevant = {"a", "b", "c", "d", "e"}
    assert binary_metrics(["a", "b"], relevant, k=2, recall_ks=[2])["recall@2"] == 1.0
    assert recall_at_k(["a", "x", "b"], relevant, 3) == pytest.approx(2 / 3)


def test_graded_ndcg_uses_linear_gains_and_scores_unjudged_items_zero():
    gains = {"a": 1.0, "b": 0.5, "c": 0.0}
    expected = (0.5 + 1.0 / 2) / (1.0 + 0.5 / LOG3)  # ranks 1 and 3; "x" is unjudged
    assert ndcg_at_k(["b", "x", "a"], gains, 10) == pytest.approx(expected)
    assert ndcg_at_k(["a", "b"], gains, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["a", "b"], gains, 1) == pytest.approx(1.0)


def test_empty_results_score_zero_and_nothing_relevant_is_undefined():
    assert all(v == 0.0 for v in binary_metrics([], {"a"}, 10, [10, 20]).values())
    assert ndcg_at_k([], {"a": 1.0}, 10) == 0.0
    assert all(math.isnan(v) for v in binary_metrics(["a"], set(), 10, [10]).values())
    assert math.isnan(ndcg_at_k(["a"], {"a": 0.0}, 10))  # only zero-gain judgements
    assert math.isnan(recall_at_k(["a"], set(), 10))


def test_duplicate_items_in_a_ranking_count_once():
    assert binary_metrics(["a", "a"], {"a", "b"}, 2, [2])["recall@2"] == pytest.approx(0.5)
    assert binary_metrics(["a", "a", "b"], {"a", "b"}, 2, [2])["recall@2"] == pytest.approx(1.0)


def test_rerank_breaks_score_ties_by_item_id_not_input_order():
    assert rerank(["c", "b", "a"], [1.0, 2.0, 2.0]) == ["a", "b", "c"]


def test_pairwise_accuracy_counts_ordered_pairs_and_half_credits_ties():
    # pairs with different relevance: (1>.5) right, (1>0) right, (.5>0) wrong
    assert pairwise_accuracy([1.0, 0.5, 0.0], [3.0, 1.0, 2.0]) == pytest.approx(2 / 3)
    assert pairwise_accuracy([1.0, 0.0], [1.0, 1.0]) == pytest.approx(0.5)
    assert math.isnan(pairwise_accuracy([0.5, 0.5], [1.0, 2.0]))


def test_bootstrap_is_seeded_brackets_the_mean_and_ignores_undefined_values():
    values = np.r_[np.random.default_rng(0).random(200), [np.nan] * 5]
    first, second = bootstrap_ci(values, 500, seed=7), bootstrap_ci(values, 500, seed=7)
    assert first == second
    assert first["n"] == 200
    assert first["ci_low"] < first["value"] < first["ci_high"]
    assert first["ci_high"] - first["ci_low"] < 0.2
    assert bootstrap_ci(values, 0, 7)["ci_low"] == first["value"]
    assert bootstrap_ci(np.array([np.nan]), 100, 7)["n"] == 0


def test_binary_metrics_agree_with_ranx():
    from ranx import Qrels, Run, evaluate

    rng = np.random.default_rng(3)
    catalogue = [f"i{j}" for j in range(40)]
    qrels, run, ours = {}, {}, []
    for q in range(30):
        relevant = set(rng.choice(catalogue, size=int(rng.integers(1, 8)), replace=False))
        ranked = list(rng.choice(catalogue, size=25, replace=False))
        qrels[f"q{q}"] = dict.fromkeys(relevant, 1)
        run[f"q{q}"] = {item: float(25 - r) for r, item in enumerate(ranked)}
        ours.append(binary_metrics(ranked, relevant, 10, [10]))
    theirs = evaluate(Qrels.from_dict(qrels), Run.from_dict(run), ["hit_rate@10", "recall@10", "ndcg@10", "mrr"])
    for ranx_name, name in [
        ("hit_rate@10", "hr@10"),
        ("recall@10", "recall@10"),
        ("ndcg@10", "ndcg@10"),
        ("mrr", "mrr"),
    ]:
        assert np.mean([m[name] for m in ours]) == pytest.approx(theirs[ranx_name], abs=1e-9), name
