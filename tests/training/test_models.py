"""The trained models on small real slices: they learn, beat random ranking, save/load exactly, serve unseen ids."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from real_slices import VALID_CUTOFF, feast_store, retail_slice, search_slice

from core.encoder import load_encoder
from core.errors import ShopError
from core.params import load_params
from core.paths import repo_root
from training.baselines import RandomRecommender
from training.data import user_context
from training.harness import evaluate_recommender, evaluate_retriever
from training.model_store import load_model, save_model
from training.models import USER_CONTEXT, TextTower
from training.rerank import sample_queries, valid_ndcg
from training.serving_api import RecommenderModel, SearchModel
from training.train import TrainInputs, attach_hybrid, attach_reranker, build_search_job, train_task

pytestmark = pytest.mark.integration
EVAL = load_params().evaluation.model_copy(update={"bootstrap_samples": 0, "recall_ks": [10], "catalogue_recall_k": 20})
TINY = {
    "dim": 32,
    "history_len": 5,
    "repeat_history": 20,
    "repeat_dims": 64,
    "user_layers": 1,
    "user_heads": 2,
    "batch_size": 32,
    "max_steps": 40,
    "eval_every": 20,
    "lr": 3e-3,
}


def inputs(root, task: str) -> TrainInputs:
    """The train stage's inputs in a repo-shaped folder without fused sets: the real split is trained on."""
    return TrainInputs(
        root / "data/fused" / task / "noaug", root / "data/splits" / task, root / "data/canonical" / task
    )


@pytest.fixture(scope="module")
def retail(tmp_path_factory):
    root = retail_slice(tmp_path_factory.mktemp("retail"))
    params = load_params(
        overrides={
            "train": {"retail": TINY, "cache_dir": str(root / "cache")},
            "features": {"store_config": str(feast_store(root))},
        }
    )
    return root, train_task(params, "retail", "noaug", inputs(root, "retail"))


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    root = search_slice(tmp_path_factory.mktemp("search"))
    params = load_params(
        overrides={
            "train": {
                "cache_dir": str(root / "cache"),
                "search": {
                    "trainable_layers": 1,
                    "max_seq_len": 16,
                    "batch_size": 16,
                    "max_steps": 30,
                    "eval_every": 15,
                    "sampled_negatives": 64,
                    "lr": 1e-3,
                    "encoder_lr": 1e-4,
                },
            }
        }
    )
    outcome = train_task(params, "search", "noaug", inputs(root, "search"))
    outcome.params = params
    return root, outcome


def _loss_drop(history: list[dict]) -> tuple[float, float]:
    losses = [r["loss"] for r in history]
    return float(np.mean(losses[:5])), float(np.mean(losses[-5:]))


def test_recommender_learns_on_real_slice_and_beats_random_ranking(retail):
    root, outcome = retail
    first, last = _loss_drop(outcome.result.history)
    assert last < first
    train = pd.read_parquet(root / "data/splits/retail/train.parquet")
    history = train[train["ts"] < VALID_CUTOFF]
    targets = pd.read_parquet(root / "data/splits/retail/valid.parquet")
    items = pd.read_parquet(root / "data/canonical/retail/items.parquet")
    random = RandomRecommender(seed=0)
    random.fit(history, items)
    model = evaluate_recommender(outcome.model, history, targets, items, EVAL)
    chance = evaluate_recommender(random, history, targets, items, EVAL)
    assert model["ndcg@10"]["value"] > chance["ndcg@10"]["value"] + 0.05


def _batch_loss(job, plans: list) -> float:
    job.model.eval()
    with torch.no_grad():
        return float(np.mean([float(job.model(job.collate(plan, 0, i))) for i, plan in enumerate(plans)]))


def test_bi_encoder_learns_on_real_slice_and_beats_random_ranking(search):
    root, outcome = search
    plans = outcome.job.plans(0)[:8]
    untrained, _ = build_search_job(
        outcome.params, inputs(root, "search"), "noaug"
    )  # the pretrained start, same batches
    assert _batch_loss(outcome.job, plans) < _batch_loss(untrained, plans)
    valid = pd.read_parquet(root / "data/splits/search/valid.parquet")
    items = pd.read_parquet(root / "data/canonical/search/items.parquet")
    outcome.model.fit(valid, items)
    metrics = evaluate_retriever(outcome.model, valid, items, EVAL)
    assert metrics["ndcg@10"]["value"] > 0.2  # random order over ~500 products scores ~0.02


