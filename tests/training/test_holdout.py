"""The held-out splits models are scored on: test for the report, valid for promotion (history stops at the
validation cutoff, so a validation target is never in the history)."""

import pandas as pd
from real_slices import VALID_CUTOFF, retail_slice

from core.params import load_params
from training.baselines import make_baseline
from training.holdout import load_test_inputs, score_model


def test_validation_inputs_stop_the_history_at_the_validation_cutoff(tmp_path):
    root = retail_slice(tmp_path)
    splits, canonical = root / "data/splits/retail", root / "data/canonical/retail"
    valid = load_test_inputs("retail", splits, canonical, "valid")
    assert valid["cutoff"] == pd.Timestamp(VALID_CUTOFF)
    assert valid["history"]["ts"].max() < pd.Timestamp(VALID_CUTOFF)
    expected = pd.read_parquet(splits / "valid.parquet")
    assert set(valid["targets"]["basket_id"]) == set(expected["basket_id"])
    assert valid["test_path"] == splits / "valid.parquet"

    params = load_params(overrides={"evaluation": {"bootstrap_samples": 0}})
    per_unit: dict = {}
    result = score_model(make_baseline("tifu_knn", "retail", params), "retail", params, valid, per_unit)
    assert set(per_unit["table"].index) == set(expected["user_id"].astype(str))
    assert 0 < result["ndcg@10"]["value"] < 1
    assert per_unit["table"]["ndcg@10"].mean() == result["ndcg@10"]["value"]
