"""Stage `gate` (one generator per run): an Evidently report, fidelity and privacy checks, and a decision.

The generator's rows (`data/synthetic/<name>/rows.parquet`) are compared with their real counterpart, chosen by
the registry row `generators.<name>` (table queries: the task's training queries; interactions: training
purchases before the validation cutoff; items: the task's canonical catalogue). Which checks decide comes from
the row's `gate` spec; thresholds from params `gate`:

- column drift (Evidently ValueDrift: normed Wasserstein for numbers, Jensen-Shannon for categories) on row
  features and on text descriptors (characters, words, out-of-vocabulary share);
- embedding drift (Evidently's ModelDriftMethod, classifier ROC AUC) on MiniLM embeddings of the text;
- fidelity (SDMetrics column shapes and column pair trends);
- privacy: rows copied from real rows, histories / profiles identical to a real one (must be 0), and the
  distance to the closest real record compared with real-to-real distances.

Query generators also get a `text_quality` section (`monitoring.text_quality`: diversity, title copies, lengths,
round-trip pass rate, beside the real queries), reported only.

Decision: `fail` if a decisive check crosses its fail threshold or a privacy limit, `drop` if one crosses its
drop threshold (fuse leaves the generator out, with a warning), else `pass`. Writes `metrics/gate/<name>.json`
({"decision", "checks", ...}) and `reports/gate/<name>.html`; exits 2 with one line when the generator fails.
"""

import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from core import cli
from core.encoder import TextEncoder
from core.errors import ShopError
from core.io import atomic_path, read_table, write_json
from core.params import GateParams, GeneratorRow, Params
from core.paths import repo_root
from core.tasks import off_reason, tasks_on
from monitoring.checks import (
    Comparison,
    EncoderCache,
    copied_row_share,
    dcr_sets,
    dcr_vectors,
    evidently_compare,
    fidelity,
    identical_history_share,
    oov_share,
    require_columns,
    text_descriptors,
    vocabulary,
    vocabulary_overlap,
)
from monitoring.text_quality import length_histogram_metrics, normalise_query, query_text_quality, text_quality_html
from pipelines.augment.manifest import MANIFEST_FILE
from pipelines.augment.retail_history import safe_history, valid_cutoff

log = logging.getLogger(__name__)
app = cli.stage_app(__doc__)
PROFILE = ["n_baskets", "basket_size", "log_unit_price", "log_quantity", "first_day", "span_days"]


# Generators that write a profile table (users.parquet) beside their rows: their profiles are checked too.
PROFILE_TABLES = {"synthetic_users": "users.parquet"}


@dataclass
class GateInputs:
    """Real counterparts of a generator's table kind (queries, interactions, items) and the users' profiles."""

    queries: pd.DataFrame | None = None
    interactions: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    vocab: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- frames
def retail_frame(rows: pd.DataFrame, real: pd.DataFrame, titles: pd.Series) -> pd.DataFrame:
    """Row features of purchases: quantity, value, item popularity (log real buyers), basket size, hour, weekday."""
    buyers = real.groupby("item_id", observed=True)["user_id"].nunique()
    ts = rows["ts"]
    return pd.DataFrame(
        {
            "user_id": rows["user_id"].astype(str),
            "item_id": rows["item_id"].astype(str),
            "ts": ts,
            "quantity": rows["quantity"].astype(float),
            "value": rows["value"].astype(float),
            "item_popularity": np.log1p(rows["item_id"].astype(str).map(buyers).fillna(0).astype(float)),
            "basket_size": rows.groupby("basket_id", observed=True)["item_id"].transform("size").astype(float),
            "hour": (ts.dt.hour + ts.dt.minute / 60).astype(float),
            "weekday": ts.dt.day_name(),
            "title": rows["item_id"].astype(str).map(titles).fillna("").astype(str),
            **({"sequence_id": rows["sequence_id"].astype(str)} if "sequence_id" in rows.columns else {}),
        }
    )


