"""Bring your own data: the whole loop on a shop's own canonical tables, written the way exports come out, one
task per shop (the other task's `data` entry is null, so it is off).

The shops are real data re-shaped in code: Online Retail customers as canonical interactions with ids written
as floats, weighed (fractional) quantities, view and click rows beside the purchases, timezone-aware times and
no users table (so no `country`); Home Depot judgments as canonical items and queries with ids as floats. Only
params.yaml's `data` section changes, as docs/data.md#bring-your-own-data says; the search shop also lists only
the twin and augmented models, as the default does (the ablation models are the fresh-machine test's, through
`python -m training.ablation`).
"""

import json
import os

import httpx
import numpy as np
import pandas as pd
import yaml
from loop_fixture import copy_repository, homedepot_judgments, repro, retail_lines, scored_models, write_params

from core.paths import repo_root
from core.tasks import OFF_MARKER
from serving.launch import free_port, start_service, stop_service


def shop_retail(folder, n_customers: int) -> pd.DataFrame:
    """Write items.parquet + interactions.parquet (no users.parquet); return the interactions written."""
    lines = retail_lines(n_customers)
    lines = lines[
        ~lines["InvoiceNo"].str.startswith("C")
        & (lines["Quantity"].astype(float) > 0)
        & (lines["UnitPrice"].astype(float) > 0)
        & lines["StockCode"].str.match(r"^\d{5}")
    ]
    items = lines.groupby("StockCode").agg(
        title=("Description", lambda d: d.mode().iloc[0] if d.notna().any() else ""),
        price=("UnitPrice", lambda p: p.astype(float).median()),
    )
    weighed = np.random.default_rng(0).random(len(lines)) < 0.2  # sold by weight: 0.35 kg, not 1 unit
    quantity = np.where(weighed, lines["Quantity"].astype(float) * 0.35, lines["Quantity"].astype(float))
    london = pd.to_datetime(lines["InvoiceDate"]).dt.tz_localize(
        "Europe/London", ambiguous="NaT", nonexistent="shift_forward"
    )
    purchases = pd.DataFrame(
        {
            "user_id": lines["CustomerID"].astype(float).to_numpy(),  # an export that wrote ids as 12346.0
            "item_id": lines["StockCode"].to_numpy(),
            "ts": london,  # timezone-aware shop time
            "event": "purchase",
            "quantity": quantity,
            "value": quantity * lines["UnitPrice"].astype(float).to_numpy(),
            "basket_id": lines["InvoiceNo"].astype(float).to_numpy(),
        }
    ).dropna(subset=["ts"])
    browsing = purchases.sample(frac=0.3, random_state=0).assign(event=lambda d: np.where(d.index % 2, "view", "click"))
    interactions = pd.concat([purchases, browsing], ignore_index=True)
    folder.mkdir(parents=True)
    items.reset_index().rename(columns={"StockCode": "item_id"}).assign(description="", category="").to_parquet(
        folder / "items.parquet"
    )
    interactions.to_parquet(folder / "interactions.parquet")
    return interactions


def shop_search(folder, n_queries: int, n_products: int) -> None:
    """Write items.parquet + queries.parquet from real judgments (ids as floats, relevance in 0..1)."""
    judged, titles = homedepot_judgments(n_queries, n_products)
    folder.mkdir(parents=True)
    items = pd.DataFrame({"item_id": titles.index.astype(float), "title": titles.to_numpy()})
    items.assign(description="", category="", price=0.0).to_parquet(folder / "items.parquet")
    query_ids = {term: float(i) for i, term in enumerate(sorted(judged["search_term"].unique()))}
    pd.DataFrame(
        {
            "query_id": judged["search_term"].map(query_ids),
            "query": judged["search_term"],
            "item_id": judged["product_uid"].astype(float),
            "relevance": (judged["relevance"] - 1) / 2,
        }
    ).to_parquet(folder / "queries.parquet")


UNSET = {"sha256": None, "url": None, "url_sha256": None, "files": None, "fallback": None}


def default_models() -> dict:
    """params.yaml's experiments.models."""
    return yaml.safe_load((repo_root() / "params.yaml").read_text())["experiments"]["models"]


def task_models(task: str, models: dict) -> set[str]:
    return {name for name, spec in models.items() if spec["task"] == task}