def test_hybrid_weight_is_tuned_on_validation_and_survives_save_load_and_reindexing(search, tmp_path):
    root, outcome = search
    items = pd.read_parquet(root / "data/canonical/search/items.parquet")
    valid = pd.read_parquet(root / "data/splits/search/valid.parquet")
    model = load_model(str(save_model(outcome.model, tmp_path / "dense")))  # a copy: the fixture stays dense
    model.fit(valid, items.assign(search_text=items["title"] + " zzexpanded"))  # as fuse's expanded items
    settings = outcome.params.train.search.hybrid
    summary = attach_hybrid(model, settings, outcome.job.valid)
    prefix = "valid_ndcg@10_bm25_"
    curve = {int(k[len(prefix) : -len("pct")]): v for k, v in summary.items() if k.startswith(prefix)}
    assert summary["valid_ndcg@10"] == max(curve.values()) and 0 in curve
    assert round(100 * summary["hybrid_weight"]) in curve
    assert model.name.startswith("hybrid") and model.hybrid["text_column"] == "search_text"
    loaded = load_model(str(save_model(model, tmp_path / "hybrid")))
    loaded.fit(valid, items)  # canonical items lack search_text: the model's own expanded text is kept
    assert loaded.items["search_text"].str.endswith("zzexpanded").all()
    queries = ["cordless drill", "white interior paint", "zzexpanded"]
    assert loaded.search(queries, 10) == model.search(queries, 10)
    assert loaded.lexical().catalogue_scores(["zzexpanded"]).min() > 0  # BM25 indexes the expanded text
    dense = loaded.dense_only()
    assert dense.hybrid is None and dense.name.startswith("bi_encoder")
    # offline scoring's query memo: the same vectors, shared with the parts made after it is on, never re-encoded
    memo = loaded.remember_queries().dense_only()
    np.testing.assert_allclose(memo.encode_queries(queries), dense.encode_queries(queries), rtol=1e-5, atol=1e-6)
    assert memo.search(queries, 10) == dense.search(queries, 10)
    loaded.net.query_tower = None  # nothing left to encode with: the memo answers
    np.testing.assert_array_equal(memo.encode_queries(queries[::-1]), memo.encode_queries(queries)[::-1])


def test_reranker_learns_the_judged_order_keeps_the_candidates_and_survives_save_load(search, tmp_path):
    """The LambdaRank re-ranker over the hybrid's top candidates: it orders the queries it learned from better
    than the hybrid did, re-orders only the top `depth` (the same items, another order), and a saved model
    ranks as the trained one. Queries without a judged relevant candidate are refused by name."""
    root, outcome = search
    items = pd.read_parquet(root / "data/canonical/search/items.parquet")
    train = pd.read_parquet(root / "data/splits/search/train.parquet")
    model = load_model(str(save_model(outcome.model, tmp_path / "dense")))
    model.fit(train, items)
    hybrid_valid = attach_hybrid(model, outcome.params.train.search.hybrid, outcome.job.valid)["valid_ndcg@10"]
    settings = outcome.params.train.search.rerank.model_copy(update={"depth": 20, "min_data_in_leaf": 5})
    summary = attach_reranker(model, settings, train, outcome.job.valid, hybrid_valid, seed=0)
    assert summary["rerank_rounds"] >= 1 and model.config["rerank"] == {"depth": 20}
    assert summary["rerank_train_queries"] == train["query"].nunique()  # fewer than rerank.max_queries: all
    first_stage = model.first_stage()
    assert first_stage.reranker is None and "rerank" not in first_stage.config
    # the first stage's validation NDCG@10 it reports is the weight tuning's, as the first stage itself scores
    assert summary["valid_ndcg@10_first_stage"] == pytest.approx(valid_ndcg(first_stage, outcome.job.valid), abs=1e-12)
    assert valid_ndcg(model, train) > valid_ndcg(first_stage, train)
    queries = sorted(set(train["query"]))[:30]
    reranked, hybrid = model.search(queries, 20), first_stage.search(queries, 20)
    assert all({i for i, _ in a} == {i for i, _ in b} for a, b in zip(reranked, hybrid, strict=True))
    assert any([i for i, _ in a] != [i for i, _ in b] for a, b in zip(reranked, hybrid, strict=True))
    loaded = load_model(str(save_model(model, tmp_path / "reranked")))
    assert (tmp_path / "reranked" / "reranker.txt").is_file()
    assert loaded.search(queries, 10) == model.search(queries, 10)
    (tmp_path / "reranked" / "reranker.txt").unlink()
    with pytest.raises(ShopError, match="names a re-ranker but reranker.txt is missing"):
        load_model(str(tmp_path / "reranked"))
    unjudged = train.assign(relevance=0.0)
    with pytest.raises(ShopError, match="no re-ranker train query has a judged relevant item"):
        attach_reranker(model.first_stage(), settings, unjudged, outcome.job.valid, hybrid_valid, seed=0)