def user_profiles(history: pd.DataFrame) -> pd.DataFrame:
    """Real users in the synthetic_users profile space: baskets, basket size, unit price, quantity, days."""
    start = history["ts"].min()
    rows = history.assign(
        unit=np.log(history["value"].clip(lower=1e-3) / history["quantity"].clip(lower=1)),
        logq=np.log(history["quantity"].clip(lower=1)),
    )
    per_basket = rows.groupby(["user_id", "basket_id"], observed=True).agg(
        size=("item_id", "nunique"), ts=("ts", "min")
    )
    grouped = per_basket.groupby("user_id", observed=True)
    by_user = rows.groupby("user_id", observed=True)
    return pd.DataFrame(
        {
            "n_baskets": grouped.size().astype(float),
            "basket_size": grouped["size"].mean(),
            "log_unit_price": by_user["unit"].median(),
            "log_quantity": by_user["logq"].median(),
            "first_day": (grouped["ts"].min() - start).dt.total_seconds() / 86400,
            "span_days": (grouped["ts"].max() - grouped["ts"].min()).dt.total_seconds() / 86400,
        }
    )


def sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return df.sample(n=min(n, len(df)), random_state=seed).reset_index(drop=True) if len(df) > n else df


# ------------------------------------------------------------------------------------------- decisions
def check(
    value, decisive: bool, drop: float | None = None, fail: float | None = None, higher_is_worse=True, **extra
) -> dict:
    """One check: its value, thresholds and status (pass / drop / fail, or info when not decisive)."""
    status = "info"
    if decisive and value is not None:
        worse = (lambda v, t: v > t) if higher_is_worse else (lambda v, t: v < t)
        status = (
            "fail"
            if fail is not None and worse(value, fail)
            else ("drop" if drop is not None and worse(value, drop) else "pass")
        )
    out = {"value": None if value is None else round(float(value), 6), "status": status}
    if drop is not None:
        out["drop_threshold"] = drop
    if fail is not None:
        out["fail_threshold"] = fail
    return {**out, **extra}


def decide(checks: dict[str, dict]) -> str:
    statuses = {c["status"] for c in checks.values()}
    return "fail" if "fail" in statuses else "drop" if "drop" in statuses else "pass"


# ------------------------------------------------------------------------------------------- one generator
def generator_row(params: Params, name: str) -> GeneratorRow:
    """The registry row `generators.<name>`; ShopError for a name the registry does not list."""
    if name not in params.generators:
        raise ShopError(f"generators: unknown generator '{name}'; expected one of {sorted(params.generators)}")
    return params.generators[name]


