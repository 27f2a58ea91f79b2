"""Search generators 1-4 on a real Home Depot slice: schema, provenance, determinism, sizes, no leakage."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from search_slice import search_slice

import pipelines.augment.search_data as search_data
from core.errors import ShopError
from core.io import read_table
from core.params import load_params
from core.paths import repo_root
from core.schema import validate_table
from pipelines.augment import hard_negatives as hn_stage
from pipelines.augment import query_rewrites as qr_stage
from pipelines.augment import synthetic_queries as sq_stage
from pipelines.augment.__main__ import main as augment_main
from pipelines.augment.backends import TextGenerator, make_backend
from pipelines.augment.hard_negatives import generate_hard_negatives
from pipelines.augment.manifest import load_settings
from pipelines.augment.query_rewrites import generate_query_rewrites, keyboard_typo, split_recombine
from pipelines.augment.synthetic_queries import generate_synthetic_queries
from pipelines.fuse import fuse_queries, normalise_query

SEED = 42
PARAMS = load_params()
BACKEND = PARAMS.augment.backend.model_copy(update={"name": "offline", "cache": False})  # the LM: test_doc2query


def sq_settings(**update):
    return load_settings(PARAMS, "synthetic_queries", sq_stage.Settings).model_copy(update=update)


def qr_settings(**update):
    return load_settings(PARAMS, "query_rewrites", qr_stage.Settings).model_copy(update=update)


def hn_settings(**update):
    return load_settings(PARAMS, "hard_negatives", hn_stage.Settings).model_copy(update=update)


@pytest.fixture(scope="module")
def data():
    s = search_slice()
    parts = {k: validate_table(v, "items" if k == "items" else "queries", k) for k, v in s.items()}
    return parts


@pytest.fixture(scope="module")
def backend(data):
    b = make_backend(BACKEND, SEED, train=data["train"], items=data["items"])
    yield b
    b.close()


@pytest.fixture(scope="module")
def synthetic(data, backend):
    sp = sq_settings(max_items=600, queries_per_item=3)
    return generate_synthetic_queries(data["train"], data["items"], sp, backend, SEED)


@pytest.fixture(scope="module")
def rewrites(data, backend):
    rp = qr_settings(rewrites_per_query=2)
    return generate_query_rewrites(data["train"], data["items"], rp, backend, SEED)


@pytest.fixture(scope="module")
def negatives(data):
    return generate_hard_negatives(data["train"], data["items"], hn_settings(), SEED)


def held_out(data) -> set[str]:
    return set(normalise_query(pd.concat([data["valid"], data["test"]])["query"]))


# ---------- generators 1+2: synthetic queries ----------


def test_synthetic_queries_are_canonical_with_provenance_and_sizes(data, synthetic):
    rows, stats = synthetic
    checked = validate_table(rows, "queries", "synthetic_queries")
    assert stats["items"] == 600 and stats["requested"] == 1800
    assert 0 < stats["generated"] <= 1800 and stats["kept"] == len(rows)
    assert rows.groupby("item_id").size().max() <= 3
    assert (checked["parent_id"] == checked["item_id"]).all()
    assert checked["item_id"].isin(set(data["items"]["item_id"])).all()
    assert (rows["rank"] < 10).all() and 0 < stats["kept_fraction"] < 1


def test_synthetic_queries_are_deterministic_for_a_seed(data, backend, synthetic):
    sp = sq_settings(max_items=600, queries_per_item=3)
    again, _ = generate_synthetic_queries(data["train"], data["items"], sp, backend, SEED)
    pd.testing.assert_frame_equal(again, synthetic[0])
    other, _ = generate_synthetic_queries(data["train"], data["items"], sp, backend, SEED + 1)
    assert set(other["query"]) != set(synthetic[0]["query"])


def test_round_trip_filter_removes_most_random_word_queries(data, synthetic):
    vocab = sorted({w for t in data["items"]["title"] for w in t.lower().split() if w.isalpha()})

    class RandomWords(TextGenerator):
        name = "random-words"

        def _generate(self, requests, keys):
            rng = np.random.default_rng(0)
            return [[" ".join(rng.choice(vocab, size=3)) for _ in range(r.n)] for r in requests]

    bad, stats = generate_synthetic_queries(
        data["train"],
        data["items"],
        sq_settings(max_items=600, queries_per_item=3),
        RandomWords("random", {}),
        SEED,
    )
    assert stats["kept_fraction"] < 0.1, stats
    assert synthetic[1]["kept_fraction"] > 3 * stats["kept_fraction"]  # the learned backend's queries survive


def test_few_shot_examples_come_only_from_training_queries(data):
    pool = sq_stage.few_shot_pool(data["train"], data["items"])
    assert pool and {q for _, q in pool} <= set(data["train"]["query"])
    assert not {q for _, q in pool} & set(data["test"]["query"])


# ---------- generator 3: query rewrites ----------


def test_rewrites_inherit_their_parents_judgements(data, rewrites):
    rows, stats = rewrites
    validate_table(rows, "queries", "query_rewrites")
    train = data["train"]
    parents = train.set_index(["query_id", "item_id"])["relevance"]
    keys = list(zip(rows["parent_id"], rows["item_id"], strict=True))
    assert all(k in parents.index for k in keys)
    assert np.allclose(rows["relevance"], parents.loc[keys].to_numpy() * 0.9)
    per_parent = rows.drop_duplicates(["parent_id", "query"]).groupby("parent_id").size()
    assert per_parent.max() <= 2 and stats["parent_queries"] == train["query_id"].nunique()
    assert not set(rows["query"]) & set(train["query"].str.lower())  # a rewrite is a new text
    assert set(stats["by_operation"]) == set(qr_settings().operations)


def test_rewrites_are_deterministic_for_a_seed(data, backend, rewrites):
    again, _ = generate_query_rewrites(data["train"], data["items"], qr_settings(rewrites_per_query=2), backend, SEED)
    pd.testing.assert_frame_equal(again, rewrites[0])


def test_keyboard_typo_and_split_recombine():
    rng = np.random.default_rng(0)
    typos = {keyboard_typo("cordless drill", 0.05, rng) for _ in range(20)}
    assert "cordless drill" not in typos and all(abs(len(t) - 14) <= 3 for t in typos)
    parts = split_recombine(["white", "36", "vanity", "with", "top"], np.random.default_rng(1))
    assert parts and "vanity" in parts.split() and parts != "white 36 vanity with top"
    assert split_recombine(["drill"], rng) is None


# ---------- generator 4: label smoothing + hard negatives ----------


def test_hard_negatives_are_unjudged_bm25_hits_and_labels_are_smoothed(data, negatives):
    rows, stats = negatives
    validate_table(rows, "queries", "hard_negatives")
    train = data["train"]
    judged = set(zip(train["query_id"], train["item_id"], strict=True))
    neg = rows[rows["kind"] == "hard_negative"]
    assert not any(k in judged for k in zip(neg["query_id"], neg["item_id"], strict=True))
    assert (neg["bm25_rank"] >= 3).all() and (neg["relevance"] == 0).all()
    assert neg.groupby("query_id").size().max() <= 3 and len(neg) == stats["hard_negatives"] > 0
    smooth = rows[rows["kind"] == "smoothed"].merge(train, on=["query_id", "item_id"], suffixes=("", "_real"))
    expected = 0.9 * smooth["relevance_real"] + 0.1 * train["relevance"].mean()
    assert len(smooth) == len(train) and np.allclose(smooth["relevance"], expected)


# ---------- leakage ----------


def test_generators_read_only_training_queries_and_the_catalogue(data, tmp_path, monkeypatch):
    paths = {name: tmp_path / f"splits/{name}.parquet" for name in ("train", "valid", "test")}
    paths["items"] = tmp_path / "canonical/items.parquet"
    for name, path in paths.items():
        path.parent.mkdir(exist_ok=True)
        data[name].to_parquet(path)
    opened = []
    real_read = search_data.read_table
    monkeypatch.setattr(search_data, "read_table", lambda p, t: opened.append(str(p)) or real_read(p, t))
    raw = yaml.safe_load((repo_root() / "params.yaml").read_text())
    raw["augment"]["backend"].update(cache=False, name="offline")  # the language-model path: test_doc2query.py
    raw["generators"]["synthetic_queries"]["settings"].update(max_items=200, queries_per_item=2)
    raw["generators"]["statistical_queries"]["settings"].update(max_items=200, queries_per_item=2)
    raw["generators"]["query_rewrites"]["settings"]["operations"] = ["drop", "swap", "typo", "split", "paraphrase"]
    merged = tmp_path / "params.yaml"
    merged.write_text(yaml.safe_dump(raw))
    base = load_params(merged)
    for name in ("synthetic_queries", "statistical_queries", "query_rewrites", "hard_negatives"):
        augment_main(
            params=merged,
            generator=name,
            splits=tmp_path / "splits",
            canonical=tmp_path / "canonical",
            out=tmp_path / name,
        )
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert set(manifest["inputs"]) == {str(paths["train"]), str(paths["items"])}
        assert manifest["generator"] == name and manifest["seed"] == base.seed and manifest["rows"] > 0
        out = read_table(tmp_path / name / "rows.parquet", "queries")
        assert out["is_synthetic"].all() and (out["source"] == name).all() and out["parent_id"].notna().all()
    assert set(opened) == {str(paths["train"]), str(paths["items"])}
    with pytest.raises(ShopError, match="training queries only"):  # the guard every search generator reads through
        search_data.load_search_training(paths["test"], paths["items"])


def test_no_synthetic_query_equals_a_held_out_query_after_the_fusion_guard(data, synthetic, rewrites, negatives):
    fp = PARAMS.fuse
    weights = {g: row.weight for g, row in PARAMS.generators.items()}
    generated = {
        "synthetic_queries": synthetic[0],
        "query_rewrites": rewrites[0],
        "hard_negatives": negatives[0],
    }
    generated = {g: validate_table(df.assign(is_synthetic=True, source=g), "queries", g) for g, df in generated.items()}
    fused, stats = fuse_queries(data["train"], generated, weights, fp, SEED, held_out(data))
    synthetic_rows = fused[fused["is_synthetic"]]
    assert len(synthetic_rows) > 0
    assert not set(normalise_query(synthetic_rows["query"])) & held_out(data)
    # and nothing was derived from test text: every rewrite's parent is a training query
    assert set(rewrites[0]["parent_id"]) <= set(data["train"]["query_id"])
    assert set(negatives[0]["query_id"]) <= set(data["train"]["query_id"])
