"""Bring your own data: the whole loop on a shop's own canonical tables, written the way exports come out.

The shop is real data re-shaped in code: Online Retail customers as canonical interactions with ids written as
floats, weighed (fractional) quantities, view and click rows beside the purchases, timezone-aware times and no
users table (so no `country`); Home Depot judgments as canonical items and queries. Only params.yaml's
`data` section changes, as docs/data.md#bring-your-own-data says.
"""

import json

import numpy as np
import pandas as pd
import yaml
from loop_fixture import copy_repository, homedepot_judgments, repro, retail_lines, scored_models, write_params

from core.paths import repo_root


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


def test_the_whole_loop_runs_on_a_shop_of_canonical_tables_exported_the_usual_way(tmp_path):
    data = tmp_path / "data"
    interactions = shop_retail(data / "shop" / "retail", n_customers=120)
    shop_search(data / "shop" / "search", n_queries=250, n_products=1200)
    unset = {"sha256": None, "url": None, "url_sha256": None, "files": None, "fallback": None}
    repo = copy_repository(tmp_path / "repo")
    write_params(
        repo,
        {
            "data": {
                "retail": {**unset, "adapter": "canonical", "file": "shop/retail"},
                "search": {**unset, "adapter": "canonical", "file": "shop/search"},
            }
        },
    )
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
    # every default model was trained and scored on the shop's own held-out data
    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    assert scored_models(repo) == set(params["experiments"]["models"])
