"""The real-vs-synthetic gate: per generator an Evidently report, fidelity and privacy checks, and a decision.

For every generator in `monitoring.gate.generators` its table under data/synthetic is compared with its real
counterpart (search: training queries; retail: training purchases before the validation cutoff; items: the
canonical retail catalogue). Checks and thresholds (params `monitoring.gate`):

- column drift (Evidently ValueDrift: normed Wasserstein for numbers, Jensen-Shannon for categories) on row
  features and on text descriptors (characters, words, out-of-vocabulary share);
- embedding drift (Evidently EmbeddingsDrift, classifier ROC AUC) on MiniLM embeddings of the text;
- fidelity (SDMetrics column shapes and column pair trends);
- privacy: rows copied from real rows, histories / profiles identical to a real one (must be 0), and the
  distance to the closest real record compared with real-to-real distances.

Decision per generator: `fail` if a decisive check crosses its fail threshold or a privacy limit, `drop` if one
crosses its drop threshold (fuse leaves the generator out, with a warning), else `pass`. Writes
`metrics/gate.json` ({generator: {"decision", "checks", ...}}) and `reports/gate/<generator>.html`; exits
non-zero with one line when any generator fails.
"""

import html
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from core import cli
from core.errors import ShopError
from core.io import atomic_path, read_table, write_json
from core.params import GateParams, Params, load_params
from core.paths import repo_root
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
from pipelines.augment.retail_history import safe_history, valid_cutoff

log = logging.getLogger(__name__)
app = typer.Typer(add_completion=False, help=__doc__)
PROFILE = ["n_baskets", "basket_size", "log_unit_price", "log_quantity", "first_day", "span_days"]


@dataclass(frozen=True)
class Spec:
    """What is compared for one generator and which checks decide (others are reported as `info`)."""

    kind: str  # search | retail | items
    decisive_drift: tuple[str, ...]
    copy_decisive: bool = True
    dcr_decisive: bool = False
    text_decisive: bool = True
    identity_decisive: bool = True  # histories identical to a real one: privacy limit (must be 0)
    notes: str = ""


SPECS = {
    "synthetic_queries": Spec(
        "search",
        ("query_chars", "query_words"),
        notes="relevance is set by augment.synthetic_queries.relevance: reported, not decisive",
    ),
    "query_rewrites": Spec("search", ("relevance", "query_chars", "query_words")),
    "hard_negatives": Spec(
        "search",
        ("query_chars", "query_words"),
        notes="relevance shifts by design (smoothing, negatives): reported, not decisive",
    ),
    "cf_interactions": Spec(
        "retail",
        ("quantity", "value", "item_popularity", "weekday"),
        notes="extras join a real basket: basket_size / hour reported, not decisive",
    ),
    "sequence_aug": Spec(
        "retail",
        ("quantity", "value", "item_popularity", "basket_size", "hour", "weekday"),
        copy_decisive=False,
        identity_decisive=False,
        notes="views of a user's own history reuse real rows by design: copied rows and views equal "
        "to the user's whole history are reported (fuse removes the latter), not decisive",
    ),
    "synthetic_users": Spec(
        "retail",
        ("quantity", "value", "item_popularity", "basket_size", "hour", "weekday"),
        dcr_decisive=True,
        notes="new people: profile identity and closeness decide",
    ),
    "item_enrichment": Spec(
        "items",
        ("price", "title_chars", "title_words"),
        notes="real title/price must be unchanged; new category/description reported",
    ),
}


@dataclass
class GateInputs:
    """Real counterparts, read once and shared by every generator of a kind."""

    search: pd.DataFrame | None = None
    retail: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    vocab: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- frames
