"""Fusion: weights, synthetic-share cap, dedup against real rows, the augmentation switch, gate decisions,
leakage."""

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from core.errors import ShopError
from core.io import write_json, write_table
from core.params import load_params
from pipelines.augment.manifest import GeneratorOutput, write_generator
from pipelines.fuse import run_fuse

PARAMS = load_params()
GENERATORS = {  # the registry's row generators per task (item_enrichment changes the items table instead)
    task: [g for g, row in PARAMS.generators.items() if row.task == task and row.table != "items"]
    for task in ("retail", "search")
}

T0 = pd.Timestamp("2011-03-01 10:00", tz="UTC")
VALID_CUTOFF = pd.Timestamp("2011-10-02", tz="UTC")


def _inter(user, item, ts, basket, **extra) -> dict:
    return {
        "user_id": user,
        "item_id": item,
        "ts": ts,
        "event": "purchase",
        "quantity": 1,
        "value": 1.0,
        "basket_id": basket,
        **extra,
    }


def _day(n: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=n)


REAL = pd.DataFrame(
    [
        _inter("u1", "A", _day(0), "b1"),
        _inter("u1", "B", _day(0), "b1"),
        _inter("u1", "C", _day(5), "b2"),
        _inter("u2", "A", _day(1), "b3"),
        _inter("u2", "D", _day(9), "b4"),
        _inter("u3", "E", _day(2), "b5"),
        _inter("u1", "Z", VALID_CUTOFF + pd.Timedelta(days=3), "b9"),  # u1's validation target (inside train)
    ]
).assign(source="online_retail")

SYNTHETIC_ROWS = {
    "cf_interactions": pd.DataFrame(
        [
            _inter("u3", "A", _day(2), "cf:b5", parent_id="b5"),
            _inter("u3", "B", _day(2), "cf:b5", parent_id="b5"),
            _inter("u1", "A", _day(0), "cf:b1", parent_id="b1"),  # same (user, item, ts) as a real row: duplicate
        ]
    ),
    "sequence_aug": pd.DataFrame(
        [
            _inter("u1", "A", _day(0), "s:0:b1", parent_id="b1", sequence_id="u1#s:0"),  # a crop: new view
            _inter("u2", "A", _day(1), "s:0:b3", parent_id="b3", sequence_id="u2#s:0"),  # copies u2's whole history
            _inter("u2", "D", _day(9), "s:0:b4", parent_id="b4", sequence_id="u2#s:0"),
        ]
    ),
    "synthetic_users": pd.DataFrame(
        [
            _inter("syn1", "C", _day(3), "syn1:b0"),
            _inter("syn1", "D", _day(3), "syn1:b0"),
            _inter("syn2", "E", _day(4), "syn2:b0"),  # same item set as real u3: a copy, removed
        ]
    ),
}
REAL_QUERIES = pd.DataFrame(
    {
        "query_id": ["q1", "q1", "q2"],
        "query": ["red drill", "red drill", "oak door"],
        "item_id": ["P1", "P2", "P3"],
        "relevance": [1.0, 0.5, 1.0],
        "source": "homedepot",
    }
)
HELD_OUT = pd.DataFrame({"query_id": ["q9"], "query": ["Brass Hinge"], "item_id": ["P9"], "relevance": [1.0]})
SYNTHETIC_QUERIES = {
    "synthetic_queries": pd.DataFrame(
        {
            "query_id": ["s1", "s2", "s3"],
            "query": ["cordless drill", "brass  hinge", "oak door"],
            "item_id": ["P1", "P9", "P3"],
            "relevance": [1.0, 1.0, 1.0],
            "parent_id": ["P1", "P9", "P3"],
        }
    ),
    "statistical_queries": pd.DataFrame(  # the same pair as synthetic_queries: the first in registry order wins
        {
            "query_id": ["s1"],
            "query": ["cordless drill"],
            "item_id": ["P1"],
            "relevance": [1.0],
            "parent_id": ["P1"],
        }
    ),
    "query_rewrites": pd.DataFrame(
        {
            "query_id": ["r1"],
            "query": ["drill red"],
            "item_id": ["P1"],
            "relevance": [0.9],
            "parent_id": ["q1"],
        }
    ),
    "hard_negatives": pd.DataFrame(
        {
            "query_id": ["q1", "q1"],
            "query": ["red drill", "red drill"],
            "item_id": ["P2", "P7"],
            "relevance": [0.55, 0.0],
            "parent_id": ["q1", "q1"],
        }
    ),
}


