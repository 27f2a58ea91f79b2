"""The closed loop's way back: purchases the service logged from `/events` (`serve.event_log`) become retail
interactions for the next `dvc repro`, with provenance `source=serving`.

The event log holds canonical interaction rows (plus `request_id`), one Parquet file per flush and replica; they
are read with the canonical adapter's contract, so a broken file stops ingest with one line naming it. Rows
logged twice (same `request_id`) count once; clicks are dropped like every non-purchase event; purchases of
items the retail catalogue lacks are dropped and counted (the service accepts items of either catalogue).
"""

import logging
from pathlib import Path

import pandas as pd

from core.errors import ShopError
from pipelines.adapters.canonical import complete_users, purchases, read_shop_table

log = logging.getLogger(__name__)
SOURCE = "serving"


def read_event_log(folder: Path, catalogue: pd.Series, report: dict) -> pd.DataFrame | None:
    """Purchase rows of the event log in `folder` whose items are in `catalogue`, or None when it holds no
    events; `report` receives the counts."""
    if not folder.is_dir():
        raise ShopError(f"{folder}: data.serving_events names no folder (the service writes serve.event_log.dir)")
    files = sorted(folder.glob("events-*.parquet"))
    report["files"] = len(files)
    if not files:
        log.info("%s: no logged events", folder)
        return None
    events = pd.concat([read_shop_table(path, "interactions") for path in files], ignore_index=True)
    report["rows_in"] = len(events)
    if "request_id" in events.columns:
        events = events.drop_duplicates("request_id").drop(columns="request_id")
    if not (events["event"] == "purchase").any():
        report["purchases"] = 0
        log.info("%s: %d logged event(s), no purchase", folder, len(events))
        return None
    bought = purchases(events, folder, report)
    known = bought["item_id"].isin(catalogue)
    report["purchases"], report["unknown_items_dropped"] = int(known.sum()), int((~known).sum())
    if not known.all():
        log.warning("%s: %d purchase(s) of items outside the retail catalogue dropped", folder, int((~known).sum()))
    return bought[known].assign(source=SOURCE)


def add_serving_events(tables: dict[str, pd.DataFrame], folder: Path) -> tuple[dict[str, pd.DataFrame], dict]:
    """The retail tables with the logged purchases appended (their new users get default attributes)."""
    report: dict = {"folder": str(folder)}
    events = read_event_log(folder, tables["items"]["item_id"], report)
    if events is None or events.empty:
        return tables, report
    interactions = pd.concat([tables["interactions"], events[tables["interactions"].columns]], ignore_index=True)
    users = complete_users(tables["users"], interactions, folder)
    log.info("%s: %d logged purchase(s) of %d user(s) added", folder, len(events), events["user_id"].nunique())
    return {**tables, "interactions": interactions, "users": users}, report
