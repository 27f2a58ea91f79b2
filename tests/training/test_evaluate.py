"""The evaluate stage's bookkeeping: uplifts, ablation deltas, the models it scores and the sweep CSV."""

import numpy as np
import pandas as pd
import pytest

from core.errors import ShopError
from core.params import ModelSpec, load_params
from training import evaluate
from training.data import items_table


def res(ndcg: float, cold: float = 0.1) -> dict:
    return {
        "ndcg@10": {"value": ndcg},
        "hr@10": {"value": ndcg * 2},
        "segments": {"cold_users": {"ndcg@10": {"value": cold}}},
    }


def test_uplift_is_relative_to_twin_and_best_real_baseline():
    models = {"noaug": res(0.20, 0.10), "aug": res(0.25, 0.15)}
    baselines = {"popularity": res(0.10), "repeat_purchase": res(0.20), "random": res(0.9)}
    uplift = evaluate.compare("retail", models, baselines)
    assert uplift["best_baseline"] == "repeat_purchase"  # random is never the bar
    assert uplift["models"]["aug"]["noaug"]["ndcg@10"] == pytest.approx(0.25)
    assert uplift["models"]["aug"]["noaug"]["cold_users.ndcg@10"] == pytest.approx(0.5)
    assert uplift["models"]["aug"]["best_baseline"]["ndcg@10"] == pytest.approx(0.25)
    assert "noaug" not in uplift["models"]["noaug"]


def test_ablation_is_aug_minus_leave_one_out():
    models = {"aug": res(0.25), "minus_cf_interactions": res(0.22), "minus_sequence_aug": res(0.26)}
    out = evaluate.ablation("retail", models)
    assert out["cf_interactions"]["ndcg@10"] == pytest.approx(0.03)
    assert out["sequence_aug"]["ndcg@10"] == pytest.approx(-0.01)


def test_differences_carry_paired_bootstrap_cis_over_the_same_users():
    rng = np.random.default_rng(0)
    users = pd.Index([f"u{i}" for i in range(400)], name="user_id")
    base = rng.uniform(0, 1, len(users))
    cold = np.arange(len(users)) % 4 == 0
    table = {  # aug is better by 0.05 on every user; minus_x equals aug; noise is shared (paired)
        name: pd.DataFrame({"ndcg@10": base + gain, "ndcg@10_new": base / 2 + gain, "cold_user": cold}, index=users)
        for name, gain in (("noaug", 0.0), ("aug", 0.05), ("minus_x", 0.05))
    }
    params = load_params(overrides={"evaluation": {"bootstrap_samples": 200}})
    twin = evaluate.versus_twin("retail", table, params)
    assert twin["aug"]["ndcg@10"]["value"] == pytest.approx(0.05)
    assert twin["aug"]["ndcg@10"]["ci_low"] == pytest.approx(0.05)  # paired: the shared noise cancels
    assert twin["aug"]["cold_users.ndcg@10"]["n"] == cold.sum()
    assert twin["aug"]["ndcg@10_new"]["value"] == pytest.approx(0.05)
    models = {v: {"ndcg@10": {"value": float(t["ndcg@10"].mean())}} for v, t in table.items()}
    out = evaluate.ablation("retail", models, table, params)
    assert out["x"]["ndcg@10"] == pytest.approx(0.0) and out["x"]["ndcg@10_ci"] == [0.0, 0.0]
    unpaired = {**table, "noaug": table["noaug"].sample(frac=1, random_state=0).set_axis(users)}
    shuffled = evaluate.versus_twin("retail", unpaired, params)["aug"]["ndcg@10"]
    assert shuffled["ci_high"] - shuffled["ci_low"] > 0.05  # different users per row: the noise stays