def test_reranker_query_sample_keeps_whole_queries_and_follows_the_seed():
    rows = pd.DataFrame({"query": [f"q{i // 3}" for i in range(30)], "item_id": range(30), "relevance": 1.0})
    sample = sample_queries(rows, 4, seed=7)
    assert sample["query"].nunique() == 4 and (sample.groupby("query").size() == 3).all()
    assert sample.equals(sample_queries(rows, 4, seed=7))
    assert set(sample["query"]) != set(sample_queries(rows, 4, seed=8)["query"])
    assert sample_queries(rows, None, seed=7) is rows and sample_queries(rows, 10, seed=7) is rows


def test_saved_recommender_loads_with_identical_embeddings(retail, tmp_path):
    _, outcome = retail
    model = outcome.model
    loaded = load_model(str(save_model(model, tmp_path / "rec")))
    assert isinstance(loaded, RecommenderModel) and loaded.item_ids == model.item_ids
    histories = [model.item_ids[:3], model.item_ids[5:6], []]
    np.testing.assert_array_equal(loaded.encode_items(model.items), model.encode_items(model.items))
    np.testing.assert_array_equal(loaded.encode_users(histories), model.encode_users(histories))


def test_saved_search_model_loads_with_identical_embeddings(search, tmp_path):
    _, outcome = search
    model = outcome.model
    loaded = load_model(str(save_model(model, tmp_path / "search")))
    assert isinstance(loaded, SearchModel)
    texts = ["cordless drill", "white interior paint"]
    np.testing.assert_allclose(loaded.encode_queries(texts), model.encode_queries(texts), atol=1e-6)
    np.testing.assert_allclose(
        loaded.encode_items(model.items.head(20)), model.encode_items(model.items.head(20)), atol=1e-6
    )


def test_recommender_serves_unseen_items_from_text_and_unseen_users_from_history(retail):
    _, outcome = retail
    model = outcome.model
    new_item = pd.DataFrame(
        {
            "item_id": ["NEW-1"],
            "title": ["RED RETROSPOT GIFT BAG"],
            "description": [""],
            "category": [""],
            "price": [1.5],
        }
    )
    vectors = model.encode_items(pd.concat([model.items.head(2), new_item], ignore_index=True))
    assert np.isfinite(vectors).all() and not np.allclose(vectors[2], 0)
    users = model.encode_users([["NEW-1"], [model.item_ids[1]]])
    scores = users @ vectors.T
    assert np.isfinite(scores).all()
    assert scores[0, 2] > scores[1, 2]  # having bought the new item raises its score (repeat path, any id)