def gate_generator(
    name: str,
    synthetic: pd.DataFrame,
    inputs: GateInputs,
    params: Params,
    encoder: EncoderCache | None,
    extra: pd.DataFrame | None = None,
    manifest: dict | None = None,
) -> tuple[dict, object]:
    """Return ({"decision", "checks", ...}, Evidently snapshot) for generator `name`'s synthetic rows.

    What is compared and which checks decide come from the registry row `params.generators[name]`; thresholds
    from `params.gate`. `extra` is the generator's profile table (synthetic_users), checked when given;
    `manifest` its manifest.json, read for the round-trip pass rate of query generators.
    """
    from evidently.tests import lte

    row = generator_row(params, name)
    spec, g, seed = row.gate, params.gate, params.seed
    label = f"{name} rows"
    rng = np.random.default_rng(seed)
    text_quality, extra_metrics = None, []
    if row.table == "queries":
        require_columns(synthetic, ["query", "item_id", "relevance"], label)
        real_all, vocab = inputs.queries, inputs.vocab["query"]
        titles = None if inputs.items is None else inputs.items.set_index(inputs.items["item_id"].astype(str))["title"]
        text_quality = query_text_quality(synthetic, real_all, titles, manifest, seed)
        extra_metrics = length_histogram_metrics(synthetic, real_all)
        comp = Comparison(
            sample(real_all, g.sample_rows, seed),
            sample(synthetic, g.sample_rows, seed),
            numeric=["relevance"],
            text="query",
        )
        text_col = "query"
    elif row.table == "interactions":
        require_columns(synthetic, ["user_id", "item_id", "ts", "quantity", "value", "basket_id"], label)
        real_all, vocab = inputs.interactions, inputs.vocab["title"]
        titles = inputs.items.set_index("item_id")["title"]
        real_f, syn_f = retail_frame(real_all, real_all, titles), retail_frame(synthetic, real_all, titles)
        comp = Comparison(
            sample(real_f, g.sample_rows, seed),
            sample(syn_f, g.sample_rows, seed),
            numeric=["quantity", "value", "item_popularity", "basket_size", "hour"],
            categorical=["weekday"],
            text="title",
        )
        text_col = "title"
    else:
        require_columns(synthetic, ["item_id", "title", "description", "category", "price"], label)
        real_all, vocab = inputs.items, inputs.vocab["title"]
        comp = Comparison(
            sample(real_all, g.sample_rows, seed),
            sample(synthetic, g.sample_rows, seed),
            numeric=["price"],
            text="title",
        )
        text_col = "title"
    tests = {f"drift:{c}": [lte(g.drift_drop)] for c in spec.drift}
    if spec.text:
        tests["embedding_drift"] = [lte(g.embedding_drop)]
        tests["oov"] = [lte(g.oov_drop)]
    snapshot, values = evidently_compare(comp, encoder, tests, vocab, extra_metrics)

    checks: dict[str, dict] = {}
    drift = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("drift:")}
    decisive = {c: drift[c] for c in spec.drift if c in drift}
    worst = max(decisive, key=decisive.get) if decisive else None
    checks["column_drift"] = check(
        decisive.get(worst) if worst else None,
        bool(decisive),
        g.drift_drop,
        g.drift_fail,
        column=worst,
        by_column={c: round(v, 6) for c, v in drift.items()},
    )
    if "embedding_drift" in values:
        checks["embedding_drift"] = check(
            values["embedding_drift"],
            spec.text,
            g.embedding_drop,
            g.embedding_fail,
            method="ROC AUC, Evidently ModelDriftMethod",
        )
    syn_text = comp.synthetic[text_col].astype(str).tolist()
    checks["oov_share"] = check(float(oov_share(syn_text, vocab).mean()), spec.text, g.oov_drop, g.oov_fail)
    checks["vocabulary_overlap"] = check(vocabulary_overlap(syn_text, vocab), False)
    # fidelity over the decisive columns only: a column set by design (constant labels) is not a fidelity loss
    real_d = text_descriptors(comp.real, comp.text, vocab)
    syn_d = text_descriptors(comp.synthetic, comp.text, vocab)
    fid = fidelity(
        real_d,
        syn_d,
        [c for c in spec.drift if c not in comp.categorical],
        [c for c in spec.drift if c in comp.categorical],
    )
    checks["shape_score"] = check(
        fid["shape_score"], True, g.shape_drop, g.shape_fail, higher_is_worse=False, by_column=fid["shape_by_column"]
    )
    checks["pair_trend_score"] = check(
        fid["pair_trend_score"],
        fid["pair_trend_score"] is not None,
        g.pair_trend_drop,
        g.pair_trend_fail,
        higher_is_worse=False,
    )
    checks.update(privacy_checks(row, synthetic, inputs, g, rng, encoder, comp, extra))
    if row.table == "items":
        checks.update(enrichment_checks(synthetic, vocab))
    entry = {
        "decision": decide(checks),
        "checks": checks,
        "rows": int(len(synthetic)),
        "sampled_rows": int(len(comp.synthetic)),
        "reference_rows": int(len(real_all)),
        "notes": spec.notes,
        **({"text_quality": text_quality} if text_quality else {}),
    }
    return entry, snapshot


