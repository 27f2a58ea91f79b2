"""Bring your own data: the canonical adapter's contract (docs/data.md#bring-your-own-data) on tiny tables."""

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_ingest import SEARCH_CSV, run_ingest

from core.errors import ShopError
from core.io import read_table
from core.paths import data_file, repo_root
from features import compute
from pipelines.adapters import load_source


def items() -> pd.DataFrame:
    """Ids written as integers, as a shop database exports them."""
    return pd.DataFrame(
        {"item_id": [906, 907], "title": ["Bananas", "Mug"], "description": "", "category": "", "price": [2.0, 5.0]}
    )


def interactions(**columns) -> pd.DataFrame:
    """Ids as floats (a guest is NaN), naive timestamps, a weighed quantity and non-purchase events."""
    return pd.DataFrame(
        {
            "user_id": [17.0, 17.0, 18.0, None, 17.0],
            "item_id": ["906.0", "907.0", "906.0", "907.0", "907.0"],
            "ts": pd.to_datetime(
                ["2024-01-01 10:00", "2024-01-01 10:00", "2024-01-02 09:00", "2024-01-03 09:00", "2024-01-04 09:00"]
            ),
            "event": ["purchase", "Purchase ", "purchase", "purchase", "view"],
            "quantity": [0.35, 1.0, 2.0, 1.0, 1.0],
            "value": [0.7, 5.0, 4.0, 5.0, 0.0],
            "basket_id": ["o1", "o1", "o2", "o3", "s1"],
        }
        | columns
    )


