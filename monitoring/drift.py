"""Serving drift: a window of the request log against the training reference, as Evidently tests that alert.

The window ends at the newest logged request (or `--now`) and spans `monitoring.drift.window_hours`. Sections
(one Evidently report each, saved as `<out>/<section>.html`, numbers and test results in `<out>/drift.json`):

- queries: text descriptors (characters, words, out-of-vocabulary share) and MiniLM embedding drift of the
  window's search queries vs training queries;
- users: features of the requesting users (baskets, items, spend, country; from training purchases) vs all
  training users, and the share of requests from users unknown to training;
- items: price and popularity of recommended items vs training purchases;
- scores: the served score distribution vs the previous window of the same length (when it has requests);
- recommendations: Evidently recsys metrics on the window's lists: catalogue coverage, popularity bias (ARP vs
  the purchase-weighted mean popularity), novelty.

Every condition is an Evidently test with its threshold from params; if any fails, an alert goes to the
webhook (retries, cool-down), is appended to the alert log, and the command exits with status 1.
"""

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from core import cli
from core.encoder import TextEncoder
from core.errors import ShopError
from core.io import atomic_path, read_table, write_json
from core.logfolder import LogFolder, is_uri
from core.params import DriftParams, Params
from core.paths import repo_root
from monitoring.alerts import check_webhook_url, raise_alert
from monitoring.checks import Comparison, EncoderCache, evidently_compare, failed_tests, require_columns, vocabulary

log = logging.getLogger(__name__)
app = cli.stage_app(__doc__)
LOG_COLUMNS = [
    "ts",
    "request_id",
    "endpoint",
    "user_id",
    "query",
    "item_id",
    "k",
    "strategy",
    "returned_items",
    "scores",
    "latency_ms",
]


