"""The gate catches shifted numbers, corrupted text, copied rows and copied histories; clean data passes."""

import json

import numpy as np
import pandas as pd
import pytest
from monitoring_fixtures import make_items, make_purchases, make_queries

from core.encoder import TextEncoder
from core.errors import ShopError
from core.io import write_table
from monitoring.checks import EncoderCache, vocabulary
from monitoring.gate import GateInputs, gate_generator, run_gate, user_profiles


@pytest.fixture(scope="module")
def encoder():
    return EncoderCache(lambda: TextEncoder("minilm", 32, 256))


def search_inputs(real: pd.DataFrame) -> GateInputs:
    return GateInputs(queries=real, vocab={"query": vocabulary(real["query"])})


def test_clean_synthetic_queries_pass_with_real_evidently_and_embeddings(params, encoder):
    real = make_queries(400, seed=1)
    entry, snapshot = gate_generator(
        "query_rewrites",
        make_queries(300, seed=2, source="query_rewrites"),
        search_inputs(real),
        params,
        encoder,
    )
    assert entry["decision"] == "pass", entry["checks"]
    assert entry["checks"]["embedding_drift"]["value"] < params.gate.embedding_drop
    page = snapshot.get_html_str(as_iframe=False)
    assert "<html" in page.lower()
    assert "Query length in words" in page and "Query length in characters" in page  # the length histograms
    quality = entry["text_quality"]  # reported beside the checks, not one of them
    assert set(quality) >= {"synthetic", "real", "distinct_n_queries", "self_bleu_sample", "notes"}
    assert 0 < quality["synthetic"]["self_bleu"] < 1 and 0 < quality["real"]["distinct_2"] <= 1


def test_shifted_numeric_column_is_dropped_or_failed(params):
    real = make_queries(400, seed=1)
    shifted = make_queries(300, seed=2, relevance_shift=-0.45, source="query_rewrites")
    entry, _ = gate_generator("query_rewrites", shifted, search_inputs(real), params, None)
    assert entry["checks"]["column_drift"]["column"] == "relevance"
    assert entry["checks"]["column_drift"]["status"] in ("drop", "fail")
    assert entry["decision"] in ("drop", "fail")


def test_corrupted_text_column_fails(params, encoder):
    real = make_queries(400, seed=1)
    rng = np.random.default_rng(3)
    corrupted = make_queries(300, seed=2, source="synthetic_queries")
    corrupted["query"] = ["".join(rng.choice(list("qxzjkv#%"), size=12)) + " zzkq" for _ in range(len(corrupted))]
    entry, _ = gate_generator("synthetic_queries", corrupted, search_inputs(real), params, encoder)
    assert entry["checks"]["oov_share"]["status"] == "fail"
    assert entry["checks"]["embedding_drift"]["value"] > 0.9
    assert entry["decision"] == "fail"


def test_rows_copied_from_real_rows_fail(params):
    real = make_queries(400, seed=1)
    copied = real.sample(200, random_state=0).assign(is_synthetic=True, source="statistical_queries")
    entry, _ = gate_generator("statistical_queries", copied, search_inputs(real), params, None)
    assert entry["checks"]["copied_rows"]["value"] == 1.0
    assert entry["checks"]["copied_rows"]["status"] == "fail"
    assert entry["decision"] == "fail"


def test_copies_are_reported_not_decisive_where_the_registry_says_so(params):
    """synthetic_queries' gate has copies: false (the fine-tuned LM re-generates ~1% of real pairs)."""
    real = make_queries(400, seed=1)
    copied = real.sample(200, random_state=0).assign(is_synthetic=True, source="synthetic_queries")
    entry, _ = gate_generator("synthetic_queries", copied, search_inputs(real), params, None)
    assert entry["checks"]["copied_rows"]["value"] == 1.0
    assert entry["checks"]["copied_rows"]["status"] != "fail"


def retail_inputs(real: pd.DataFrame) -> GateInputs:
    items = make_items()
    return GateInputs(
        interactions=real, items=items, users=user_profiles(real), vocab={"title": vocabulary(items["title"])}
    )