def privacy_checks(
    row: GeneratorRow,
    synthetic: pd.DataFrame,
    inputs: GateInputs,
    g: GateParams,
    rng: np.random.Generator,
    encoder: EncoderCache | None,
    comp: Comparison,
    profiles: pd.DataFrame | None,
) -> dict[str, dict]:
    """Copied rows, identical histories / profiles, distance to closest real record."""
    spec = row.gate
    out: dict[str, dict] = {}
    if row.table == "queries":
        real = inputs.queries.assign(q=normalise_query(inputs.queries["query"]), r=inputs.queries["relevance"].round(4))
        syn = synthetic.assign(q=normalise_query(synthetic["query"]), r=synthetic["relevance"].round(4))
        out["copied_rows"] = check(
            copied_row_share(real, syn, ["q", "item_id", "r"]),
            spec.copies,
            fail=g.max_copied_rows,
            key="(query, item_id, relevance)",
        )
        if encoder is not None:
            dcr = dcr_vectors(
                encoder.encode(comp.real["query"].tolist()),
                encoder.encode(comp.synthetic["query"].tolist()),
                rng,
                metric="cosine",
            )
            out["dcr_ratio"] = check(
                dcr.pop("dcr_ratio"),
                spec.dcr,
                fail=g.min_dcr_ratio,
                higher_is_worse=False,
                space="MiniLM query embeddings (cosine)",
                **dcr,
            )
    elif row.table == "interactions":
        real = inputs.interactions
        out["copied_rows"] = check(
            copied_row_share(real, synthetic, ["user_id", "item_id", "ts"]),
            spec.copies,
            fail=g.max_copied_rows,
            key="(user_id, item_id, ts)",
        )
        out["identical_histories"] = check(
            identical_history_share(real, synthetic), spec.identity, fail=g.max_identical_share
        )
        key = synthetic["sequence_id"] if "sequence_id" in synthetic.columns else synthetic["user_id"]
        syn_sets = synthetic.groupby(key.astype(str).to_numpy())["item_id"].agg(lambda s: frozenset(s.astype(str)))
        syn_sets = syn_sets.sample(n=min(g.dcr_rows, len(syn_sets)), random_state=0)
        real_sets = real.groupby("user_id", observed=True)["item_id"].agg(lambda s: frozenset(s.astype(str)))
        dcr = dcr_sets(list(real_sets), list(syn_sets), rng)
        out["dcr_ratio"] = check(
            dcr.pop("dcr_ratio"),
            spec.dcr,
            fail=g.min_dcr_ratio,
            higher_is_worse=False,
            space="item sets (Jaccard distance)",
            **dcr,
        )
        if profiles is not None:
            out.update(profile_checks(profiles, inputs.users, g, rng))
    else:
        out["copied_rows"] = check(0.0, False, key="items annotate the real catalogue; copies expected")
    return out


def profile_checks(synthetic: pd.DataFrame, real: pd.DataFrame, g: GateParams, rng: np.random.Generator) -> dict:
    """synthetic_users profiles vs real users: identical share, closeness, and SDMetrics fidelity."""
    require_columns(synthetic, PROFILE, "synthetic profiles (users.parquet)")
    real_v = real[PROFILE].astype(float).to_numpy()
    syn_v = synthetic[PROFILE].astype(float).to_numpy()
    real_keys = {tuple(np.round(r, 6)) for r in real_v}
    identical = float(np.mean([tuple(np.round(s, 6)) in real_keys for s in syn_v]))
    mean, std = real_v.mean(axis=0), real_v.std(axis=0) + 1e-9
    dcr = dcr_vectors((real_v - mean) / std, (syn_v[: g.dcr_rows] - mean) / std, rng)
    fid = fidelity(real.reset_index(drop=True), synthetic.reset_index(drop=True), PROFILE, [])
    return {
        "identical_profiles": check(identical, True, fail=g.max_identical_share),
        "profile_dcr_ratio": check(
            dcr.pop("dcr_ratio"),
            True,
            fail=g.min_dcr_ratio,
            higher_is_worse=False,
            space="standardised profile vectors (euclidean)",
            **dcr,
        ),
        "profile_shape_score": check(
            fid["shape_score"],
            True,
            g.shape_drop,
            g.shape_fail,
            higher_is_worse=False,
            by_column=fid["shape_by_column"],
        ),
        "profile_pair_trend_score": check(
            fid["pair_trend_score"],
            fid["pair_trend_score"] is not None,
            g.pair_trend_drop,
            g.pair_trend_fail,
            higher_is_worse=False,
        ),
    }