def test_a_recommendation_only_shop_runs_the_whole_loop_on_canonical_tables_exported_the_usual_way(tmp_path):
    data = tmp_path / "data"
    interactions = shop_retail(data / "shop" / "retail", n_customers=120)
    repo = copy_repository(tmp_path / "repo")
    retail = {**UNSET, "adapter": "canonical", "file": "shop/retail"}
    write_params(repo, {"data": {"retail": retail, "search": None}})  # no search data: the search task is off
    run = repro(repo, data)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    # views and clicks were dropped, float ids joined, fractions kept, every user got country Unspecified
    ingest = json.loads((repo / "reports" / "ingest.json").read_text())
    dropped = ingest["retail"]["cleaning"]["non_purchase_rows_dropped"]
    assert dropped == interactions.loc[interactions["event"] != "purchase", "event"].value_counts().to_dict()
    canonical = repo / "data" / "canonical" / "retail"
    kept = pd.read_parquet(canonical / "interactions.parquet")
    users = pd.read_parquet(canonical / "users.parquet")
    assert not kept["user_id"].str.endswith(".0").any() and (kept["quantity"] % 1 != 0).any()
    assert set(kept["user_id"].dropna()) == set(users["user_id"]) and set(users["country"]) == {"Unspecified"}
    # every recommendation model was trained and scored on the shop's own held-out data; search stayed off
    assert scored_models(repo) == task_models("retail", default_models())
    assert set(ingest) == {"retail"} and (repo / "data" / "canonical" / "search" / OFF_MARKER).is_file()
    promotion = json.loads((repo / "reports" / "promotion.json").read_text())
    assert promotion["search"] == {
        "task": "search",
        "decision": "skipped",
        "promote": False,
        "reason": "task search is off (data.search is null)",
    }
    packaged = json.loads((repo / "metrics" / "package.json").read_text())["models"]
    assert list(packaged) == ["shopaug-recommender"]


def test_a_search_only_shop_runs_the_whole_loop_and_its_bento_serves_search_alone(tmp_path):
    data = tmp_path / "data"
    shop_search(data / "shop" / "search", n_queries=250, n_products=1200)
    repo = copy_repository(tmp_path / "repo")
    search = {**UNSET, "adapter": "canonical", "file": "shop/search"}
    models = {name: spec for name, spec in default_models().items() if name.endswith(("-noaug", "-aug"))}
    write_params(repo, {"data": {"retail": None, "search": search}}, models)  # no purchases: retail is off
    run = repro(repo, data)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert scored_models(repo) == task_models("search", models)
    assert (repo / "data" / "features" / OFF_MARKER).is_file()  # no users: no feature snapshots, no Feast store
    package = json.loads((repo / "metrics" / "package.json").read_text())
    assert list(package["models"]) == ["shopaug-search"]
    # the Bento the run built serves /search; /recommend and /events are a one-line 404
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BENTOML_", "SHOPAUG_"))},
        "BENTOML_HOME": str(repo / "bentoml_home"),
        "HF_HUB_OFFLINE": "1",
        "SHOP_FEAST_CONFIG": str(tmp_path / "no-feature-store" / "feature_store.yaml"),
        "SHOPAUG_REQUEST_LOG_DIR": str(tmp_path / "requests"),
        "SHOPAUG_SERVE": json.dumps({"reload_poll_s": 0, "event_log": {"dir": str(tmp_path / "events")}}),
    }
    port = free_port()
    server = start_service(port, env, tmp_path / "serve.log", target=package["bento"], cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        found = httpx.post(f"{base}/search", json={"query": "wood screws", "k": 5}, timeout=60)
        assert found.status_code == 200 and len(found.json()["items"]) == 5, found.text
        assert httpx.post(f"{base}/ping", timeout=10).json() == {
            "recommender": None,
            "search": package["models"]["shopaug-search"]["version"],
        }
        event = {"user_id": "12346", "item_id": found.json()["items"][0]["item_id"], "ts": "2011-12-09T12:50:00Z"}
        for endpoint, body in (
            ("recommend", {"user_id": "12346"}),
            ("events", {"events": [event | {"event": "click"}]}),
        ):
            answer = httpx.post(f"{base}/{endpoint}", json=body, timeout=10)
            reason = f"/{endpoint}: not served here (no retail champion: data.retail is null)"
            assert (answer.status_code, answer.json()) == (404, {"error": reason})
    finally:
        stop_service(server)
