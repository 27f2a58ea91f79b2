"""Recommendation generators 5-8 and the leakage guard, on a real slice of Online Retail."""

import numpy as np
import pandas as pd
import pytest
from rec_slice import CUTOFF, VALID_CUTOFF, retail_slice

from core.errors import ShopError
from core.io import read_table
from core.params import load_params
from pipelines.augment import cf_interactions, item_enrichment, sequence_aug, synthetic_users
from pipelines.augment.manifest import GeneratorOutput, check_generators, load_settings, write_generator
from pipelines.augment.retail_history import encode_titles, load_history, safe_history, valid_cutoff

PARAMS = load_params()
CF = load_settings(PARAMS, "cf_interactions", cf_interactions.Settings)
SEQ = load_settings(PARAMS, "sequence_aug", sequence_aug.Settings)
USERS = load_settings(PARAMS, "synthetic_users", synthetic_users.Settings)
ENRICH = load_settings(PARAMS, "item_enrichment", item_enrichment.Settings)


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    return retail_slice()


@pytest.fixture(scope="module")
def history(data) -> pd.DataFrame:
    return safe_history(data["train"], VALID_CUTOFF)


@pytest.fixture(scope="module")
def neighbours(data, history) -> dict[str, list[str]]:
    ids = np.sort(history["item_id"].unique())
    guests = safe_history(data["train"], VALID_CUTOFF, guests=True)
    return sequence_aug.similar_items_by_copurchase(guests, ids, SEQ.neighbours)


def _cf(**update):
    return CF.model_copy(update=update)


def _seq(**update):
    return SEQ.model_copy(update=update)


def _users(**update):
    return USERS.model_copy(update={"n_users": 40, **update})


def _written(df: pd.DataFrame, tmp_path, generator: str, table: str = "interactions") -> pd.DataFrame:
    """Write through the shared writer (as the stages do) and read back: the canonical schema is enforced."""
    out = tmp_path / generator / table
    write_generator(GeneratorOutput(df), out, generator=generator, table=table, settings={}, seed=1)
    return read_table(out / "rows.parquet", table)


def test_valid_cutoff_follows_the_split_params():
    assert valid_cutoff(PARAMS) == VALID_CUTOFF


def test_cf_interactions_only_sparse_users_get_new_items_above_threshold(history, tmp_path):
    p = _cf(per_user=2, sparse_max_items=8, min_score=0.05)
    rows = _written(cf_interactions.generate_cf_interactions(history, p, seed=3), tmp_path, "cf_interactions")
    assert len(rows) > 0 and rows["is_synthetic"].all() and (rows["source"] == "cf_interactions").all()
    distinct = history.groupby("user_id")["item_id"].nunique()
    assert (distinct.reindex(rows["user_id"]) <= 8).all()
    assert rows.groupby("user_id").size().max() <= 2
    assert (rows["score"] >= 0.05).all()
    bought = set(zip(history["user_id"], history["item_id"], strict=True))
    assert not any(pair in bought for pair in zip(rows["user_id"], rows["item_id"], strict=True))
    parents = history.groupby("user_id")["basket_id"].agg(set)
    assert all(b in parents[u] for u, b in zip(rows["user_id"], rows["parent_id"], strict=True))
    assert (rows["ts"] < VALID_CUTOFF).all()


def test_cf_interactions_is_deterministic_for_a_seed(history):
    p = _cf(per_user=2)
    first = cf_interactions.generate_cf_interactions(history, p, seed=5)
    assert first.equals(cf_interactions.generate_cf_interactions(history, p, seed=5))
    assert not first.equals(cf_interactions.generate_cf_interactions(history, p, seed=6))


def test_cf_interactions_threshold_above_every_score_yields_nothing(history):
    assert cf_interactions.generate_cf_interactions(history, _cf(min_score=1e6), seed=1).empty


def test_sequence_views_change_the_real_sequence_and_point_to_its_baskets(history, neighbours, tmp_path):
    p = _seq(views_per_user=2, max_baskets=6)
    rows = _written(sequence_aug.generate_sequence_views(history, p, neighbours, seed=2), tmp_path, "sequence_aug")
    assert rows["is_synthetic"].all() and (rows["source"] == "sequence_aug").all() and rows["parent_id"].notna().all()
    eligible = (history.groupby("user_id")["basket_id"].nunique() >= p.min_baskets).sum()
    assert 0 < rows["sequence_id"].nunique() <= 2 * eligible
    assert set(rows["augmentation"]) == {"crop", "mask", "reorder", "substitute"}
    own = history.groupby("user_id")["basket_id"].agg(set)
    assert all(b in own[u] for u, b in zip(rows["user_id"], rows["parent_id"], strict=True))
    real = {u: sorted(zip(g["ts"], g["item_id"], strict=True)) for u, g in history.groupby("user_id")}
    for (user, _), view in rows.groupby(["user_id", "sequence_id"]):
        assert sorted(zip(view["ts"], view["item_id"], strict=True)) != real[user]
    assert rows.groupby("sequence_id")["parent_id"].nunique().max() <= 6


