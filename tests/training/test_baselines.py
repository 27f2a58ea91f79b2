"""Each baseline beats random on tiny data built in code; kNN and the MiniLM cache behave as documented."""

import numpy as np
import pandas as pd
import pytest

from core.params import load_params
from training.baselines import (
    BM25_DEFAULTS,
    CoPurchaseKNNRecommender,
    MiniLMRetriever,
    PopularityRecommender,
    RandomRecommender,
    RandomRetriever,
    RepeatPurchaseRecommender,
    TifuKnnRecommender,
)
from training.harness import evaluate_recommender, evaluate_retriever
from training.lexical import BM25Retriever

PARAMS = load_params().evaluation.model_copy(update={"bootstrap_samples": 0})
TUNED_BM25 = load_params().baselines.bm25
CUTOFF = pd.Timestamp("2011-11-01", tz="UTC")


def shop(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """60 users in 6 taste groups of 10 items, plus 3 bestsellers; the target basket repeats and extends taste."""
    rng = np.random.default_rng(seed)
    records, targets = [], []
    for u in range(60):
        group = [f"g{u % 6}_{j}" for j in range(10)]
        for b in range(3):
            picks = list(rng.choice(group[:7], 3, replace=False)) + ["best0"]
            ts = CUTOFF - pd.Timedelta(days=10 * (3 - b))
            records += [(f"u{u}", item, ts, f"u{u}b{b}") for item in picks]
        ts = CUTOFF + pd.Timedelta(days=1)
        targets += [(f"u{u}", item, ts, f"u{u}t") for item in [records[-2][1], group[8], "best0", "best1"]]
    records += [
        (None, f"g{g}_{j}", CUTOFF - pd.Timedelta(days=5), f"guest{g}") for g in range(6) for j in range(10)
    ] + [(None, "best1", CUTOFF - pd.Timedelta(days=3), "guest9")]

    def frame(recs):
        return pd.DataFrame(recs, columns=["user_id", "item_id", "ts", "basket_id"]).assign(
            event="purchase", quantity=1, value=1.0
        )

    history = frame(records)
    return history, frame(targets), pd.DataFrame({"item_id": sorted(history["item_id"].unique())})


@pytest.mark.parametrize(
    "model",
    [PopularityRecommender(30), CoPurchaseKNNRecommender(20, 30), RepeatPurchaseRecommender(30), TifuKnnRecommender()],
    ids=lambda m: m.name,
)
def test_recommendation_baseline_beats_random(model):
    history, targets, items = shop()
    scores = {}
    for m in (model, RandomRecommender(1)):
        m.fit(history, items)
        scores[m.name] = evaluate_recommender(m, history, targets, items, PARAMS, cutoff=CUTOFF)["ndcg@10"]["value"]
    assert scores[model.name] > scores["random"] + 0.1


def test_copurchase_knn_ignores_guest_baskets_and_never_pairs_an_item_with_itself():
    history, _, items = shop()
    knn = CoPurchaseKNNRecommender(5, 30)
    knn.fit(history, items)
    sim = knn.similarity.toarray()
    assert np.all(np.diag(sim) == 0)
    # g0_9 is only ever bought in a guest basket, so it has no co-purchase neighbours
    assert sim[knn.index["g0_9"]].sum() == 0
    assert (sim > 0).sum(axis=1).max() <= 5


def test_repeat_purchase_ranks_the_most_recent_items_first_then_popularity():
    history, _, items = shop()
    model = RepeatPurchaseRecommender(30)
    model.fit(history, items)
    ranked = model.recommend(history, ["u0"], 12)["u0"]
    last_basket = set(history.loc[history["basket_id"] == "u0b2", "item_id"])
    assert set(ranked[: len(last_basket)]) == last_basket
    assert ranked[-1] not in set(history.loc[history["user_id"] == "u0", "item_id"])


def test_tifu_knn_weights_recent_baskets_and_borrows_from_similar_users():
    day = pd.Timedelta(days=1)
    rows = [("a", "old", CUTOFF - 30 * day, "a1"), ("a", "new", CUTOFF - 2 * day, "a2")]
    rows += [("a", "shared", CUTOFF - 2 * day, "a2"), ("b", "shared", CUTOFF - 3 * day, "b1")]
    rows += [("b", "tip", CUTOFF - 3 * day, "b1"), ("c", "other", CUTOFF - 3 * day, "c1")]
    history = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "basket_id"])
    items = pd.DataFrame({"item_id": sorted(history["item_id"].unique())})
    own_only = TifuKnnRecommender(decay_across=0.5, neighbours=0, alpha=1.0)
    own_only.fit(history, items)
    users, vectors = own_only.user_vectors(history)
    assert np.allclose(np.asarray(vectors.sum(1)).ravel(), 1.0)  # each user's vector sums to 1
    ranked = own_only.recommend(history, ["a"], 3)["a"]
    assert ranked.index("new") < ranked.index("old")  # the later basket weighs more (decay 0.5 per basket)
    blended = TifuKnnRecommender(decay_across=0.5, neighbours=1, alpha=0.5)
    blended.fit(history, items)
    assert "tip" in blended.recommend(history, ["a"], 4)["a"][:4]  # b, the nearest user, bought it
    assert blended.recommend(history, ["nobody"], 2)["nobody"] == blended.popular.ranking[:2]


