"""The `evaluate` command: help, one-line refusals, a canonical folder end to end, and real data in bounds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from core.errors import ShopError
from core.params import load_params
from training.baselines import PopularityRecommender
from training.lexical import BM25Retriever
from training.score import evaluate_dataset, load_model_for_eval

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SHOP_DATA_DIR", ROOT.parent / "shared" / "data"))
PARAMS = load_params(overrides={"evaluation": {"bootstrap_samples": 20}})


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training.score", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_help_lists_the_options():
    done = cli("--help")
    assert done.returncode == 0
    for option in ("--task", "--model", "--data", "--adapter", "--out"):
        assert option in done.stdout


@pytest.mark.parametrize(
    ("adapter", "data", "message"),
    [
        ("nosuch", "params.yaml", "--adapter 'nosuch': unknown"),
        ("homedepot", "missing/file.csv.gz", "file not found"),
    ],
)
def test_bad_input_is_one_line_error_with_exit_2(tmp_path, adapter, data, message):
    done = cli(
        "--task", "search", "--model", "bm25", "--data", data, "--adapter", adapter, "--out", str(tmp_path / "m.json")
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.json").exists()


def test_a_malformed_cutoff_is_named_in_one_line(tmp_path):
    out = tmp_path / "m.json"
    args = ("--task", "retail", "--model", "popularity", "--data", "missing.csv", "--adapter", "online_retail")
    done = cli(*args, "--cutoff", "2011-13-45", "--out", str(out))
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --cutoff: '2011-13-45' is not a date (expected YYYY-MM-DD)"
    assert not out.exists()


def test_model_specs_map_to_baselines_and_unknown_specs_are_refused():
    assert isinstance(load_model_for_eval("popularity", "retail", PARAMS), PopularityRecommender)
    assert isinstance(load_model_for_eval("bm25", "search", PARAMS), BM25Retriever)
    with pytest.raises(ShopError, match="not a retail baseline"):
        load_model_for_eval("bm25", "retail", PARAMS)


def test_canonical_folder_is_split_and_scored_like_the_pipeline(tmp_path):
    ts = pd.Timestamp("2011-10-15", tz="UTC")
    later = pd.Timestamp("2011-11-05", tz="UTC")
    inter = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u1", "u2"],
            "item_id": ["a", "b", "a", "c", "a", "b"],
            "ts": [ts, ts, ts, ts, later, later],
            "event": "purchase",
            "quantity": 1,
            "value": 1.0,
            "basket_id": ["b1", "b1", "b2", "b2", "t1", "t2"],
        }
    )
    items = pd.DataFrame(
        {"item_id": list("abc"), "title": ["x", "y", "z"], "description": "", "category": "", "price": 1.0}
    )
    inter.to_parquet(tmp_path / "interactions.parquet")
    items.to_parquet(tmp_path / "items.parquet")
    result = evaluate_dataset("retail", "popularity", tmp_path, "canonical", PARAMS)
    assert result["users"] == 2
    assert result["metrics"]["hr@10"]["value"] == 1.0  # a 3-item catalogue: everything is in the top 10
    json.dumps(result)


@pytest.mark.integration
def test_real_online_retail_slice_through_the_adapter_is_in_sane_bounds(tmp_path):
    raw = pd.read_csv(DATA / "online_retail" / "online_retail.csv.gz", dtype=str)
    customers = sorted(raw["CustomerID"].dropna().unique())[::6]  # every 6th customer, all their rows
    path = tmp_path / "online_retail_slice.csv.gz"
    raw[raw["CustomerID"].isin(customers)].to_csv(path, index=False)
    result = evaluate_dataset("retail", "popularity", path, "online_retail", PARAMS)
    metrics = result["metrics"]
    assert 100 < result["users"] < 400
    assert 0.3 < metrics["hr@10"]["value"] < 0.7  # full test split, EVALUATION.md: 0.505
    assert 0.04 < metrics["ndcg@10"]["value"] < 0.16  # EVALUATION.md: 0.099
    assert metrics["ndcg@10"]["ci_low"] <= metrics["ndcg@10"]["value"] <= metrics["ndcg@10"]["ci_high"]
    assert metrics["segments"]["cold_users"]["hr@10"]["n"] > 20


@pytest.mark.integration
def test_real_home_depot_bm25_on_a_query_slice_is_in_sane_bounds(tmp_path):
    from pipelines.adapters import load_source

    tables = load_source("homedepot", DATA / "homedepot" / "search_relevance.csv.gz")
    queries = tables["queries"]
    kept = sorted(queries["query_id"].unique())[:150]
    queries = queries[queries["query_id"].isin(kept)]
    items = tables["items"]
    items = pd.concat([items[items["item_id"].isin(queries["item_id"])], items.head(3000)]).drop_duplicates("item_id")
    (tmp_path / "slice").mkdir()
    queries.to_parquet(tmp_path / "slice" / "queries.parquet")
    items.to_parquet(tmp_path / "slice" / "items.parquet")
    result = evaluate_dataset("search", "bm25", tmp_path / "slice", "canonical", PARAMS, split="all")
    metrics = result["metrics"]
    assert result["queries"] == 150
    assert 0.2 < metrics["ndcg@10"]["value"] < 0.8  # small catalogue: easier than EVALUATION.md's 0.341
    assert 0.5 < metrics["recall@100"]["value"] <= 1.0
    assert 0.85 < metrics["rerank_ndcg@10"]["value"] <= 1.0