def test_sequence_views_are_deterministic_for_a_seed(history, neighbours):
    p = _seq()
    first = sequence_aug.generate_sequence_views(history, p, neighbours, seed=9)
    assert first.equals(sequence_aug.generate_sequence_views(history, p, neighbours, seed=9))


@pytest.mark.parametrize("op", ["crop", "mask", "reorder", "substitute"])
def test_each_sequence_operation_does_what_it_says(op):
    ts = [pd.Timestamp(f"2011-01-0{d}", tz="UTC") for d in range(1, 6)]
    baskets = [(f"b{i}", ts[i], [f"i{i}a", f"i{i}b", f"i{i}c", f"i{i}d"]) for i in range(5)]
    neighbours = {item: [item + "_twin"] for _, _, items in baskets for item in items}
    p = _seq(crop_ratio=0.6, mask_ratio=0.5, reorder_ratio=1.0, substitute_ratio=1.0)
    view = sequence_aug.augment_view(baskets, op, p, neighbours, np.random.default_rng(0))
    assert view is not None
    if op == "crop":
        kept = [b for b, _, _ in view]
        assert len(kept) == 3 and kept == [f"b{i}" for i in range(int(kept[0][1]), int(kept[0][1]) + 3)]
    if op == "mask":
        assert all(len(items) == 2 for _, _, items in view)
    if op == "reorder":
        assert sorted(b for b, _, _ in view) == [b for b, _, _ in baskets] and [t for _, t, _ in view] == ts
    if op == "substitute":
        assert all(item.endswith("_twin") for _, _, items in view for item in items)


def test_item_enrichment_names_clusters_and_describes_items(data):
    items = data["items"].sort_values("item_id").head(60).reset_index(drop=True)
    vectors = encode_titles(items, PARAMS.encoder)
    p = ENRICH.model_copy(update={"n_clusters": 5})
    first = item_enrichment.enrich_by_clusters(items, vectors, p, seed=1)
    assert first["category"].nunique() == 5 and (first["category"].str.len() > 0).all()
    titles = first["title"].str.split().str.join(" ").str.lower()
    assert all(t in d.lower() for t, d in zip(titles, first["description"], strict=True))
    assert set(first["price_band"]) <= set(item_enrichment.BANDS)
    assert first.equals(item_enrichment.enrich_by_clusters(items, vectors, p, seed=1))


def test_item_enrichment_llm_mode_refuses_the_offline_backend(data):
    params = load_params(
        overrides={
            "augment": {"backend": {"name": "offline"}},
            "generators": {"item_enrichment": {"settings": {"use_llm": True}}},
        }
    )
    p = load_settings(params, "item_enrichment", item_enrichment.Settings)
    with pytest.raises(ShopError, match="generators.item_enrichment.settings.use_llm"):
        item_enrichment.enrich_by_llm(data["items"].head(3), params, p)


@pytest.mark.parametrize("model", ["copula", "vae"])
def test_synthetic_users_are_new_people_with_plausible_histories(data, history, model, tmp_path):
    countries = data["users"].set_index("user_id")["country"]
    p = _users(model=model, vae_epochs=30)
    users, rows = synthetic_users.generate_synthetic_users(history, countries, p, CF, seed=4, before=VALID_CUTOFF)
    users, rows = (
        _written(users, tmp_path, "synthetic_users", "users"),
        _written(rows, tmp_path, "synthetic_users"),
    )
    assert 0.9 * p.n_users <= len(users) <= p.n_users and set(rows["user_id"]) == set(users["user_id"])
    assert not set(users["user_id"]) & set(data["train"]["user_id"])
    assert (rows["ts"] < VALID_CUTOFF).all() and set(rows["item_id"]) <= set(history["item_id"])
    assert rows.groupby("user_id")["basket_id"].nunique().max() <= p.max_baskets
    real_sets = {frozenset(g) for _, g in history.groupby("user_id")["item_id"]}
    synthetic_sets = [frozenset(g) for _, g in rows.groupby("user_id")["item_id"]]
    assert sum(s in real_sets for s in synthetic_sets) == 0  # no synthetic history identical to a real one
    assert set(users["country"]) <= set(countries)


