"""Context augmentation: Feast point-in-time features joined onto real and synthetic examples (real Feast store)."""

import shutil

import pandas as pd
import pytest
from rec_slice import CUTOFF, retail_slice

import features
from core.errors import ShopError
from core.paths import repo_root
from features.build import apply_definitions, compute_tables
from features.point_in_time import add_context


@pytest.fixture(scope="module")
def store_and_train(tmp_path_factory):
    data = retail_slice()
    train = data["train"]
    users, items = compute_tables(train, data["items"], data["users"], None, CUTOFF)
    root = tmp_path_factory.mktemp("feast_context")
    (root / "features").mkdir()
    config = root / "features" / "feature_store.yaml"
    shutil.copy(repo_root() / "features" / "feature_store.yaml", config)
    (root / "data" / "features").mkdir(parents=True)
    users.to_parquet(root / "data/features/user_features.parquet", index=False)
    items.to_parquet(root / "data/features/item_features.parquet", index=False)
    store = features.open_store(config)
    apply_definitions(store)
    return store, train


def test_context_is_point_in_time_and_flags_unknown_synthetic_users(store_and_train):
    store, train = store_and_train
    user = train.groupby("user_id")["basket_id"].nunique().idxmax()
    rows = train[train["user_id"] == user].sort_values("ts")
    early, late = rows.iloc[[len(rows) // 4]], rows.iloc[[-1]]
    synthetic = late.assign(user_id="synthetic_users:42:00000", is_synthetic=True, source="synthetic_users")
    examples = pd.concat([late, early, synthetic], ignore_index=True)
    out = add_context(examples, store=store, user_features=["frequency", "monetary"], item_features=["n_baskets"])
    assert list(out["user_id"]) == list(examples["user_id"])  # same rows, same order
    assert {"user_frequency", "user_monetary", "item_n_baskets", "user_context_missing"} <= set(out.columns)
    assert out.loc[0, "user_frequency"] > out.loc[1, "user_frequency"]  # later example sees more history
    assert out.loc[0, "user_frequency"] <= rows["basket_id"].nunique()  # never counts the future
    assert out.loc[2, "user_context_missing"] and pd.isna(out.loc[2, "user_frequency"])
    assert not out.loc[0, "item_context_missing"] and out.loc[2, "item_n_baskets"] == out.loc[0, "item_n_baskets"]


def test_context_refuses_examples_without_a_time(store_and_train):
    store, train = store_and_train
    with pytest.raises(ShopError, match="no column 'ts'"):
        add_context(train.drop(columns="ts").head(3), store=store)