CATALOGUE = pd.DataFrame(
    {
        "item_id": [f"p{i}" for i in range(8)],
        "title": [
            "Red cotton t-shirt",
            "Steel claw hammer 16 oz",
            "Cordless drill 20V lithium",
            "White ceramic table lamp",
            "Garden hose 50 ft",
            "Oak kitchen cabinet door",
            "LED light bulb 60W",
            "Stainless steel kitchen sink",
        ],
    }
)
QUERIES = pd.DataFrame(
    {
        "query_id": ["q1", "q1", "q2", "q2", "q3", "q3", "q4", "q4"],
        "query": [
            "hammer",
            "hammer",
            "drill cordless",
            "drill cordless",
            "kitchen sink",
            "kitchen sink",
            "lamp for table",
            "lamp for table",
        ],
        "item_id": ["p1", "p2", "p2", "p1", "p7", "p5", "p3", "p6"],
        "relevance": [1.0, 0.0, 1.0, 0.0, 1.0, 0.5, 1.0, 0.5],
    }
)


@pytest.mark.parametrize(
    "model_factory",
    [
        lambda: BM25Retriever(BM25_DEFAULTS),
        lambda: BM25Retriever(TUNED_BM25),
        lambda: MiniLMRetriever(batch_size=8),
    ],
    ids=["bm25_defaults", "bm25_tuned", "minilm"],
)
def test_search_baseline_beats_random(model_factory):
    model = model_factory()
    results = {}
    for m in (model, RandomRetriever(0)):
        m.fit(QUERIES, CATALOGUE)
        results[m.name] = evaluate_retriever(m, QUERIES, CATALOGUE, PARAMS)
    assert results[model.name]["ndcg@10"]["value"] > 0.9
    assert results[model.name]["ndcg@10"]["value"] > results["random"]["ndcg@10"]["value"]
    assert results[model.name]["pairwise_accuracy"]["value"] == 1.0


def test_bm25_query_of_stopwords_only_returns_nothing():
    model = BM25Retriever(TUNED_BM25)
    model.fit(QUERIES, CATALOGUE)
    assert model.search(["the and of", "hammer"], 3)[0] == []
    assert model.score(["the"], ["p1"]) == [0.0]


def test_minilm_item_embeddings_are_cached_by_titles(tmp_path):
    first = MiniLMRetriever(batch_size=8, cache_dir=tmp_path)
    first.fit(QUERIES, CATALOGUE)
    cached = list(tmp_path.glob("minilm_items_*.npy"))
    assert len(cached) == 1
    second = MiniLMRetriever(batch_size=8, cache_dir=tmp_path)
    second._encoder = first.encoder  # reuse the loaded model; the cache must make encoding unnecessary
    second.encode = None
    second.fit(QUERIES, CATALOGUE)
    np.testing.assert_array_equal(second.item_vectors, first.item_vectors)
    np.testing.assert_allclose(np.linalg.norm(first.item_vectors, axis=1), 1.0, atol=1e-5)