def test_synthetic_users_are_deterministic_for_a_seed(data, history):
    countries = data["users"].set_index("user_id")["country"]
    args = (history, countries, _users(), CF)
    first = synthetic_users.generate_synthetic_users(*args, seed=8, before=VALID_CUTOFF)
    second = synthetic_users.generate_synthetic_users(*args, seed=8, before=VALID_CUTOFF)
    assert first[0].equals(second[0]) and first[1].equals(second[1])


def test_copula_keeps_marginals_and_dependence():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, size=3000)
    frame = pd.DataFrame({"a": x, "b": x * 2 + rng.normal(size=3000), "n_baskets": rng.integers(1, 5, 3000)})
    sample = synthetic_users.GaussianCopula().fit(frame, rng).sample(3000, rng)
    assert abs(sample["a"].median() - frame["a"].median()) < 0.15
    assert sample[["a", "b"]].corr().iloc[0, 1] > 0.7
    assert set(sample["n_baskets"]) <= set(frame["n_baskets"])


def test_no_generator_sees_validation_or_test_targets(data, tmp_path):
    """Poison the validation targets inside train.parquet: nothing derived from them may reach synthetic
    data."""
    train = data["train"].copy()
    target = train["basket_id"].isin(set(data["valid"]["basket_id"]))
    assert target.sum() > 0
    train.loc[target, "item_id"] = "LEAK-" + train.loc[target, "item_id"]
    path = tmp_path / "train.parquet"
    train.to_parquet(path)
    history = load_history(PARAMS, path)
    assert not history["item_id"].str.startswith("LEAK-").any()
    test_only = set(data["test"]["item_id"]) - set(data["train"]["item_id"])
    ids = np.sort(history["item_id"].unique())
    neighbours = sequence_aug.similar_items_by_copurchase(load_history(PARAMS, path, guests=True), ids, 5)
    outputs = {
        "cf": cf_interactions.generate_cf_interactions(history, _cf(per_user=5, sparse_max_items=50), seed=1),
        "seq": sequence_aug.generate_sequence_views(history, _seq(views_per_user=2), neighbours, seed=1),
        "users": synthetic_users.generate_synthetic_users(
            history,
            data["users"].set_index("user_id")["country"],
            _users(),
            CF,
            seed=1,
            before=VALID_CUTOFF,
        )[1],
    }
    target_baskets = set(data["valid"]["basket_id"]) | set(data["test"]["basket_id"])
    for name, rows in outputs.items():
        assert len(rows) > 0, name
        assert not rows["item_id"].str.startswith("LEAK-").any(), name
        assert not set(rows["item_id"]) & test_only, name
        assert (rows["ts"] < VALID_CUTOFF).all() and (rows["ts"] < CUTOFF).all(), name
        assert not set(rows["parent_id"].dropna()) & target_baskets, name


@pytest.mark.parametrize(
    ("override", "key"),
    [
        (
            {"generators": {"cf_interactions": {"settings": {"per_user": -1}}}},
            "generators.cf_interactions.settings.per_user",
        ),
        (
            {"generators": {"synthetic_users": {"settings": {"n_users": -5}}}},
            "generators.synthetic_users.settings.n_users",
        ),
        (
            {"generators": {"sequence_aug": {"settings": {"operations": ["crop", "explode"]}}}},
            "generators.sequence_aug.settings.operations",
        ),
        ({"generators": {"mystery_generator": {}}}, "generators.mystery_generator"),
        ({"generators": {"mystery_generator": {"weight": 1.0}}}, "generators.mystery_generator"),
        ({"generators": {"cf_interactions": {"weight": -0.5}}}, "generators.cf_interactions.weight"),
    ],
)
def test_bad_configuration_fails_naming_the_key(override, key):
    with pytest.raises(ShopError, match=key.replace(".", r"\.")):
        check_generators(load_params(overrides=override))


def test_item_enrichment_llm_mode_goes_through_an_openai_compatible_server(data):
    import http.server
    import json
    import threading

    class Server(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = body["messages"][-1]["content"]
            text = "Party Tableware" if prompt.endswith("Category:") else "Paper cups for a children's party."
            reply = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(reply.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = {
            "name": "openai",
            "model": "tiny",
            "cache": False,
            "base_url": f"http://127.0.0.1:{server.server_address[1]}/v1",
        }
        params = load_params(overrides={"augment": {"backend": backend}})
        out = item_enrichment.enrich_by_llm(data["items"].head(4), params, ENRICH.model_copy(update={"use_llm": True}))
    finally:
        server.shutdown()
    assert (out["category"] == "party tableware").all()
    assert out["description"].str.contains("paper cups", case=False).all()