ITEMS = {
    "retail": pd.DataFrame(
        {
            "item_id": list("ABCDEZ"),
            "title": list("abcdez"),
            "price": 1.0,
            "description": "",
            "category": "",
            "source": "online_retail",
        }
    ),
    "search": pd.DataFrame(
        {
            "item_id": ["P1", "P2", "P3", "P7", "P9"],
            "title": "t",
            "price": 1.0,
            "description": "",
            "category": "",
            "source": "hd",
        }
    ),
}


def write_generator_folder(root, name: str, frame: pd.DataFrame, table: str) -> None:
    write_generator(
        GeneratorOutput(frame), root / f"data/synthetic/{name}", generator=name, table=table, settings={}, seed=0
    )


@pytest.fixture()
def root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as dvc passes them: the manifests show them as given
    for task, items in ITEMS.items():
        write_table(items, tmp_path / f"data/canonical/{task}/items.parquet", "items")
    write_generator_folder(tmp_path, "item_enrichment", ITEMS["retail"].assign(category="c", parent_id="p"), "items")
    write_table(REAL, tmp_path / "data/splits/retail/train.parquet", "interactions")
    write_table(REAL_QUERIES, tmp_path / "data/splits/search/train.parquet", "queries")
    for split in ("valid", "test"):
        write_table(HELD_OUT, tmp_path / f"data/splits/search/{split}.parquet", "queries")
    for name, frame in {**SYNTHETIC_ROWS, **SYNTHETIC_QUERIES}.items():
        table = "queries" if name in GENERATORS["search"] else "interactions"
        write_generator_folder(tmp_path, name, frame, table)
    gate(tmp_path, {})
    return tmp_path


def gate(root, decisions: dict[str, str]) -> None:
    for g in PARAMS.generators:  # one file per generator, as the gate@<generator> stages write them
        write_json({"decision": decisions.get(g, "pass"), "checks": {}}, root / f"metrics/gate/{g}.json")


ALL_ON = {"sequence_aug": {"weight": 0.5}}  # params.yaml leaves sequence_aug off; these tests fuse every generator


def fuse(root, **overrides) -> dict[str, dict[str, pd.DataFrame]]:
    params = load_params(overrides={"generators": ALL_ON, **overrides})
    folders = [Path(p) for p in ("data/splits", "data/canonical", "data/synthetic", "metrics/gate", "data/fused")]
    run_fuse(params, *folders)
    out = {}
    for task in ("retail", "search"):
        manifest = json.loads((root / f"data/fused/{task}/summary.json").read_text())
        out[task] = {
            name: pd.read_parquet(root / f"data/fused/{task}/{name}/train.parquet") for name in manifest["variants"]
        }
        for name, entry in manifest["variants"].items():  # each variant folder: its items table and manifest
            variant = json.loads((root / f"data/fused/{task}/{name}/manifest.json").read_text())
            assert variant["rows"] == entry["rows"] and variant["items"] == entry["items"]
            written = root / f"data/fused/{task}/{name}/items.parquet"
            if "expansion" in variant:  # document expansion: the named items plus `search_text`
                expanded, base = pd.read_parquet(written), pd.read_parquet(entry["items"])
                pd.testing.assert_frame_equal(expanded.drop(columns="search_text"), base)
                assert all(
                    text.startswith(title) for text, title in zip(expanded["search_text"], base["title"], strict=True)
                )
                assert variant["expansion"]["items_expanded"] == (expanded["search_text"] != base["title"]).sum()
            else:
                assert written.read_bytes() == Path(entry["items"]).read_bytes()
        out[task]["_manifest"] = manifest
    return out


