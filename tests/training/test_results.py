"""The evaluate stage's bookkeeping: uplifts, ablation deltas, planned runs and the sweep CSV."""

import json

import numpy as np
import pandas as pd
import pytest

from core.errors import ShopError
from core.params import load_params
from training import results


def res(ndcg: float, cold: float = 0.1) -> dict:
    return {
        "ndcg@10": {"value": ndcg},
        "hr@10": {"value": ndcg * 2},
        "segments": {"cold_users": {"ndcg@10": {"value": cold}}},
    }


def test_uplift_is_relative_to_twin_and_best_real_baseline():
    models = {"noaug": res(0.20, 0.10), "aug": res(0.25, 0.15)}
    baselines = {"popularity": res(0.10), "repeat_purchase": res(0.20), "random": res(0.9)}
    uplift = results.compare("retail", models, baselines)
    assert uplift["best_baseline"] == "repeat_purchase"  # random is never the bar
    assert uplift["models"]["aug"]["noaug"]["ndcg@10"] == pytest.approx(0.25)
    assert uplift["models"]["aug"]["noaug"]["cold_users.ndcg@10"] == pytest.approx(0.5)
    assert uplift["models"]["aug"]["best_baseline"]["ndcg@10"] == pytest.approx(0.25)
    assert "noaug" not in uplift["models"]["noaug"]


def test_ablation_is_aug_minus_leave_one_out():
    models = {"aug": res(0.25), "minus_cf_interactions": res(0.22), "minus_sequence_aug": res(0.26)}
    out = results.ablation("retail", models)
    assert out["cf_interactions"]["ndcg@10"] == pytest.approx(0.03)
    assert out["sequence_aug"]["ndcg@10"] == pytest.approx(-0.01)


def test_differences_carry_paired_bootstrap_cis_over_the_same_users():
    rng = np.random.default_rng(0)
    users = pd.Index([f"u{i}" for i in range(400)], name="user_id")
    base = rng.uniform(0, 1, len(users))
    cold = np.arange(len(users)) % 4 == 0
    table = {  # aug is better by 0.05 on every user; minus_x equals aug; noise is shared (paired)
        "noaug": pd.DataFrame({"ndcg@10": base, "cold_user": cold}, index=users),
        "aug": pd.DataFrame({"ndcg@10": base + 0.05, "cold_user": cold}, index=users),
        "minus_x": pd.DataFrame({"ndcg@10": base + 0.05, "cold_user": cold}, index=users),
    }
    params = load_params(overrides={"evaluation": {"bootstrap_samples": 200}})
    twin = results.versus_twin("retail", table, params)
    assert twin["aug"]["ndcg@10"]["value"] == pytest.approx(0.05)
    assert twin["aug"]["ndcg@10"]["ci_low"] == pytest.approx(0.05)  # paired: the shared noise cancels
    assert twin["aug"]["cold_users.ndcg@10"]["n"] == cold.sum()
    models = {v: {"ndcg@10": {"value": float(t["ndcg@10"].mean())}} for v, t in table.items()}
    out = results.ablation("retail", models, table, params)
    assert out["x"]["ndcg@10"] == pytest.approx(0.0) and out["x"]["ndcg@10_ci"] == [0.0, 0.0]
    unpaired = {**table, "noaug": table["noaug"].sample(frac=1, random_state=0).set_axis(users)}
    shuffled = results.versus_twin("retail", unpaired, params)["aug"]["ndcg@10"]
    assert shuffled["ci_high"] - shuffled["ci_low"] > 0.05  # different users per row: the noise stays


def test_planned_runs_add_ablation_variants_that_exist(tmp_path):
    fused = tmp_path / "data/fused/retail"
    fused.mkdir(parents=True)
    for variant in ("noaug", "aug", "minus_cf_interactions"):
        (fused / f"{variant}.parquet").write_bytes(b"")
    (fused / "manifest.json").write_text(
        json.dumps({"variants": {"noaug": {}, "aug": {}, "minus_cf_interactions": {}, "minus_sequence_aug": {}}})
    )
    runs = ["retail/noaug", "retail/aug", "search/aug"]
    params = load_params(overrides={"experiments": {"runs": runs, "ablation": True}})
    assert results.planned_runs(params, tmp_path) == [
        ("retail", "noaug"),
        ("retail", "aug"),
        ("retail", "minus_cf_interactions"),
    ]
    no_ablation = load_params(overrides={"experiments": {"runs": runs, "ablation": False}})
    assert results.planned_runs(no_ablation, tmp_path) == [("retail", "noaug"), ("retail", "aug")]
    bad = load_params(overrides={"experiments": {"runs": ["books/aug"]}})
    with pytest.raises(ShopError, match="books/aug"):
        results.planned_runs(bad, tmp_path)


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
    results.append_sweep(path, [row, {**row, "variant": "noaug", "synthetic_share": 0.0}])
    results.append_sweep(path, [{**row, "synthetic_share": 0.1, "max_synthetic_share": 0.1}])
    results.append_sweep(path, [{**row, "ndcg@10": 0.21}])  # same setting again: replaces the first aug row
    sweep = pd.read_csv(path)
    assert len(sweep) == 3
    assert sweep.loc[sweep["max_synthetic_share"] == 0.5].set_index("variant")["ndcg@10"]["aug"] == 0.21


def test_training_reads_the_items_table_the_fused_manifest_names(tmp_path):
    from training.data import items_table

    for rel, title in (
        ("data/canonical/retail/items.parquet", "LAMP"),
        ("data/synthetic/item_enrichment.parquet", "LAMP | lighting"),
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {"item_id": ["1"], "title": [title], "description": [""], "category": [""], "price": [1.0]}
        ).to_parquet(tmp_path / rel)
    assert items_table(tmp_path, "retail", "aug")["title"].iloc[0] == "LAMP"  # no manifest: canonical
    (tmp_path / "data/fused/retail").mkdir(parents=True)
    (tmp_path / "data/fused/retail/manifest.json").write_text(
        json.dumps(
            {
                "variants": {
                    "aug": {"items": "data/synthetic/item_enrichment.parquet"},
                    "noaug": {"items": "data/canonical/retail/items.parquet"},
                }
            }
        )
    )
    assert items_table(tmp_path, "retail", "aug")["title"].iloc[0] == "LAMP | lighting"
    assert items_table(tmp_path, "retail", "noaug")["title"].iloc[0] == "LAMP"
