"""Feature computation: snapshots hold only the past, windows and running statistics are exact."""

import numpy as np
import pandas as pd
import pytest

from core.errors import ShopError
from features import compute
from features.build import compute_tables

CUTOFF = "2011-11-01"  # as in conftest.py


def test_user_snapshot_aggregates_only_interactions_before_its_timestamp(data, tables):
    interactions, _, _ = data
    users = tables[0]
    sample = users.sample(60, random_state=1)
    for row in sample.itertuples():
        past = interactions[(interactions["user_id"] == row.user_id) & (interactions["ts"] < row.event_timestamp)]
        assert row.frequency == past["basket_id"].nunique()
        assert row.n_lines == len(past)
        assert row.monetary == pytest.approx(past["value"].sum(), rel=1e-5)
        recency = (row.event_timestamp - past["ts"].max()) / pd.Timedelta(days=1)
        assert row.recency_days == pytest.approx(recency, rel=1e-5)


def test_user_shares_sum_to_one(tables):
    users = tables[0]
    hours = users[
        [
            c
            for c in users.columns
            if c in {"share_night", "share_morning", "share_midday", "share_afternoon", "share_evening"}
        ]
    ].sum(axis=1)
    days = users[[f"share_{d}" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")]].sum(axis=1)
    clusters = users[[c for c in users.columns if c.startswith("share_cluster_")]].sum(axis=1)
    for total in (hours, days, clusters):
        np.testing.assert_allclose(total, 1.0, rtol=1e-5)


def test_item_popularity_windows_count_baskets_in_the_window(data, tables):
    interactions, _, _ = data
    items = tables[1]
    for row in items.sample(60, random_state=2).itertuples():
        mine = interactions[interactions["item_id"] == row.item_id]
        for days, value in ((7, row.pop_7d), (30, row.pop_30d), (90, row.pop_90d)):
            start = row.event_timestamp - pd.Timedelta(days=days)
            window = mine[(mine["ts"] >= start) & (mine["ts"] < row.event_timestamp)]
            assert value == window["basket_id"].nunique()
        past = mine[mine["ts"] < row.event_timestamp]
        assert row.n_buyers == past["user_id"].dropna().nunique()
        price = past["value"] / past["quantity"]
        assert row.price_min == pytest.approx(price.min(), rel=1e-5)
        assert row.price_max == pytest.approx(price.max(), rel=1e-5)


def test_item_copurchase_degree_counts_distinct_partners(data, tables):
    interactions, _, _ = data
    last = tables[1].groupby("item_id").tail(1).set_index("item_id")
    baskets = interactions.groupby("basket_id")["item_id"].apply(set)
    for item_id in list(last.index)[:10]:
        partners = set().union(*[b for b in baskets if item_id in b]) - {item_id}
        assert last.loc[item_id, "copurchase_degree"] == len(partners)


def test_cold_start_flag_follows_first_sale(tables):
    items = tables[1]
    assert ((items["days_since_first_seen"] < 30) == (items["is_cold_start"] == 1)).all()
    assert (items["days_since_first_seen"] >= 0).all()


def test_enrichment_category_fills_items_and_user_top_category(data):
    interactions, items, users = data
    enrichment = pd.DataFrame({"item_id": items["item_id"], "category": ["kitchen"] * 20 + ["garden"] * 5})
    user_table, item_table = compute_tables(interactions, items, users, enrichment, CUTOFF)
    assert set(item_table["category"]) == {"kitchen", "garden"}
    latest = user_table.groupby("user_id").tail(1)
    assert set(latest["top_category"]) <= {"kitchen", "garden"}
    assert (latest["top_category_share"] > 0).all()


def test_missing_enrichment_leaves_category_empty(tables):
    assert set(tables[1]["category"]) == {""}
    assert set(tables[0]["top_category"]) == {""}


def test_rows_after_the_cutoff_are_refused(data):
    interactions, items, users = data
    late = interactions.copy()
    late.loc[0, "ts"] = pd.Timestamp(CUTOFF, tz="UTC") + pd.Timedelta(hours=1)
    with pytest.raises(ShopError, match="after the cutoff"):
        compute_tables(late, items, users, None, CUTOFF)


def test_snapshots_end_at_the_cutoff_and_are_daily(tables):
    users = tables[0]
    assert users["event_timestamp"].max() == compute.cutoff_timestamp(CUTOFF)
    steps = users.groupby("user_id")["event_timestamp"].diff().dropna().unique()
    assert list(steps) == [pd.Timedelta(days=1)]
