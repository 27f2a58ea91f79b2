"""Ingest's way back from the service: event-log files (written in code with the service's own writer) become
retail interactions with source=serving; a broken file is one line naming it."""

import datetime as dt
import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from core.errors import ShopError
from core.io import read_table
from core.paths import repo_root
from core.schema import validate_table
from pipelines.serving_events import add_serving_events
from serving.request_log import EVENT_LOG_SCHEMA, RequestLog

ITEMS = ["85123A", "71053", "84406B"]


def shop() -> dict[str, pd.DataFrame]:
    items = pd.DataFrame({"item_id": ITEMS, "title": ["heart", "lantern", "cake tin"], "price": [2.55, 3.39, 4.25]})
    items = items.assign(description="", category="")
    inter = pd.DataFrame(
        {
            "user_id": ["17850", "17850"],
            "item_id": ITEMS[:2],
            "ts": pd.to_datetime(["2010-12-01 08:26", "2010-12-01 08:26"], utc=True),
            "event": "purchase",
            "quantity": [6.0, 6.0],
            "value": [15.3, 20.34],
            "basket_id": "536365",
        }
    )
    users = pd.DataFrame({"user_id": ["17850"], "country": ["United Kingdom"]})
    return {
        "items": validate_table(items, "items", "items"),
        "interactions": validate_table(inter, "interactions", "interactions"),
        "users": validate_table(users, "users", "users"),
    }


def event(n: int, user: str, item: str, kind: str = "purchase", quantity: float = 1.0) -> dict:
    return {
        "user_id": user,
        "item_id": item,
        "ts": dt.datetime(2011, 12, 10, 9, n, tzinfo=dt.UTC),
        "event": kind,
        "quantity": quantity,
        "value": quantity * 2.0,
        "basket_id": f"serving:r{n}:{user}",
        "source": "serving",
        "request_id": f"r{n}-0",
    }


def write_log(folder, rows: list[dict], replica: str = "pod-0") -> None:
    log = RequestLog(folder, 1.0, 100, 60.0, None, 1000, replica=replica, schema=EVENT_LOG_SCHEMA, prefix="events")
    for row in rows:
        log.record(row)
    log.close()


def test_purchases_of_known_items_join_with_new_users_and_duplicates_once(tmp_path):
    folder = tmp_path / "events"
    write_log(folder, [event(1, "17850", ITEMS[2], quantity=2.5), event(2, "new-visitor", ITEMS[0])])
    write_log(folder, [event(1, "17850", ITEMS[2], quantity=2.5), event(3, "17850", ITEMS[1], "click")], "pod-1")
    write_log(folder, [event(4, "17850", "not-a-retail-item")], "pod-2")
    tables, report = add_serving_events(shop(), folder)
    served = tables["interactions"][tables["interactions"]["source"] == "serving"]
    assert sorted(served["user_id"]) == ["17850", "new-visitor"]  # the pod-1 copy of r1-0 counts once
    assert served.set_index("user_id").loc["17850", "quantity"] == 2.5  # fractions kept
    assert report["files"] == 3 and report["purchases"] == 2 and report["unknown_items_dropped"] == 1
    assert report["non_purchase_rows_dropped"] == {"click": 1}
    users = tables["users"].set_index("user_id")["country"].to_dict()
    assert users == {"17850": "United Kingdom", "new-visitor": "Unspecified"}
    assert len(tables["interactions"]) == 4 and (tables["interactions"]["source"] != "serving").sum() == 2


def test_an_empty_log_changes_nothing_and_a_missing_folder_is_one_line(tmp_path):
    (tmp_path / "events").mkdir()
    tables, report = add_serving_events(shop(), tmp_path / "events")
    assert report["files"] == 0 and len(tables["interactions"]) == 2
    with pytest.raises(ShopError, match="data.serving_events names no folder"):
        add_serving_events(shop(), tmp_path / "nowhere")


def test_a_corrupt_or_negative_event_file_is_one_line_naming_it(tmp_path):
    folder = tmp_path / "events"
    write_log(folder, [event(1, "17850", ITEMS[0])])
    (folder / "events-pod-9.20261203T000000Z-000001.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ShopError, match="events-pod-9") as caught:
        add_serving_events(shop(), folder)
    assert "\n" not in str(caught.value)
    for path in folder.glob("events-pod-9*"):
        path.unlink()
    write_log(folder, [event(2, "17850", ITEMS[0], quantity=-1.0)], "pod-3")
    with pytest.raises(ShopError, match="'quantity' must be a positive number"):
        add_serving_events(shop(), folder)


def test_ingest_with_serving_events_writes_them_to_the_canonical_tables(tmp_path):
    """The stage itself: `data.serving_events` on, a canonical shop as the raw retail data."""
    raw, out = tmp_path / "raw", tmp_path / "canonical"
    tables = shop()
    (raw / "retail" / "shop").mkdir(parents=True)
    for name, frame in tables.items():
        frame.to_parquet(raw / "retail" / "shop" / f"{name}.parquet", index=False)
    queries = pd.DataFrame({"query_id": ["q1"], "query": ["heart"], "item_id": ITEMS[:1], "relevance": [1.0]})
    (raw / "search" / "shop").mkdir(parents=True)
    queries.to_parquet(raw / "search" / "shop" / "queries.parquet", index=False)
    tables["items"].to_parquet(raw / "search" / "shop" / "items.parquet", index=False)
    write_log(tmp_path / "events", [event(1, "new-visitor", ITEMS[2])])
    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    params["data"]["retail"]["adapter"] = params["data"]["search"]["adapter"] = "canonical"
    params["data"]["serving_events"] = str(tmp_path / "events")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    command = [sys.executable, "-m", "pipelines.ingest", "--params", "params.yaml", "--raw", "raw"]
    command += ["--out", "canonical", "--report", "ingest.json"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    inter = read_table(out / "retail" / "interactions.parquet", "interactions")
    assert inter.loc[inter["source"] == "serving", "user_id"].tolist() == ["new-visitor"]
    report = json.loads((tmp_path / "ingest.json").read_text())["retail"]["serving_events"]
    assert report["purchases"] == 1