def enrichment_checks(items: pd.DataFrame, vocab: set[str]) -> dict[str, dict]:
    """What item_enrichment adds: how many items got a category / description and how balanced categories are."""
    category, description = items["category"].astype(str), items["description"].astype(str)
    top = category[category != ""].value_counts(normalize=True)
    return {
        "category_filled": check(float((category != "").mean()), False),
        "description_filled": check(float((description != "").mean()), False),
        "largest_category_share": check(float(top.iloc[0]) if len(top) else None, False, categories=int(len(top))),
        "description_oov_share": check(
            float(oov_share(description.tolist(), vocab).mean()),
            False,
            note="words of the description unseen in catalogue titles",
        ),
    }


# ------------------------------------------------------------------------------------------- stage
def load_inputs(params: Params, row: GeneratorRow, splits: Path, canonical: Path) -> GateInputs:
    """Read the real counterpart of the generator's table kind: splits/<task>/train, canonical/<task>/items."""
    inputs = GateInputs(items=read_table(canonical / row.task / "items.parquet", "items"))
    if row.table == "queries":
        inputs.queries = read_table(splits / row.task / "train.parquet", "queries")
        inputs.vocab["query"] = vocabulary(inputs.queries["query"].astype(str).unique())
        return inputs
    inputs.vocab["title"] = vocabulary(inputs.items["title"].astype(str).unique())
    if row.table == "interactions":
        train = read_table(splits / row.task / "train.parquet", "interactions")
        inputs.interactions = safe_history(train, valid_cutoff(params))
        inputs.users = user_profiles(inputs.interactions)
    return inputs


def read_synthetic(name: str, row: GeneratorRow, folder: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, dict | None]:
    """The generator's rows (`<folder>/rows.parquet`), its profile table (synthetic_users) and its manifest
    (None when the folder has no manifest.json)."""
    frame = read_table(folder / "rows.parquet", row.table)
    profiles = None
    if name in PROFILE_TABLES:
        path = folder / PROFILE_TABLES[name]
        if not path.exists():
            raise ShopError(f"{path}: file not found ({name} writes it beside its rows)")
        profiles = pd.read_parquet(path)
    path, manifest = folder / MANIFEST_FILE, None
    if path.exists():
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ShopError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    return frame, profiles, manifest


def summary_html(name: str, entry: dict) -> str:
    """A table of the decision and every check, put above the Evidently report."""
    colour = {"pass": "#1b7f3b", "drop": "#b36b00", "fail": "#b00020", "info": "#555"}
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{c['value']}</td><td style='color:{colour[c['status']]}'>{c['status']}"
        f"</td><td>{c.get('drop_threshold', '')}</td><td>{c.get('fail_threshold', '')}</td></tr>"
        for k, c in entry["checks"].items()
    )
    return (
        f"<div style='font-family:sans-serif;margin:16px'><h2>shopaug gate: {html.escape(name)} — "
        f"<span style='color:{colour[entry['decision']]}'>{entry['decision'].upper()}</span></h2>"
        f"<p>{entry['rows']} synthetic rows; {entry['sampled_rows']} sampled per side for the report below. "
        f"{html.escape(entry['notes'])}</p><table border='1' cellpadding='4' style='border-collapse:collapse'>"
        "<tr><th>check</th><th>value</th><th>status</th><th>drop at</th><th>fail at</th></tr>"
        f"{rows}</table>{text_quality_html(entry.get('text_quality'))}</div>"
    )