def test_a_training_switch_is_compared_with_the_model_trained_on_the_same_rows():
    users = pd.Index([f"q{i}" for i in range(200)], name="query")
    base = np.random.default_rng(1).uniform(0, 1, len(users))
    table = {  # aug_fgm05: +0.02 clean and +0.04 noisy over aug, on the same queries
        name: pd.DataFrame({"ndcg@10": base + clean, "ndcg@10_noisy": base / 2 + noisy}, index=users)
        for name, clean, noisy in (("noaug", 0.0, 0.0), ("aug", 0.01, 0.0), ("aug_fgm05", 0.03, 0.04))
    }
    switch = {
        "search-aug_fgm05": {"task": "search", "variant": "aug_fgm05", "data": "aug", "train": {"fgm_epsilon": 0.05}}
    }
    params = load_params(overrides={"evaluation": {"bootstrap_samples": 100}, "experiments": {"models": switch}})
    out = evaluate.switches("search", table, params)
    assert set(out) == {"aug_fgm05"}
    assert out["aug_fgm05"]["data"] == "aug" and out["aug_fgm05"]["train"] == {"fgm_epsilon": 0.05}
    assert out["aug_fgm05"]["ndcg@10"]["value"] == pytest.approx(0.02)
    assert out["aug_fgm05"]["ndcg@10_noisy"]["ci_low"] == pytest.approx(0.04)
    assert evaluate.switches("search", {"aug_fgm05": table["aug_fgm05"]}, params) == {}  # no model on its rows


def with_models(params, names: list[str]):
    """`params` whose experiments.models are exactly `names` (<task>-<variant>)."""
    models = {n: ModelSpec(task=n.split("-", 1)[0], variant=n.split("-", 1)[1]) for n in names}
    return params.model_copy(update={"experiments": params.experiments.model_copy(update={"models": models})})


def test_scored_models_are_the_configured_ones_with_a_model_folder(tmp_path):
    models = tmp_path / "models"
    for variant in ("noaug", "aug", "minus_cf_interactions"):
        (models / "retail" / variant).mkdir(parents=True)
        (models / "retail" / variant / "model.json").write_text("{}")
    names = ["retail-noaug", "retail-aug", "retail-minus_cf_interactions", "retail-minus_sequence_aug", "search-aug"]
    params = with_models(load_params(), names)
    assert evaluate.trained_variants(params, "retail", models) == ["noaug", "aug", "minus_cf_interactions"]
    assert evaluate.trained_variants(params, "search", models) == []
    no_ablation = with_models(params, ["retail-noaug", "retail-aug", "search-aug"])
    assert evaluate.trained_variants(no_ablation, "retail", models) == ["noaug", "aug"]
    with pytest.raises(ShopError, match="books"):
        load_params(overrides={"experiments": {"models": {"books-aug": {"task": "books", "variant": "aug"}}}})


def test_sweep_rows_accumulate_and_a_rerun_replaces_its_own(tmp_path):
    path = tmp_path / "sweep" / "retail.csv"
    row = {
        "variant": "aug",
        "synthetic_share": 0.3,
        "ndcg@10": 0.2,
        "max_synthetic_share": 0.5,
        "generators": "cf_interactions+online_retail",
        "augment_enabled": True,
    }
    evaluate.append_sweep(path, [row, {**row, "variant": "noaug", "synthetic_share": 0.0}])
    evaluate.append_sweep(path, [{**row, "synthetic_share": 0.1, "max_synthetic_share": 0.1}])
    evaluate.append_sweep(path, [{**row, "ndcg@10": 0.21}])  # same setting again: replaces the first aug row
    sweep = pd.read_csv(path)
    assert len(sweep) == 3
    assert sweep.loc[sweep["max_synthetic_share"] == 0.5].set_index("variant")["ndcg@10"]["aug"] == 0.21


def test_training_reads_the_items_table_the_fused_variant_holds(tmp_path):
    canonical, fused = tmp_path / "data/canonical/retail", tmp_path / "data/fused/retail"
    for folder, title in ((canonical, "LAMP"), (fused / "aug", "LAMP | lighting")):
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {"item_id": ["1"], "title": [title], "description": [""], "category": [""], "price": [1.0]}
        ).to_parquet(folder / "items.parquet")
    assert items_table(fused / "noaug", canonical)["title"].iloc[0] == "LAMP"  # no items of its own: canonical
    assert items_table(fused / "aug", canonical)["title"].iloc[0] == "LAMP | lighting"
    (fused / "aug" / "items.parquet").unlink()
    assert items_table(fused / "aug", canonical)["title"].iloc[0] == "LAMP"