def test_aug_adds_weighted_synthetic_rows_with_provenance(root):
    retail = fuse(root)["retail"]
    aug, noaug = retail["aug"], retail["noaug"]
    assert len(noaug) == len(REAL) and not noaug["is_synthetic"].any() and (noaug["weight"] == 1.0).all()
    assert aug["is_synthetic"].notna().all() and aug["source"].notna().all()
    synthetic = aug[aug["is_synthetic"]]
    assert set(synthetic["source"]) == set(GENERATORS["retail"])
    weights = {g: row.weight for g, row in load_params(overrides={"generators": ALL_ON}).generators.items()}
    assert all(w == weights[s] for s, w in zip(synthetic["source"], synthetic["weight"], strict=True))
    assert (aug.loc[~aug["is_synthetic"], "weight"] == 1.0).all()
    assert synthetic.loc[synthetic["source"] != "synthetic_users", "parent_id"].notna().all()


def test_duplicates_of_real_rows_and_copied_histories_are_removed(root):
    retail = fuse(root)["retail"]
    aug, stats = retail["aug"], retail["_manifest"]["variants"]["aug"]["generators"]
    cf = aug[aug["source"] == "cf_interactions"]
    assert sorted(cf["item_id"]) == ["A", "B"] and stats["cf_interactions"]["duplicates"] == 1
    views = aug[aug["source"] == "sequence_aug"]
    assert set(views["sequence_id"]) == {"u1#s:0"} and stats["sequence_aug"]["duplicates"] == 2
    users = aug[aug["source"] == "synthetic_users"]
    assert set(users["user_id"]) == {"syn1"}  # syn2's history equals real u3's: 0 copies survive
    real_sets = {frozenset(g) for _, g in REAL.groupby("user_id")["item_id"]}
    assert not any(frozenset(g) in real_sets for _, g in users.groupby("user_id")["item_id"])


def test_cap_bounds_the_synthetic_share_and_is_seeded(root):
    capped = fuse(root, fuse={"max_synthetic_share": 0.2})["retail"]["aug"]
    assert capped["is_synthetic"].mean() <= 0.2 and capped["is_synthetic"].sum() > 0
    again = fuse(root, fuse={"max_synthetic_share": 0.2})["retail"]["aug"]
    pd.testing.assert_frame_equal(capped, again)
    assert not fuse(root, fuse={"max_synthetic_share": 0.0})["retail"]["aug"]["is_synthetic"].any()


def test_switch_off_yields_the_no_augmentation_twin(root):
    out = fuse(root, augment={"enabled": False})
    for task in ("retail", "search"):
        variants = {k: v for k, v in out[task].items() if not k.startswith("_")}
        assert set(variants) == {"noaug", "aug"}
        pd.testing.assert_frame_equal(variants["aug"], variants["noaug"])
    assert out["retail"]["_manifest"]["variants"]["aug"]["items"] == "data/canonical/retail/items.parquet"


def test_ablation_variants_leave_out_exactly_one_generator(root):
    out = fuse(root)
    retail, search = out["retail"], out["search"]
    for generator in GENERATORS["retail"]:
        minus = retail[f"minus_{generator}"]
        assert generator not in set(minus["source"])
        assert set(minus["source"]) == set(retail["aug"]["source"]) - {generator}
    items = retail["_manifest"]["variants"]
    assert items["minus_item_enrichment"]["items"] == "data/canonical/retail/items.parquet"
    assert items["noaug"]["items"] == "data/canonical/retail/items.parquet"  # the twin: no synthetic item text
    assert items["aug"]["items"] == "data/synthetic/item_enrichment/rows.parquet"
    only = search["synthetic_only"]
    assert only["is_synthetic"].all() and not only["relabels_real"].any()  # smoothed real pairs are not in it
    assert {f"minus_{g}" for g in GENERATORS["search"]} <= set(search)


