"""The production profile: Redis online store + SQL registry (PostgreSQL), chosen by configuration only."""

import numpy as np
import pandas as pd
import pytest

from core.errors import ShopError
from features import point_in_time_user_features
from features.client import OnlineFeatureClient


def test_production_profile_uses_redis_and_sql_registry(redis_store):
    assert redis_store.config.online_store.type == "redis"
    assert redis_store.config.registry.registry_type == "sql"
    assert redis_store.config.project.startswith("shopaug_test_")
    assert {fv.name for fv in redis_store.list_feature_views()} == {"user_stats", "item_stats"}


def test_redis_values_equal_latest_offline_snapshot(redis_store, tables):
    latest = tables[0].groupby("user_id").tail(1).set_index("user_id")
    online, defaulted = OnlineFeatureClient(redis_store).get_user_features(list(latest.index))
    assert defaulted == []
    online = online.set_index("user_id")
    for column in ["frequency", "monetary", "recency_days", "share_midday", "days_since_first_purchase"]:
        np.testing.assert_allclose(online[column].astype(float), latest[column].astype(float), rtol=1e-6)
    items = tables[1].groupby("item_id").tail(1).set_index("item_id")
    online_items, _ = OnlineFeatureClient(redis_store).get_item_features(list(items.index), ["copurchase_degree"])
    assert (online_items.set_index("item_id")["copurchase_degree"] == items["copurchase_degree"]).all()


def test_redis_unknown_empty_and_missing_feature(redis_store):
    client = OnlineFeatureClient(redis_store)
    out, defaulted = client.get_item_features(["i1", "ghost"], ["pop_30d", "is_cold_start"])
    assert defaulted == ["ghost"] and out.iloc[1]["is_cold_start"] == 1
    empty, none = client.get_user_features([])
    assert empty.empty and none == []
    with pytest.raises(ShopError, match="missing_one"):
        client.get_item_features(["i1"], ["missing_one"])


def test_redis_push_is_seen_by_the_next_read(redis_store):
    client = OnlineFeatureClient(redis_store)
    before, _ = client.get_user_features(["u4"], ["frequency", "monetary"])
    purchases = pd.DataFrame(
        {
            "user_id": ["u4"],
            "item_id": ["i2"],
            "ts": [pd.Timestamp.now(tz="UTC")],
            "quantity": [3],
            "value": [12.0],
            "basket_id": ["push-1"],
        }
    )
    client.push_purchases(purchases)
    after, _ = client.get_user_features(["u4"], ["frequency", "monetary"])
    assert after.iloc[0]["frequency"] == before.iloc[0]["frequency"] + 1
    assert after.iloc[0]["monetary"] == pytest.approx(before.iloc[0]["monetary"] + 12.0, rel=1e-5)


def test_offline_join_works_with_the_sql_registry(redis_store, data):
    interactions, _, _ = data
    rows = interactions[interactions["user_id"].notna()].head(10)
    out = point_in_time_user_features(
        rows[["user_id"]].assign(event_timestamp=rows["ts"]), ["frequency"], store=redis_store
    )
    assert len(out) == 10


def test_teardown_removes_the_projects_redis_keys(tmp_path, tables, make_production_store, count_redis_keys):
    small = (tables[0][tables[0]["user_id"].isin(["u1", "u2"])], tables[1][tables[1]["item_id"] == "i1"])
    with make_production_store(tmp_path, small) as store:
        project = store.config.project
        assert count_redis_keys(project) == 3
    assert count_redis_keys(project) == 0