def write_shop(folder: Path, inter: pd.DataFrame, users: pd.DataFrame | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    items().to_parquet(folder / "items.parquet")
    inter.to_parquet(folder / "interactions.parquet")
    if users is not None:
        users.to_parquet(folder / "users.parquet")
    return folder


def test_floats_fractions_naive_times_and_views_ingest_by_the_documented_rules(tmp_path, caplog):
    shop = write_shop(tmp_path, interactions(), users=pd.DataFrame({"user_id": [17], "segment": ["gold"]}))
    report: dict = {}
    with caplog.at_level(logging.WARNING):
        tables = load_source("canonical", shop, report=report)
    inter, users = tables["interactions"], tables["users"]
    assert inter["user_id"].tolist() == ["17", "17", "18", pd.NA]  # 17.0 -> "17", the guest stays null
    assert inter["item_id"].tolist() == ["906", "907", "906", "907"]
    assert set(tables["items"]["item_id"]) == {"906", "907"}
    assert inter["quantity"].tolist() == [0.35, 1.0, 2.0, 1.0]  # weighed goods keep their fraction
    assert (inter["event"] == "purchase").all() and report["non_purchase_rows_dropped"] == {"view": 1}
    assert str(inter["ts"].iloc[0]) == "2024-01-01 10:00:00+00:00"  # naive times are read as UTC
    assert users.set_index("user_id")["country"].to_dict() == {"17": "Unspecified", "18": "Unspecified"}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    assert "column 'ts' has no time zone" in warnings[0]
    assert "users.parquet: 1 of 2 interaction users (50.0%) are missing" in warnings[1]


def test_timezone_aware_times_are_converted_to_utc_without_a_warning(tmp_path, caplog):
    london = pd.to_datetime(["2024-07-01 10:00"] * 5).tz_localize("Europe/London")
    with caplog.at_level(logging.WARNING):
        tables = load_source("canonical", write_shop(tmp_path, interactions(ts=london)))
    assert str(tables["interactions"]["ts"].iloc[0]) == "2024-07-01 09:00:00+00:00"
    assert not caplog.records


def _corrupt(folder: Path) -> None:
    path = folder / "interactions.parquet"
    path.write_bytes(path.read_bytes()[:-40])


BAD = {
    "unknown event": (
        lambda f: write_shop(f, interactions(event=["purchase"] * 4 + ["refund"])),
        "unknown value 'refund'",
    ),
    "only views": (lambda f: write_shop(f, interactions(event=["view"] * 5)), "no purchase rows"),
    "zero quantity": (
        lambda f: write_shop(f, interactions(quantity=[0.0] + [1.0] * 4)),
        "'quantity' must be a positive",
    ),
    "negative value": (
        lambda f: write_shop(f, interactions(value=[-1.0] + [1.0] * 4)),
        "'value' must be a non-negative",
    ),
    "text value": (lambda f: write_shop(f, interactions(value=["a"] * 5)), "column 'value' cannot be read as float64"),
    "number ts": (lambda f: write_shop(f, interactions(ts=[1.7e9] * 5)), "column 'ts' must hold timestamps"),
    "missing column": (lambda f: write_shop(f, interactions().drop(columns="ts")), "missing column(s) ['ts']"),
    "duplicate user": (
        lambda f: write_shop(f, interactions(), users=pd.DataFrame({"user_id": ["17", "17.0"]})),
        "user_id '17' appears twice",
    ),
    "corrupt file": (lambda f: (write_shop(f, interactions()), _corrupt(f)), "unreadable Parquet file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_contract_violation_is_one_line_naming_the_file(tmp_path, case):
    make, expected = BAD[case]
    make(tmp_path)
    with pytest.raises(ShopError) as caught:
        load_source("canonical", tmp_path)
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert message.startswith(str(tmp_path / ("users" if case == "duplicate user" else "interactions")))


def canonical_project(tmp_path: Path, inter: pd.DataFrame) -> Path:
    """params.yaml with the canonical retail adapter on raw/retail/shop/, Home Depot search as in test_ingest."""
    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    unset = {"sha256": None, "url": None, "url_sha256": None, "files": None, "fallback": None}
    params["data"]["retail"] = {"adapter": "canonical", "file": "shop", **unset}
    params["data"]["search"] = {"adapter": "homedepot", "file": "train.csv", **unset}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_shop(tmp_path / "raw" / "retail" / "shop", inter)
    (tmp_path / "raw" / "search").mkdir(parents=True)
    (tmp_path / "raw" / "search" / "train.csv").write_text(SEARCH_CSV)
    return tmp_path


def test_ingest_of_a_shop_without_country_feeds_the_user_features(tmp_path):
    project = canonical_project(tmp_path, interactions())
    code, errors = run_ingest(project)
    assert code == 0, errors
    retail = project / "canonical" / "retail"
    inter = read_table(retail / "interactions.parquet", "interactions")
    users = read_table(retail / "users.parquet", "users")
    assert sorted(users["user_id"]) == ["17", "18"] and (users["country"] == "Unspecified").all()
    report = json.loads((project / "ingest.json").read_text())["retail"]
    assert report["cleaning"]["non_purchase_rows_dropped"] == {"view": 1} and report["output"]["interactions_rows"] == 4
    attrs = compute.item_attributes(read_table(retail / "items.parquet", "items"), None)
    feats = compute.user_features(inter, attrs, users, pd.Timestamp("2024-02-01", tz="UTC"))
    assert set(feats["country"]) == {"Unspecified"}


def test_ingest_of_an_unknown_event_gives_one_error_line_and_no_output(tmp_path):
    project = canonical_project(tmp_path, interactions(event=["purchase"] * 4 + ["refund"]))
    code, errors = run_ingest(project)
    assert code == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: {project / 'raw' / 'retail' / 'shop' / 'interactions.parquet'}: ")
    assert not (project / "canonical").exists() and not (project / "ingest.json").exists()


def test_a_missing_data_file_names_shop_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("SHOP_DATA_DIR", raising=False)
    with pytest.raises(ShopError, match="SHOP_DATA_DIR is not set"):
        data_file("homedepot/nothing.csv.gz")
    monkeypatch.setenv("SHOP_DATA_DIR", str(tmp_path))
    with pytest.raises(ShopError, match=f"nothing.csv.gz: file not found \\(SHOP_DATA_DIR={tmp_path}\\)"):
        data_file("homedepot/nothing.csv.gz")
