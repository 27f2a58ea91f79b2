"""The embedded store (file registry, Parquet offline, SQLite online): point-in-time, online reads, push."""

import numpy as np
import pandas as pd
import pytest

from core.errors import ShopError
from features import (
    point_in_time_item_features,
    point_in_time_service_features,
    point_in_time_user_features,
)
from features.client import OnlineFeatureClient

NUMERIC_USER = ["frequency", "monetary", "n_lines", "recency_days", "share_evening", "share_cluster_0"]


def test_point_in_time_join_never_returns_a_later_value(sqlite_store, data):
    interactions, _, _ = data
    known = interactions[interactions["user_id"].notna()]
    # Look up each purchase one second before it and one second after its day ends.
    sample = known.drop_duplicates("basket_id").sample(40, random_state=3)
    before = sample["ts"] - pd.Timedelta(seconds=1)
    next_day = sample["ts"].dt.floor("D") + pd.Timedelta(days=1, seconds=1)
    entity = pd.DataFrame({"user_id": list(sample["user_id"]) * 2, "event_timestamp": list(before) + list(next_day)})
    out = point_in_time_user_features(entity, ["frequency", "monetary"], store=sqlite_store)
    assert list(out["user_id"]) == list(entity["user_id"])  # row order kept
    for row in out.itertuples():
        seen = known[(known["user_id"] == row.user_id) & (known["ts"] < row.event_timestamp)]
        # The snapshot seen is the last daily boundary <= the lookup time: never more than the past holds.
        assert (0 if np.isnan(row.frequency) else row.frequency) <= seen["basket_id"].nunique()
        day_start = row.event_timestamp.floor("D")
        exact = known[(known["user_id"] == row.user_id) & (known["ts"] < day_start)]
        if exact.empty:
            assert np.isnan(row.frequency)
        else:
            assert row.frequency == exact["basket_id"].nunique()
            assert row.monetary == pytest.approx(exact["value"].sum(), rel=1e-5)


def test_item_point_in_time_join_matches_snapshot_rows(sqlite_store, tables):
    items = tables[1]
    rows = items.sample(20, random_state=4)
    entity = pd.DataFrame(
        {"item_id": rows["item_id"], "event_timestamp": rows["event_timestamp"] + pd.Timedelta(hours=12)}
    )
    out = point_in_time_item_features(entity, ["pop_30d", "n_buyers", "category"], store=sqlite_store)
    assert list(out["pop_30d"]) == list(rows["pop_30d"])
    assert list(out["n_buyers"]) == list(rows["n_buyers"])


def test_training_feature_service_joins_users_and_items(sqlite_store, data):
    interactions, _, _ = data
    rows = interactions[interactions["user_id"].notna()].head(30)
    entity = rows[["user_id", "item_id"]].assign(event_timestamp=rows["ts"])
    out = point_in_time_service_features(entity, "recommender_training", store=sqlite_store)
    assert len(out) == len(entity) and list(out["item_id"]) == list(rows["item_id"])
    users = point_in_time_user_features(entity, store=sqlite_store)
    pd.testing.assert_series_equal(out["monetary"], users["monetary"])
    assert {"recency_days", "pop_7d", "top_category", "is_cold_start"} <= set(out.columns)


def test_online_values_equal_latest_offline_snapshot(sqlite_store, tables):
    latest = tables[0].groupby("user_id").tail(1).set_index("user_id")
    client = OnlineFeatureClient(sqlite_store)
    online, defaulted = client.get_user_features(list(latest.index))
    assert defaulted == []
    online = online.set_index("user_id")
    for column in NUMERIC_USER:
        np.testing.assert_allclose(online[column].astype(float), latest[column].astype(float), rtol=1e-6)
    assert (online["country"] == latest["country"]).all()
    items = tables[1].groupby("item_id").tail(1).set_index("item_id")
    online_items, _ = client.get_item_features(list(items.index), ["pop_90d", "price_mean", "text_cluster"])
    online_items = online_items.set_index("item_id")
    assert (online_items["pop_90d"] == items["pop_90d"]).all()
    np.testing.assert_allclose(online_items["price_mean"], items["price_mean"], rtol=1e-6)


def test_unknown_ids_get_defaults_and_are_reported(sqlite_store):
    client = OnlineFeatureClient(sqlite_store)
    out, defaulted = client.get_user_features(["u1", "ghost", "u1"], ["frequency", "recency_days", "country"])
    assert list(out["user_id"]) == ["u1", "ghost", "u1"]
    assert defaulted == ["ghost"]
    ghost = out.iloc[1]
    assert (ghost["frequency"], ghost["recency_days"], ghost["country"]) == (0, -1.0, "")
    assert out.iloc[0]["frequency"] > 0
    items, missing = client.get_item_features(["never-sold"], ["is_cold_start", "text_cluster"])
    assert missing == ["never-sold"] and items.iloc[0]["is_cold_start"] == 1


def test_empty_id_list_returns_an_empty_frame(sqlite_store):
    client = OnlineFeatureClient(sqlite_store)
    out, defaulted = client.get_item_features([], ["pop_7d"])
    assert out.empty and list(out.columns) == ["item_id", "pop_7d"] and defaulted == []
    empty = point_in_time_user_features(
        pd.DataFrame({"user_id": [], "event_timestamp": []}), ["frequency"], store=sqlite_store
    )
    assert empty.empty and "frequency" in empty.columns


def test_missing_feature_name_is_a_clear_error(sqlite_store):
    client = OnlineFeatureClient(sqlite_store)
    with pytest.raises(ShopError, match="user_stats.*no_such_feature"):
        client.get_user_features(["u1"], ["frequency", "no_such_feature"])
    entity = pd.DataFrame({"item_id": ["i1"], "event_timestamp": [pd.Timestamp("2011-06-01", tz="UTC")]})
    with pytest.raises(ShopError, match="item_stats.*nope"):
        point_in_time_item_features(entity, ["nope"], store=sqlite_store)
    with pytest.raises(ShopError, match="event_timestamp"):
        point_in_time_item_features(entity.drop(columns="event_timestamp"), store=sqlite_store)


def test_pushed_purchases_are_seen_by_the_next_read(sqlite_store):
    client = OnlineFeatureClient(sqlite_store)
    before, _ = client.get_user_features(["u2"], ["frequency", "monetary", "n_lines"])
    now = pd.Timestamp.now(tz="UTC")
    purchases = pd.DataFrame(
        {
            "user_id": ["u2", "u2", "newcomer", None],
            "item_id": ["i1", "i2", "i3", "i4"],
            "ts": [now] * 4,
            "quantity": [1, 2, 1, 1],
            "value": [4.0, 6.0, 3.0, 9.0],
            "basket_id": ["x1", "x1", "x2", "x3"],
        }
    )
    client.push_purchases(purchases)
    after, defaulted = client.get_user_features(
        ["u2", "newcomer"], ["frequency", "monetary", "n_lines", "recency_days"]
    )
    assert defaulted == []
    assert after.iloc[0]["frequency"] == before.iloc[0]["frequency"] + 1
    assert after.iloc[0]["n_lines"] == before.iloc[0]["n_lines"] + 2
    assert after.iloc[0]["monetary"] == pytest.approx(before.iloc[0]["monetary"] + 10.0, rel=1e-5)
    assert after.iloc[1]["frequency"] == 1 and after.iloc[1]["recency_days"] == pytest.approx(0.0, abs=1e-3)
