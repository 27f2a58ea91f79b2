"""The repeat/explore ranker on a real Online Retail slice: trains in the train stage, ranks known, session-only and
unknown users, round-trips through the model folder and the MLflow pyfunc wrapper."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from real_slices import VALID_CUTOFF, retail_slice

from core.params import load_params
from training.baselines import PopularityRecommender, TifuKnnRecommender
from training.metrics import binary_metrics
from training.model_store import load_model_from_folder, save_model
from training.repeat_explore import FEATURES, HISTORY_COLUMNS, RepeatExploreModel, _product
from training.tracking import ShopaugPyfunc
from training.train import TrainInputs, train_ranker

RANKER = {"windows": 3, "rounds": 60, "early_stopping": 10, "min_data_in_leaf": 20}


def params_for(root):
    return load_params(overrides={"train": {"retail": {"ranker": RANKER}, "cache_dir": str(root / "cache")}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = retail_slice(tmp_path_factory.mktemp("ranker"))
    inputs = TrainInputs(root / "data/fused/retail/aug", root / "data/splits/retail", root / "data/canonical/retail")
    model, metrics, curve, _ = train_ranker(params_for(root), inputs, "aug")
    return root, model, metrics, curve


def valid_ndcg(model, root) -> float:
    train = pd.read_parquet(root / "data/splits/retail/train.parquet")
    targets = pd.read_parquet(root / "data/splits/retail/valid.parquet")
    history = train[train["ts"] < VALID_CUTOFF]
    users = sorted(set(targets["user_id"]))
    model.fit(history, pd.DataFrame())
    ranked = model.recommend(history, users, 10)
    wanted = targets.groupby("user_id")["item_id"].agg(set)
    return float(np.mean([binary_metrics(ranked[u], wanted[u], 10, [10])["ndcg@10"] for u in users]))


def test_ranker_trains_on_windows_and_beats_popularity_on_validation(trained):
    root, model, metrics, curve = trained
    assert metrics["windows"] == RANKER["windows"] and metrics["train_rows"] > 0
    assert curve and all("valid_ndcg@10" in point for point in curve)
    popularity = valid_ndcg(PopularityRecommender(30), root)
    assert metrics["valid_ndcg@10"] > popularity, (metrics["valid_ndcg@10"], popularity)
    tifu = valid_ndcg(TifuKnnRecommender(**load_params().baselines.tifu_knn.model_dump()), root)
    assert metrics["valid_ndcg@10"] > 0.8 * tifu, (metrics["valid_ndcg@10"], tifu)


def test_the_no_augmentation_twin_trains_on_the_newest_window_only(trained):
    root = trained[0]
    inputs = TrainInputs(root / "data/fused/retail/noaug", root / "data/splits/retail", root / "data/canonical/retail")
    _, metrics, _, _ = train_ranker(params_for(root), inputs, "noaug")
    assert metrics["windows"] == 1


def test_ranker_ranks_known_session_and_unknown_users_from_history_alone(trained):
    root, model, _, _ = trained
    history = model.history.dropna(subset=["user_id"])
    user = history.groupby("user_id")["basket_id"].nunique().idxmax()
    bought = set(history.loc[history["user_id"] == user, "item_id"])
    ranked = model.rank_user(str(user), [], 20)
    assert len(ranked) == 20 and len({i for i, _ in ranked}) == 20
    assert {i for i, _ in ranked[:10]} & bought  # a loyal customer's repeat items come first
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)
    newcomer, stranger = model.rank_user("nobody-1", [], 10), model.rank_user("nobody-2", [], 10)
    assert [i for i, _ in newcomer] == [i for i, _ in stranger] and len(newcomer) == 10
    item = next(iter(bought))
    session = model.rank_user("nobody-3", [item], 10)
    assert [i for i, _ in session] != [i for i, _ in newcomer]


def test_features_cover_every_candidate_and_treat_a_missing_history_as_no_purchases(trained):
    _, model, _, _ = trained
    table = model.state.features(pd.DataFrame(), ["nobody"])
    assert set(FEATURES) <= set(table.columns) and len(table) == len(model.state.bestsellers)
    assert (table["times_bought"] == 0).all() and (table["user_baskets"] == 0).all()


def test_saved_ranker_loads_back_and_ranks_identically(trained, tmp_path):
    _, model, _, _ = trained
    folder = save_model(model, tmp_path / "model")
    again = load_model_from_folder(folder)
    assert isinstance(again, RepeatExploreModel)
    user = str(model.history["user_id"].dropna().iloc[0])
    before, after = model.rank_user(user, [], 10), again.rank_user(user, [], 10)
    assert [i for i, _ in after] == [i for i, _ in before]
    assert np.allclose([s for _, s in after], [s for _, s in before], rtol=1e-6)


def test_pyfunc_wrapper_returns_ranked_items_for_item_histories(trained, tmp_path):
    _, model, _, _ = trained
    folder = save_model(model, tmp_path / "model")
    wrapper = ShopaugPyfunc()
    wrapper.load_dir(folder)
    items = model.item_ids[:3]
    out = wrapper.predict(None, pd.DataFrame({"history": [items[:2], []]}))
    assert list(out.columns) == ["item_ids", "scores"] and len(out) == 2
    assert all(len(ids) == 10 for ids in out["item_ids"])


def test_item_vectors_are_unit_length_and_zero_for_unknown_items(trained):
    _, model, _, _ = trained
    vectors = model.encode_items(pd.DataFrame({"item_id": [*model.item_ids[:5], "no-such-item"]}))
    assert np.allclose(np.linalg.norm(vectors[:5], axis=1), 1.0, atol=1e-5)
    assert not vectors[5].any()


def test_precomputed_rankings_answer_exactly_as_scoring_each_user(trained, tmp_path):
    _, model, _, _ = trained
    fresh = load_model_from_folder(save_model(model, tmp_path / "model"))
    users = sorted(fresh.history["user_id"].dropna().astype(str).unique())[:40]
    scored = {u: fresh.rank_user(u, [], 25) for u in users}
    no_history = fresh.rank(fresh.state, pd.DataFrame(columns=HISTORY_COLUMNS), 25, ["nobody"])["nobody"]
    rankings = fresh.rankings()
    assert list(rankings.columns) == ["user_id", "item_id", "score"]
    assert set(rankings["user_id"]) == set(fresh.history["user_id"].dropna().astype(str))
    fresh.use_rankings(rankings)
    for user in users:
        looked_up = fresh.rank_user(user, [], 25)
        assert [i for i, _ in looked_up] == [i for i, _ in scored[user]], user
        assert np.allclose([s for _, s in looked_up], [s for _, s in scored[user]], rtol=1e-9)
    assert fresh.rank_user("nobody-else", [], 25) == no_history
    item = scored[users[0]][0][0]  # recent items are a basket bought now: scored, not looked up
    assert fresh.rank_user(users[0], [item], 25) != scored[users[0]]


def test_validation_scores_the_booster_from_before_the_refit_on_the_validation_window(trained, tmp_path):
    _, model, metrics, _ = trained
    again = load_model_from_folder(save_model(model, tmp_path / "model"))
    before = again.before_validation()
    assert before is not again and before.booster.num_trees() == metrics["best_iteration"]
    user = str(model.history["user_id"].dropna().iloc[0])
    assert before.rank_user(user, [], 10) == model.before_validation().rank_user(user, [], 10)


def test_the_co_purchase_product_over_used_rows_equals_the_full_product_bit_for_bit(trained):
    _, model, _, _ = trained
    state = model.state
    users = state.vectors[:60].tocsr()
    assert users.nnz and (_product(users, state.copurchase) != users @ state.copurchase).nnz == 0
    assert _product(sp.csr_matrix(users.shape), state.copurchase).nnz == 0  # no history: nothing co-bought