def read_request_log(log_dir: Path | str) -> pd.DataFrame:
    """All request-log files of `log_dir` (a folder or an object-store location, core/logfolder.py) as one frame;
    refuse a missing folder, no files or missing columns."""
    folder = LogFolder(log_dir)
    files = folder.files()
    if not files:
        raise ShopError(f"{log_dir}: no request-log files (*.parquet); is serving logging requests?")
    frame = pd.concat([folder.read(f).to_pandas() for f in files], ignore_index=True)
    require_columns(frame, LOG_COLUMNS, f"{log_dir} (request log)")
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def split_window(log: pd.DataFrame, hours: float, now: dt.datetime | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(current window, previous window of the same length)."""
    end = pd.Timestamp(now) if now is not None else log["ts"].max()
    end = end.tz_localize("UTC") if end.tzinfo is None else end
    span = pd.Timedelta(hours=hours)
    current = log[(log["ts"] > end - span) & (log["ts"] <= end)]
    previous = log[(log["ts"] > end - 2 * span) & (log["ts"] <= end - span)]
    return current.reset_index(drop=True), previous.reset_index(drop=True)


class Reference:
    """Training-side reference: queries, per-user and per-item features, purchases (for recsys metrics)."""

    @classmethod
    def from_files(cls, splits: Path, canonical: Path) -> "Reference":
        return cls(
            read_table(splits / "search" / "train.parquet", "queries"),
            read_table(splits / "retail" / "train.parquet", "interactions"),
            read_table(canonical / "retail" / "users.parquet", "users"),
            read_table(canonical / "retail" / "items.parquet", "items"),
        )

    def __init__(self, queries: pd.DataFrame, train: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame):
        self.queries = queries["query"].astype(str)
        self.purchases = train[train["user_id"].notna()][["user_id", "item_id", "basket_id", "value"]]
        self.basket_users = self.purchases.drop_duplicates("basket_id")["user_id"].astype(str)
        by_user = self.purchases.groupby("user_id", observed=True)
        self.users = pd.DataFrame(
            {
                "log_baskets": np.log1p(by_user["basket_id"].nunique()),
                "log_items": np.log1p(by_user["item_id"].nunique()),
                "log_spend": np.log1p(by_user["value"].sum().clip(lower=0)),
            }
        )
        users = users.set_index("user_id")
        self.users["country"] = users["country"].reindex(self.users.index).fillna("Unspecified").astype(str)
        self.users.index = self.users.index.astype(str)
        items = items.set_index("item_id")
        self.popularity = self.purchases.groupby("item_id", observed=True)["user_id"].nunique()
        self.popularity.index = self.popularity.index.astype(str)
        self.items = pd.DataFrame({"log_price": np.log1p(items["price"].astype(float).clip(lower=0))})
        self.items.index = self.items.index.astype(str)
        self.items["log_popularity"] = np.log1p(self.popularity.reindex(self.items.index).fillna(0))


def _exploded(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (request, rank): request_id, user_id, item_id, rank (1-based), score."""
    rows = frame[["request_id", "user_id", "returned_items", "scores"]].copy()
    rows = rows[rows["returned_items"].map(lambda v: v is not None and len(v) > 0)]
    if rows.empty:
        return pd.DataFrame(columns=["request_id", "user_id", "item_id", "rank", "score"])
    rows["rank"] = rows["returned_items"].map(lambda v: list(range(1, len(v) + 1)))
    rows["scores"] = [
        list(s) if s is not None and len(s) == len(i) else [np.nan] * len(i)
        for s, i in zip(rows["scores"], rows["returned_items"], strict=True)
    ]
    long = rows.explode(["returned_items", "scores", "rank"]).rename(
        columns={"returned_items": "item_id", "scores": "score"}
    )
    return long.astype({"item_id": str, "rank": int, "score": float}).reset_index(drop=True)


def run_drift(
    params: Params, current: pd.DataFrame, previous: pd.DataFrame, ref: Reference, encoder: EncoderCache | None
) -> tuple[dict, dict]:
    """Return ({section: {values, failed}}, {section: snapshot}) for the window `current`."""
    from evidently import DataDefinition, Dataset, Recsys, Report
    from evidently.metrics import MeanValue, Novelty, PopularityBiasMetric, RowCount, ValueDrift
    from evidently.tests import gte, lte

    d: DriftParams = params.monitoring.drift
    seed, k = params.seed, int(current["k"].max()) if len(current) else 10
    # every snapshot is dated by the window's end, so a workspace's dashboards order windows, not run times
    when = current["ts"].max().to_pydatetime() if len(current) else None
    sections, snapshots = {}, {}

    def record(name, snapshot, values):
        sections[name] = {"values": values, "failed": failed_tests(snapshot)}
        snapshots[name] = snapshot

    queries = current["query"].dropna().astype(str)
    queries = queries[queries.str.strip() != ""]
    if len(queries):
        vocab = vocabulary(ref.queries.unique())
        real_q = ref.queries.sample(n=min(d.embedding_rows, len(ref.queries)), random_state=seed)
        cur_q = queries.sample(n=min(d.embedding_rows, len(queries)), random_state=seed)
        comp = Comparison(
            pd.DataFrame({"query": real_q.to_numpy()}),
            pd.DataFrame({"query": cur_q.to_numpy()}),
            numeric=[],
            text="query",
        )
        tests = {
            "embedding_drift": [lte(d.query_embedding_max)],
            "oov": [lte(d.max_query_oov)],
            **{f"drift:query_{c}": [lte(d.feature_drift_max)] for c in ("chars", "words")},
        }
        record("queries", *evidently_compare(comp, encoder, tests, vocab, timestamp=when))

    users = current["user_id"].dropna().astype(str)
    if len(users):
        known = users.isin(ref.users.index)
        cur_users = ref.users.reindex(users[known]).reset_index(drop=True).assign(unknown=0.0)
        cur_users = pd.concat([cur_users, pd.DataFrame({"unknown": np.ones(int((~known).sum()))})], ignore_index=True)
        # reference: the users behind training baskets (a request is an event, so active users weigh more)
        basket_users = ref.basket_users.sample(n=min(d.reference_rows, len(ref.basket_users)), random_state=seed)
        ref_users = ref.users.reindex(basket_users).reset_index(drop=True).assign(unknown=0.0)
        num = ["log_baskets", "log_items", "log_spend"]
        metrics = [RowCount(), MeanValue(column="unknown", tests=[lte(d.max_unknown_user_share)])]
        if known.any():
            metrics += [ValueDrift(column=c, method="wasserstein", tests=[lte(d.feature_drift_max)]) for c in num]
            metrics.append(ValueDrift(column="country", method="jensenshannon", tests=[lte(d.feature_drift_max)]))
        definition = DataDefinition(numerical_columns=num + ["unknown"], categorical_columns=["country"])
        cur_users["country"] = cur_users["country"].fillna("unknown").astype(str)
        snap = Report(metrics).run(
            Dataset.from_pandas(cur_users, data_definition=definition),
            Dataset.from_pandas(ref_users, data_definition=definition),
            timestamp=when,
        )
        record("users", snap, _values(snap))

    recs = _exploded(current[current["endpoint"] == "recommend"])
    if len(recs):
        cur_items = ref.items.reindex(recs["item_id"]).dropna().reset_index(drop=True)
        ref_items = ref.items.reindex(ref.purchases["item_id"].astype(str)).dropna()
        ref_items = ref_items.sample(n=min(d.reference_rows, len(ref_items)), random_state=seed)
        if len(cur_items):
            definition = DataDefinition(numerical_columns=list(ref.items.columns))
            snap = Report(
                [
                    ValueDrift(column=c, method="wasserstein", tests=[lte(d.feature_drift_max)])
                    for c in ref.items.columns
                ]
            ).run(
                Dataset.from_pandas(cur_items, data_definition=definition),
                Dataset.from_pandas(ref_items.reset_index(drop=True), data_definition=definition),
                timestamp=when,
            )
            record("items", snap, _values(snap))
        base_pop = float(ref.popularity.reindex(ref.purchases["item_id"].astype(str)).mean())
        long = recs.assign(target=0).rename(columns={"request_id": "user"})
        train = ref.purchases[["user_id", "item_id"]].astype(str).rename(columns={"user_id": "user"})
        definition = DataDefinition(
            numerical_columns=["rank", "target"],
            categorical_columns=["user", "item_id"],
            ranking=[
                Recsys(
                    user_id="user", item_id="item_id", target="target", prediction="rank", recommendations_type="rank"
                )
            ],
        )
        metrics = [
            PopularityBiasMetric(k=k, metric="coverage", tests=[gte(d.min_coverage)]),
            PopularityBiasMetric(k=k, metric="arp", tests=[lte(d.max_popularity_ratio * base_pop)]),
            PopularityBiasMetric(k=k, metric="gini"),
            Novelty(k=k, tests=[gte(d.min_novelty)]),
        ]
        snap = Report(metrics).run(
            Dataset.from_pandas(long[["user", "item_id", "rank", "target"]], data_definition=definition),
            None,
            additional_data={
                "current_train_data": Dataset.from_pandas(
                    train, data_definition=DataDefinition(categorical_columns=["user", "item_id"])
                )
            },
            timestamp=when,
        )
        values = _values(snap)
        values["purchase_weighted_popularity"] = base_pop
        record("recommendations", snap, values)

    cur_scores = _exploded(current)["score"].dropna()
    prev_scores = _exploded(previous)["score"].dropna() if len(previous) >= d.min_requests else pd.Series([])
    if len(cur_scores) and len(prev_scores):
        definition = DataDefinition(numerical_columns=["score"])
        snap = Report([ValueDrift(column="score", method="wasserstein", tests=[lte(d.score_drift_max)])]).run(
            Dataset.from_pandas(pd.DataFrame({"score": cur_scores.to_numpy()}), data_definition=definition),
            Dataset.from_pandas(pd.DataFrame({"score": prev_scores.to_numpy()}), data_definition=definition),
            timestamp=when,
        )
        record("scores", snap, _values(snap))
    return sections, snapshots


def _values(snapshot) -> dict:
    out = {}
    for m in snapshot.dict()["metrics"]:
        value = m["value"]
        out[m["metric_name"]] = float(value) if isinstance(value, int | float) else value
    return out


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    log_dir: Annotated[
        str | None,
        typer.Option(help="request log folder or object-store location, s3://... (default monitoring.drift.log_dir)"),
    ] = None,
    splits: Annotated[Path, typer.Option(help="training reference splits")] = Path("data/splits"),
    canonical: Annotated[Path, typer.Option(help="canonical tables (users, items)")] = Path("data/canonical"),
    out: Annotated[Path, typer.Option(help="folder for drift.json and <section>.html")] = Path("reports/drift"),
    now: Annotated[dt.datetime | None, typer.Option(help="window end (UTC); default: newest logged request")] = None,
    window_hours: Annotated[float | None, typer.Option(help="override monitoring.drift.window_hours")] = None,
    alert: Annotated[bool, typer.Option(help="send / log an alert when a test fails")] = True,
    embeddings: Annotated[bool, typer.Option(help="MiniLM embedding drift of queries")] = True,
) -> None:
    """Compare the newest window of the request log with the training reference; alert and exit 1 on failure."""
    conf = cli.load(params)
    d = conf.monitoring.drift
    check_webhook_url(conf.monitoring.alerts.webhook_url)
    log_path = log_dir or d.log_dir
    log_path = log_path if is_uri(log_path) else cli.resolve(log_path)
    current, previous = split_window(read_request_log(log_path), window_hours or d.window_hours, now)
    if len(current) < d.min_requests:
        raise ShopError(
            f"{log_path}: {len(current)} request(s) in the window, fewer than "
            f"monitoring.drift.min_requests={d.min_requests}"
        )
    encoder = None
    if embeddings:
        encoder = EncoderCache(lambda: TextEncoder(conf.encoder.model, 32, conf.encoder.batch_size))
    reference = Reference.from_files(cli.resolve(splits), cli.resolve(canonical))
    sections, snapshots = run_drift(conf, current, previous, reference, encoder)
    out = cli.resolve(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, snapshot in snapshots.items():
        with atomic_path(out / f"{name}.html") as tmp:
            snapshot.save_html(str(tmp))
    failed = [f"{s}: {t}" for s, v in sections.items() for t in v["failed"]]
    summary = {
        "window": {
            "start": str(current["ts"].min()),
            "end": str(current["ts"].max()),
            "requests": int(len(current)),
            "previous_requests": int(len(previous)),
        },
        "sections": sections,
        "failed": failed,
    }
    write_json(summary, out / "drift.json")
    if d.workspace:
        save_to_workspace(cli.resolve(d.workspace), snapshots)
    if not failed:
        log.info("drift: %d requests, all %d sections within thresholds", len(current), len(sections))
        return
    if alert:
        rec = raise_alert(
            "shopaug serving drift",
            "monitoring.drift",
            failed,
            {"window": summary["window"], "report": str(out)},
            conf.monitoring.alerts,
            repo_root(),
        )
        delivery = rec["delivery"]
    else:
        delivery = "disabled"
    print(f"alert: {len(failed)} drift test(s) failed ({'; '.join(failed[:3])}); delivery {delivery}; see {out}")
    sys.exit(1)  # cli.run runs Typer in non-standalone mode, where typer.Exit would not set the status


def save_to_workspace(path: Path, snapshots: dict) -> None:
    """Add each section's snapshot to a local Evidently workspace (project `shopaug serving drift`)."""
    from evidently.ui.workspace import Workspace

    workspace = Workspace.create(str(path))
    projects = [p for p in workspace.list_projects() if p.name == "shopaug serving drift"]
    project = projects[0] if projects else workspace.create_project("shopaug serving drift")
    for snapshot in snapshots.values():
        workspace.add_run(project.id, snapshot)


if __name__ == "__main__":
    cli.run(app)