def test_user_tower_reads_point_in_time_feast_context_and_flags_users_without_it(retail):
    root, outcome = retail
    job, model = outcome.job, outcome.model
    assert model.config["user_context"] == USER_CONTEXT
    context = job.ex.user_feats[:, -len(USER_CONTEXT) - 1 :]
    assert (context[:, -1] == 0).mean() > 0.9  # real users of the slice: a snapshot before nearly every basket
    frequency = np.expm1(context[:, 0])  # log1p(distinct baskets so far): never counts the example's basket
    user = pd.Series(job.ex.users)
    first = ~user.duplicated().to_numpy()
    assert (frequency[first] <= 1).all() and frequency.max() > 5
    last = int(np.flatnonzero(user == user[0])[-1])
    features = user_context([user[0], "unknown-user"], [job.ex.ts[last]] * 2, job.feature_store)
    assert np.isclose(features["frequency"].iloc[0], frequency[last], rtol=1e-4)
    assert pd.isna(features["frequency"].iloc[1])
    history = [model.item_ids[:3]] * 2
    with_context = model.encode_users(history, features)
    assert not np.allclose(with_context[0], with_context[1])  # the features enter the tower
    # missing context = None; the same user encoded in a batch of two and alone differs only by float32
    # rounding (values up to ~10 differ by ~1e-6), so compare to 1e-5 relative, not to a fixed 1e-6
    np.testing.assert_allclose(with_context[1], model.encode_users(history[:1])[0], rtol=1e-5, atol=1e-6)


def test_lora_trains_only_adapters_and_exports_a_plain_encoder(tmp_path):
    tower = TextTower("minilm", 16, lora=True, lora_r=4)
    trainable = [n for n, p in tower.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for name, param in tower.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)  # make the adapters matter
    tower.export(tmp_path / "enc")
    tokenizer, plain = load_encoder(str(tmp_path / "enc"))
    assert not any("lora" in n for n, _ in plain.named_parameters())
    exported = TextTower(str(tmp_path / "enc"), 16)
    np.testing.assert_allclose(exported.encode(["cordless drill"]), tower.encode(["cordless drill"]), atol=1e-5)


def test_fgm_moves_each_query_up_its_loss_gradient_only_while_training(search):
    _, outcome = search
    net, batch = outcome.job.model, outcome.job.collate(outcome.job.plans(0)[0], 0, 0)
    assert batch["fgm_epsilon"] == 0.0  # train.search.fgm_epsilon in params.yaml: off
    net.eval()  # no dropout: the clean and the adversarial loss see the same network
    clean = float(net(batch).detach())
    net.zero_grad()
    adversarial = net({**batch, "fgm_epsilon": 0.5})
    adversarial.backward()
    assert float(adversarial.detach()) > clean + 1e-3  # the moved queries' loss is higher: averaged, still higher
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.query_tower.parameters())
    with torch.no_grad():  # validation: no gradient, so no perturbation
        assert float(net({**batch, "fgm_epsilon": 0.5})) == pytest.approx(clean, rel=1e-5)
    net.zero_grad()


def test_a_switch_model_trains_with_its_overrides_and_a_bad_override_is_one_line(tmp_path):
    params = load_params()
    raw = yaml.safe_load((repo_root() / "params.yaml").read_text())  # as `make ablation` runs it: the ablation
    raw["experiments"]["models"] |= raw["experiments"].pop("ablation")  # switch moved into experiments.models
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert load_params(tmp_path / "params.yaml").for_model("search", "aug_fgm").train.search.fgm_epsilon == 0.1
    assert params.for_model("search", "aug").train.search.fgm_epsilon == 0.0
    nested = {"x": {"task": "search", "variant": "aug_bm25", "data": "aug", "train": {"hybrid": {"weights": [0.5]}}}}
    switched = load_params(overrides={"experiments": {"models": nested}}).for_model("search", "aug_bm25")
    assert switched.train.search.hybrid.weights == [0.5] and switched.train.search.hybrid.enabled  # a deep merge
    bad = {"x": {"task": "search", "variant": "aug_x", "data": "aug", "train": {"fgm_epsilom": 0.1}}}
    with pytest.raises(ShopError, match=r"experiments.models.x.train: fgm_epsilom: Extra inputs are not permitted"):
        load_params(overrides={"experiments": {"models": bad}})
    clash = {"x": {"task": "search", "variant": "aug", "data": "noaug", "train": {}}}
    with pytest.raises(ShopError, match="a switch needs a name of its own"):
        load_params(overrides={"experiments": {"models": clash}})
    twice = {"x": {"task": "search", "variant": "aug"}}
    with pytest.raises(ShopError, match="search/aug is listed twice"):
        load_params(overrides={"experiments": {"models": twice}})
    both = {"search-aug": {"task": "search", "variant": "aug"}}
    with pytest.raises(ShopError, match="search-aug is in both experiments.models and experiments.ablation"):
        load_params(overrides={"experiments": {"ablation": both}})