def normalise_query(text: pd.Series) -> pd.Series:
    return text.astype(str).str.lower().str.split().str.join(" ")


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
def gate_generator(
    name: str,
    synthetic: pd.DataFrame,
    inputs: GateInputs,
    g: GateParams,
    seed: int,
    encoder: EncoderCache | None,
    extra: pd.DataFrame | None = None,
) -> tuple[dict, object]:
    """Return ({"decision", "checks", ...}, Evidently snapshot) for generator `name`'s synthetic rows."""
    from evidently.tests import lte

    spec = SPECS.get(name)
    if spec is None:
        raise ShopError(f"monitoring.gate.generators: unknown generator '{name}'; expected one of {sorted(SPECS)}")
    label = f"data/synthetic/{name}.parquet"
    rng = np.random.default_rng(seed)
    if spec.kind == "search":
        require_columns(synthetic, ["query", "item_id", "relevance"], label)
        real_all, vocab = inputs.search, inputs.vocab["query"]
        comp = Comparison(
            sample(real_all, g.sample_rows, seed),
            sample(synthetic, g.sample_rows, seed),
            numeric=["relevance"],
            text="query",
        )
        text_col = "query"
    elif spec.kind == "retail":
        require_columns(synthetic, ["user_id", "item_id", "ts", "quantity", "value", "basket_id"], label)
        real_all, vocab = inputs.retail, inputs.vocab["title"]
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
    tests = {f"drift:{c}": [lte(g.drift_drop)] for c in spec.decisive_drift}
    if spec.text_decisive:
        tests["embedding_drift"] = [lte(g.embedding_drop)]
        tests["oov"] = [lte(g.oov_drop)]
    snapshot, values = evidently_compare(comp, encoder, tests, vocab)

    checks: dict[str, dict] = {}
    drift = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("drift:")}
    decisive = {c: drift[c] for c in spec.decisive_drift if c in drift}
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
            spec.text_decisive,
            g.embedding_drop,
            g.embedding_fail,
            method="ROC AUC, Evidently ModelDriftMethod",
        )
    syn_text = comp.synthetic[text_col].astype(str).tolist()
    checks["oov_share"] = check(float(oov_share(syn_text, vocab).mean()), spec.text_decisive, g.oov_drop, g.oov_fail)
    checks["vocabulary_overlap"] = check(vocabulary_overlap(syn_text, vocab), False)
    # fidelity over the decisive columns only: a column set by design (constant labels) is not a fidelity loss
    real_d = text_descriptors(comp.real, comp.text, vocab)
    syn_d = text_descriptors(comp.synthetic, comp.text, vocab)
    fid = fidelity(
        real_d,
        syn_d,
        [c for c in spec.decisive_drift if c not in comp.categorical],
        [c for c in spec.decisive_drift if c in comp.categorical],
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
    checks.update(privacy_checks(name, spec, synthetic, inputs, g, rng, encoder, comp, extra))
    if spec.kind == "items":
        checks.update(enrichment_checks(synthetic, vocab))
    entry = {
        "decision": decide(checks),
        "checks": checks,
        "rows": int(len(synthetic)),
        "sampled_rows": int(len(comp.synthetic)),
        "reference_rows": int(len(real_all)),
        "notes": spec.notes,
    }
    return entry, snapshot


def privacy_checks(
    name: str,
    spec: Spec,
    synthetic: pd.DataFrame,
    inputs: GateInputs,
    g: GateParams,
    rng: np.random.Generator,
    encoder: EncoderCache | None,
    comp: Comparison,
    profiles: pd.DataFrame | None,
) -> dict[str, dict]:
    """Copied rows, identical histories / profiles, distance to closest real record."""
    out: dict[str, dict] = {}
    if spec.kind == "search":
        real = inputs.search.assign(q=normalise_query(inputs.search["query"]), r=inputs.search["relevance"].round(4))
        syn = synthetic.assign(q=normalise_query(synthetic["query"]), r=synthetic["relevance"].round(4))
        out["copied_rows"] = check(
            copied_row_share(real, syn, ["q", "item_id", "r"]),
            spec.copy_decisive,
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
                spec.dcr_decisive,
                fail=g.min_dcr_ratio,
                higher_is_worse=False,
                space="MiniLM query embeddings (cosine)",
                **dcr,
            )
    elif spec.kind == "retail":
        real = inputs.retail
        out["copied_rows"] = check(
            copied_row_share(real, synthetic, ["user_id", "item_id", "ts"]),
            spec.copy_decisive,
            fail=g.max_copied_rows,
            key="(user_id, item_id, ts)",
        )
        out["identical_histories"] = check(
            identical_history_share(real, synthetic), spec.identity_decisive, fail=g.max_identical_share
        )
        key = synthetic["sequence_id"] if "sequence_id" in synthetic.columns else synthetic["user_id"]
        syn_sets = synthetic.groupby(key.astype(str).to_numpy())["item_id"].agg(lambda s: frozenset(s.astype(str)))
        syn_sets = syn_sets.sample(n=min(g.dcr_rows, len(syn_sets)), random_state=0)
        real_sets = real.groupby("user_id", observed=True)["item_id"].agg(lambda s: frozenset(s.astype(str)))
        dcr = dcr_sets(list(real_sets), list(syn_sets), rng)
        out["dcr_ratio"] = check(
            dcr.pop("dcr_ratio"),
            spec.dcr_decisive,
            fail=g.min_dcr_ratio,
            higher_is_worse=False,
            space="item sets (Jaccard distance)",
            **dcr,
        )
        if profiles is not None:
            out.update(profile_checks(profiles, inputs.users, g, rng))
    else:
        real = inputs.items
        out["copied_rows"] = check(0.0, False, key="items annotate the real catalogue; copies expected")
    return out


def profile_checks(synthetic: pd.DataFrame, real: pd.DataFrame, g: GateParams, rng: np.random.Generator) -> dict:
    """synthetic_users profiles vs real users: identical share, closeness, and SDMetrics fidelity."""
    require_columns(synthetic, PROFILE, "data/synthetic/synthetic_users.users.parquet")
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
def load_inputs(params: Params, splits: Path, canonical: Path, names: list[str]) -> GateInputs:
    """Read the real counterparts the requested generators need."""
    inputs = GateInputs()
    kinds = {SPECS[n].kind for n in names if n in SPECS}
    if "search" in kinds:
        inputs.search = read_table(splits / "search" / "train.parquet", "queries")
        inputs.vocab["query"] = vocabulary(inputs.search["query"].astype(str).unique())
    if kinds & {"retail", "items"}:
        inputs.items = read_table(canonical / "retail" / "items.parquet", "items")
        inputs.vocab["title"] = vocabulary(inputs.items["title"].astype(str).unique())
    if "retail" in kinds:
        train = read_table(splits / "retail" / "train.parquet", "interactions")
        inputs.retail = safe_history(train, valid_cutoff(params))
        inputs.users = user_profiles(inputs.retail)
    return inputs


def read_synthetic(name: str, synthetic_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The generator's table (and synthetic_users' profile table)."""
    table = {"search": "queries", "retail": "interactions", "items": "items"}[SPECS[name].kind]
    frame = read_table(synthetic_dir / f"{name}.parquet", table)
    profiles = None
    if name == "synthetic_users":
        path = synthetic_dir / "synthetic_users.users.parquet"
        if not path.exists():
            raise ShopError(f"{path}: file not found (synthetic_users writes it beside its interactions)")
        profiles = pd.read_parquet(path)
    return frame, profiles


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
        f"{rows}</table></div>"
    )


def run_gate(
    params: Params,
    synthetic_dir: Path,
    splits: Path,
    canonical: Path,
    out: Path,
    reports: Path,
    names: list[str] | None = None,
    embeddings: bool = True,
) -> dict:
    """Gate every generator; write the JSON metrics and HTML reports; return the gate dict."""
    g = params.monitoring.gate
    names = names or list(g.generators)
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise ShopError(f"monitoring.gate.generators: unknown generator(s) {unknown}; expected {sorted(SPECS)}")
    inputs = load_inputs(params, splits, canonical, names)
    encoder = None
    if embeddings:
        from core.encoder import TextEncoder

        e = params.encoder
        encoder = EncoderCache(lambda: TextEncoder(e.model, min(e.max_length, 32), e.batch_size))
    result, snapshots = {}, {}
    for name in names:
        started = time.perf_counter()
        synthetic, profiles = read_synthetic(name, synthetic_dir)
        entry, snapshot = gate_generator(name, synthetic, inputs, g, params.seed, encoder, profiles)
        entry["seconds"] = round(time.perf_counter() - started, 2)
        entry["report"] = str(reports / f"{name}.html")
        result[name], snapshots[name] = entry, snapshot
        log.info("gate: %s -> %s (%.1fs)", name, entry["decision"], entry["seconds"])
    reports.mkdir(parents=True, exist_ok=True)
    for name, snapshot in snapshots.items():
        page = snapshot.get_html_str(as_iframe=False)
        page = page.replace("<body>", "<body>" + summary_html(name, result[name]), 1)
        with atomic_path(reports / f"{name}.html") as tmp:
            tmp.write_text(page)
    write_json(result, out)
    return result


@app.command()
def main(
    params_file: Annotated[Path, typer.Option(help="params.yaml to read")] = Path("params.yaml"),
    synthetic_dir: Annotated[Path, typer.Option(help="generator outputs")] = Path("data/synthetic"),
    splits: Annotated[Path, typer.Option(help="real splits (search/train, retail/train)")] = Path("data/splits"),
    canonical: Annotated[Path, typer.Option(help="canonical tables (retail items)")] = Path("data/canonical"),
    out: Annotated[Path, typer.Option(help="gate decisions and checks (JSON)")] = Path("metrics/gate.json"),
    reports: Annotated[Path, typer.Option(help="folder for <generator>.html")] = Path("reports/gate"),
    generator: Annotated[list[str] | None, typer.Option(help="only these generators (repeatable)")] = None,
) -> None:
    """Gate each generator's synthetic data against its real counterpart; exit non-zero if one fails."""
    root = repo_root()
    params = load_params(params_file if params_file.is_absolute() else root / params_file)
    paths = [p if p.is_absolute() else root / p for p in (synthetic_dir, splits, canonical, out, reports)]
    result = run_gate(params, *paths, names=generator or None)
    for name, entry in result.items():
        bad = [k for k, c in entry["checks"].items() if c["status"] in ("drop", "fail")]
        line = f"gate: {name}: {entry['decision']}" + (f" ({', '.join(bad)})" if bad else "")
        (log.warning if entry["decision"] != "pass" else log.info)(line)
    failed = {n: e for n, e in result.items() if e["decision"] == "fail"}
    if failed:
        detail = "; ".join(
            f"{n}: " + ", ".join(f"{k}={c['value']}" for k, c in e["checks"].items() if c["status"] == "fail")
            for n, e in failed.items()
        )
        raise ShopError(f"synthetic-data gate failed for {sorted(failed)} ({detail}); see {paths[4]}")


if __name__ == "__main__":
    cli.run(app)
