"""Split properties: nothing after the cutoff in train, first baskets as targets, query texts never shared."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from core.errors import ShopError
from core.io import write_table
from core.paths import repo_root
from pipelines.split import first_baskets, split_retail, split_search

CUTOFF = pd.Timestamp("2011-11-01", tz="UTC")


def interactions(*rows: tuple) -> pd.DataFrame:
    """rows: (user or None, basket, item, 'YYYY-MM-DD')."""
    return pd.DataFrame(
        {
            "user_id": pd.array([r[0] for r in rows], dtype="string"),
            "basket_id": [r[1] for r in rows],
            "item_id": [r[2] for r in rows],
            "ts": pd.to_datetime([r[3] for r in rows], utc=True, format="ISO8601"),
            "event": "purchase",
            "quantity": 1,
            "value": 1.0,
        }
    )


ROWS = interactions(
    ("a", "1", "x", "2011-09-01"),
    ("a", "2", "y", "2011-10-10"),
    ("a", "3", "z", "2011-11-02"),
    ("a", "3", "x", "2011-11-02"),
    ("a", "4", "w", "2011-11-20"),  # a: history, test basket 3
    ("b", "5", "x", "2011-11-05"),  # b: no history -> no target
    ("c", "6", "y", "2011-08-01"),
    ("c", "7", "x", "2011-10-31 23:59"),  # c: valid basket 7, no test
    (None, "8", "x", "2011-10-15"),
    (None, "9", "y", "2011-11-03"),  # guests
)


def test_train_holds_nothing_on_or_after_the_cutoff_and_keeps_guests():
    parts, _ = split_retail(ROWS, CUTOFF, valid_days=30)
    assert (parts["train"]["ts"] < CUTOFF).all()
    assert len(parts["train"]) == len(ROWS[ROWS["ts"] < CUTOFF])
    assert parts["train"]["user_id"].isna().sum() == 1


def test_test_targets_are_the_first_basket_after_cutoff_of_returning_users():
    parts, summary = split_retail(ROWS, CUTOFF, valid_days=30)
    test = parts["test"]
    assert (test["ts"] >= CUTOFF).all()
    assert set(zip(test["user_id"], test["basket_id"], strict=True)) == {("a", "3")}
    assert sorted(test["item_id"]) == ["x", "z"]
    assert summary["counts"]["test"] == {"rows": 2, "users": 1, "items": 2}


def test_validation_is_built_the_same_way_inside_train():
    parts, summary = split_retail(ROWS, CUTOFF, valid_days=30)
    valid = parts["valid"]
    assert summary["valid_cutoff"] == "2011-10-02T00:00:00+00:00"
    assert (valid["ts"] < CUTOFF).all() and (valid["ts"] >= CUTOFF - pd.Timedelta(days=30)).all()
    assert set(zip(valid["user_id"], valid["basket_id"], strict=True)) == {("a", "2"), ("c", "7")}


def test_first_baskets_breaks_same_time_ties_by_basket_id():
    rows = interactions(("a", "1", "x", "2011-01-01"), ("a", "9", "y", "2011-02-01"), ("a", "8", "z", "2011-02-01"))
    assert first_baskets(rows, pd.Timestamp("2011-01-15", tz="UTC"))["basket_id"].tolist() == ["8"]


def test_a_cutoff_outside_the_data_is_refused():
    with pytest.raises(ShopError, match="split.retail.cutoff 2012-01-01 leaves no rows"):
        split_retail(ROWS, pd.Timestamp("2012-01-01", tz="UTC"), 30)


def queries(n: int = 200) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "query_id": [f"q{i // 4}" for i in range(n)],
            "query": [f"text {i // 4}" for i in range(n)],
            "item_id": [f"i{i}" for i in range(n)],
            "relevance": 1.0,
        }
    )


def test_search_split_never_shares_a_query_text_and_has_the_asked_sizes():
    parts, summary = split_search(queries(), valid_frac=0.1, test_frac=0.2, seed=1)
    texts = {name: set(df["query"]) for name, df in parts.items()}
    assert not texts["train"] & texts["valid"] and not texts["train"] & texts["test"]
    assert not texts["valid"] & texts["test"]
    assert (len(texts["test"]), len(texts["valid"]), len(texts["train"])) == (10, 5, 35)
    assert sum(len(df) for df in parts.values()) == 200
    assert summary["counts"]["test"]["queries"] == 10


def test_search_split_is_deterministic_for_a_seed_and_changes_with_it():
    a, _ = split_search(queries(), 0.1, 0.2, seed=7)
    b, _ = split_search(queries(), 0.1, 0.2, seed=7)
    c, _ = split_search(queries(), 0.1, 0.2, seed=8)
    assert a["test"].equals(b["test"])
    assert set(a["test"]["query_id"]) != set(c["test"]["query_id"])


def test_a_query_keeps_its_split_when_other_queries_are_added():
    small, _ = split_search(queries(200), 0.1, 0.2, seed=7)
    large, _ = split_search(queries(400), 0.1, 0.2, seed=7)
    moved = set(small["train"]["query_id"]) & (set(large["test"]["query_id"]) | set(large["valid"]["query_id"]))
    assert len(moved) <= 10  # ranks are per query: only the rank boundary shifts


def test_split_command_writes_parts_and_summaries(tmp_path):
    canonical = tmp_path / "canonical"
    write_table(ROWS, canonical / "retail" / "interactions.parquet", "interactions")
    write_table(queries(), canonical / "search" / "queries.parquet", "queries")
    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.split",
            "--params",
            str(tmp_path / "params.yaml"),
            "--canonical",
            str(canonical),
            "--out",
            str(tmp_path / "splits"),
            "--report",
            str(tmp_path / "split.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    retail = json.loads((tmp_path / "splits" / "retail" / "split.json").read_text())
    assert retail["cutoff"] == f"{params['split']['retail']['cutoff']}T00:00:00+00:00"
    assert retail["counts"]["test"]["users"] == 1
    assert sorted(p.name for p in (tmp_path / "splits" / "search").iterdir()) == [
        "split.json",
        "test.parquet",
        "test_noisy.parquet",
        "train.parquet",
        "valid.parquet",
    ]
    combined = json.loads((tmp_path / "split.json").read_text())
    assert combined["search"]["counts"]["test"]["queries"] == 10