def test_synthetic_user_with_a_real_users_history_fails_privacy(params):
    real = make_purchases(60, seed=1)
    synthetic = make_purchases(30, seed=2, prefix="synthetic_users:")
    clone = real[real["user_id"] == real["user_id"].iloc[0]].assign(user_id="synthetic_users:clone")
    synthetic = pd.concat([synthetic, clone], ignore_index=True)
    profiles = user_profiles(synthetic).reset_index(drop=True)
    entry, _ = gate_generator("synthetic_users", synthetic, retail_inputs(real), params, None, profiles)
    assert "text_quality" not in entry  # query generators only
    assert entry["checks"]["identical_histories"]["value"] >= 1 / 31
    assert entry["checks"]["identical_histories"]["status"] == "fail"
    assert entry["decision"] == "fail"


def test_clean_synthetic_users_pass_privacy(params):
    real = make_purchases(60, seed=1)
    synthetic = make_purchases(40, seed=5, prefix="synthetic_users:")
    # drop users whose item set happens to equal a real one (10 items only): the generator redraws those too
    real_sets = {frozenset(g["item_id"]) for _, g in real.groupby("user_id")}
    keep = [u for u, g in synthetic.groupby("user_id") if frozenset(g["item_id"]) not in real_sets]
    synthetic = synthetic[synthetic["user_id"].isin(keep)]
    entry, _ = gate_generator(
        "synthetic_users",
        synthetic,
        retail_inputs(real),
        params,
        None,
        user_profiles(synthetic).reset_index(drop=True),
    )
    for name in ("identical_histories", "identical_profiles", "copied_rows"):
        assert entry["checks"][name]["status"] == "pass", (name, entry["checks"][name])
    assert entry["decision"] != "fail"


def test_empty_and_missing_columns_give_one_line_errors(params):
    real = make_queries(50, seed=1)
    with pytest.raises(ShopError, match="no rows"):
        gate_generator("query_rewrites", real.iloc[:0], search_inputs(real), params, None)
    with pytest.raises(ShopError, match=r"missing column\(s\) \['relevance'\]"):
        gate_generator("query_rewrites", real.drop(columns=["relevance"]), search_inputs(real), params, None)
    with pytest.raises(ShopError, match="unknown generator"):
        gate_generator("mixup", real, search_inputs(real), params, None)


def test_stage_writes_text_quality_for_a_query_generator_into_json_and_html(params, tmp_path):
    real = make_queries(200, seed=1)
    synthetic = make_queries(150, seed=2, source="synthetic_queries")
    items = pd.DataFrame({"item_id": sorted(set(real["item_id"]) | set(synthetic["item_id"]))})
    items = items.assign(
        title=[f"Item {i} Solar Lamp" for i in range(len(items))], description="", category="", price=1.0
    ).assign(is_synthetic=False, source="homedepot", parent_id=pd.NA)
    titles = items.set_index("item_id")["title"]
    synthetic.loc[:29, "query"] = synthetic["item_id"].iloc[:30].map(titles).str.upper()  # 30 verbatim titles
    write_table(real, tmp_path / "splits/search/train.parquet", "queries")
    write_table(items, tmp_path / "canonical/search/items.parquet", "items")
    write_table(synthetic, tmp_path / "synthetic/rows.parquet", "queries")
    manifest = {"generated": 200, "kept": 150, "kept_fraction": 0.75}
    (tmp_path / "synthetic/manifest.json").write_text(json.dumps(manifest))
    out, report = tmp_path / "gate.json", tmp_path / "gate.html"
    run_gate(
        params,
        "synthetic_queries",
        tmp_path / "synthetic",
        tmp_path / "splits",
        tmp_path / "canonical",
        out,
        report,
        embeddings=False,
    )
    quality = json.loads(out.read_text())["text_quality"]
    assert quality["synthetic"]["title_copy_share"] == pytest.approx(30 / 150)
    assert quality["real"]["title_copy_share"] == 0
    assert quality["synthetic"]["round_trip_pass_rate"] == 0.75
    assert quality["notes"] == []
    page = report.read_text()
    assert "Synthetic text quality" in page and "round-trip pass rate" in page