def test_weight_zero_leaves_a_generator_out(root):
    out = fuse(root, generators={"sequence_aug": {"weight": 0.0}})["retail"]
    assert "sequence_aug" not in set(out["aug"]["source"]) and "minus_sequence_aug" not in out


def test_search_leakage_guard_dedup_and_label_smoothing(root):
    search = fuse(root)["search"]
    aug, stats = search["aug"], search["_manifest"]["variants"]["aug"]["generators"]
    assert "brass hinge" not in set(aug["query"].str.lower().str.split().str.join(" "))  # a held-out query
    assert stats["synthetic_queries"]["leaked"] == 1 and stats["synthetic_queries"]["duplicates"] == 1
    pair = aug[(aug["query"] == "red drill") & (aug["item_id"] == "P2")]
    assert len(pair) == 1 and pair["source"].iloc[0] == "hard_negatives" and pair["relevance"].iloc[0] == 0.55
    assert pair["relabels_real"].iloc[0] and search["_manifest"]["variants"]["aug"]["relabelled_real_rows"] == 1
    untouched = search["minus_hard_negatives"]
    pair = untouched[(untouched["query"] == "red drill") & (untouched["item_id"] == "P2")]
    assert len(pair) == 1 and not pair["is_synthetic"].iloc[0] and pair["relevance"].iloc[0] == 0.5
    items = {v: pd.read_parquet(root / f"data/fused/search/{v}/items.parquet") for v in search["_manifest"]["variants"]}
    expanded = {v for v, table in items.items() if "search_text" in table.columns}
    assert {"aug", "minus_hard_negatives"} <= expanded  # expansion: by the synthetic_queries rows a variant holds
    assert not expanded & {"noaug", "minus_synthetic_queries"}


def test_gate_drop_excludes_with_a_warning_and_fail_stops(root, caplog):
    gate(root, {"sequence_aug": "drop"})
    with caplog.at_level(logging.WARNING):
        retail = fuse(root)["retail"]
    assert "sequence_aug" not in set(retail["aug"]["source"]) and "gate dropped generator sequence_aug" in caplog.text
    gate(root, {"cf_interactions": "fail"})
    with pytest.raises(ShopError, match="cf_interactions"):
        fuse(root)
    shutil.rmtree(root / "metrics/gate")
    with pytest.raises(ShopError, match="metrics/gate"):
        fuse(root)
    assert "aug" in fuse(root, fuse={"use_gate": False})["retail"]


def test_synthetic_rows_after_the_validation_cutoff_are_refused(root):
    late = SYNTHETIC_ROWS["cf_interactions"].assign(ts=VALID_CUTOFF + pd.Timedelta(hours=1))
    write_generator_folder(root, "cf_interactions", late, "interactions")
    with pytest.raises(ShopError, match="cf_interactions rows: 3 row"):
        fuse(root)


def test_a_training_switch_trains_on_the_rows_and_items_of_its_data_variant(root):
    switch = {
        "retail-noaug_lr": {"task": "retail", "variant": "noaug_lr", "data": "noaug", "train": {"lr": 0.01}},
        "search-aug_fgm05": {"task": "search", "variant": "aug_fgm05", "data": "aug", "train": {"fgm_epsilon": 0.05}},
    }
    out = fuse(root, experiments={"models": switch})
    pd.testing.assert_frame_equal(out["search"]["aug_fgm05"], out["search"]["aug"])
    pd.testing.assert_frame_equal(out["retail"]["noaug_lr"], out["retail"]["noaug"])
    for task, variant, data in (("search", "aug_fgm05", "aug"), ("retail", "noaug_lr", "noaug")):
        folder = root / f"data/fused/{task}"
        assert (folder / variant / "items.parquet").read_bytes() == (folder / data / "items.parquet").read_bytes()
        manifest = json.loads((folder / variant / "manifest.json").read_text())
        assert manifest["rows_of"] == data and manifest["variant"] == variant
    assert json.loads((root / "data/fused/search/aug_fgm05/manifest.json").read_text())["train_overrides"] == {
        "fgm_epsilon": 0.05
    }