def run_gate(
    params: Params,
    name: str,
    synthetic_dir: Path,
    splits: Path,
    canonical: Path,
    out: Path,
    report: Path,
    embeddings: bool = True,
) -> dict:
    """Gate one generator; write its JSON entry and HTML report; return the entry."""
    row = generator_row(params, name)
    inputs = load_inputs(params, row, splits, canonical)
    encoder = None
    if embeddings:
        e = params.encoder
        encoder = EncoderCache(lambda: TextEncoder(e.model, min(e.max_length, 32), e.batch_size))
    started = time.perf_counter()
    synthetic, profiles, manifest = read_synthetic(name, row, synthetic_dir)
    entry, snapshot = gate_generator(name, synthetic, inputs, params, encoder, profiles, manifest)
    # no wall-clock time in the entry: fuse depends on it (seconds go to the log)
    entry["report"] = _shown(report)
    log.info("gate: %s -> %s (%.1fs)", name, entry["decision"], time.perf_counter() - started)
    page = snapshot.get_html_str(as_iframe=False)
    page = page.replace("<body>", "<body>" + summary_html(name, entry), 1)
    report.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(report) as tmp:
        tmp.write_text(page)
    write_json(entry, out)
    return entry


def _shown(path: Path) -> str:
    """`path` relative to the repository root when inside it (the same string on every checkout)."""
    root = repo_root()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


@app.command()
def main(
    generator: Annotated[str, typer.Option(help="the generator to gate (a key of params `generators`)")],
    params: cli.ParamsOption = cli.PARAMS,
    synthetic: Annotated[
        Path | None, typer.Option(help="its folder (rows.parquet); default data/synthetic/<generator>")
    ] = None,
    splits: Annotated[Path, typer.Option(help="real splits (<task>/train.parquet)")] = Path("data/splits"),
    canonical: Annotated[Path, typer.Option(help="canonical tables (<task>/items.parquet)")] = Path("data/canonical"),
    out: Annotated[
        Path | None, typer.Option(help="decision and checks (JSON); default metrics/gate/<generator>.json")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="HTML report; default reports/gate/<generator>.html")] = None,
) -> None:
    """Gate one generator's synthetic data against its real counterpart; exit 2 if it fails."""
    conf = cli.load(params)
    synthetic = cli.resolve(synthetic or Path("data/synthetic") / generator)
    out = cli.resolve(out or Path("metrics/gate") / f"{generator}.json")
    report = cli.resolve(report or Path("reports/gate") / f"{generator}.html")
    task = generator_row(conf, generator).task
    if task not in tasks_on(conf.data):
        write_json({"generator": generator, "task": task, "decision": "off", "checks": {}}, out)
        with atomic_path(report) as tmp:
            tmp.write_text(f"<html><body><p>{generator}: {off_reason(task)}</p></body></html>\n")
        log.info("gate: %s: %s", generator, off_reason(task))
        return
    entry = run_gate(conf, generator, synthetic, cli.resolve(splits), cli.resolve(canonical), out, report)
    bad = [k for k, c in entry["checks"].items() if c["status"] in ("drop", "fail")]
    line = f"gate: {generator}: {entry['decision']}" + (f" ({', '.join(bad)})" if bad else "")
    (log.warning if entry["decision"] != "pass" else log.info)(line)
    if entry["decision"] == "fail":
        detail = ", ".join(f"{k}={c['value']}" for k, c in entry["checks"].items() if c["status"] == "fail")
        raise ShopError(f"synthetic-data gate failed for {generator} ({detail}); see {report}")


if __name__ == "__main__":
    cli.run(app)
