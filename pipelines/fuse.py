"""Stage `fuse`: training sets = real rows + synthetic rows of the generators the gate passed, weighted, capped,
deduplicated.

Per task it writes `data/fused/<task>/<variant>/` (`train.parquet`, `items.parquet`, `manifest.json`) and
`data/fused/<task>/summary.json`: `noaug` (real only), `aug` (real + every active generator), `synthetic_only`
(query tasks) and `minus_<generator>` (aug without one generator, for ablation). Generators, their task, table
and weight come from the registry (params.yaml `generators`); gate decisions from `metrics/gate/<generator>.json`.
Every row keeps its provenance (`is_synthetic`, `source`, `parent_id`) and gets a `weight` (1 for real rows, the
generator's weight otherwise). `augment.enabled: false` gives the no-augmentation twin: `aug` = `noaug` and no
ablation variants. Files hold no timestamps: unchanged inputs give identical outputs.
"""

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from core import cli
from core.errors import ShopError
from core.io import atomic_dir, read_table, write_json
from core.params import FuseParams, Params
from core.schema import validate_table
from core.tasks import TASKS, off_reason, tasks_on, write_task_off
from pipelines.augment.manifest import ROWS_FILE, file_sha256, shown
from pipelines.augment.retail_history import valid_cutoff
from pipelines.expansion import expand_items

log = logging.getLogger(__name__)
app = cli.stage_app(__doc__)

REPLACES_PARENT = {"hard_negatives"}  # its rows on a real (query, item) pair are smoothed labels for that pair


@dataclass
class FuseStats:
    """What happened to one generator's rows on their way into a variant."""

    rows_in: int = 0
    duplicates: int = 0
    leaked: int = 0
    capped: int = 0
    replaced_real: int = 0
    rows_out: int = 0


@dataclass
class Cleaned:
    """Synthetic rows of each generator after leakage and duplicate checks against the real rows."""

    real: pd.DataFrame
    parts: dict[str, pd.DataFrame]
    stats: dict[str, FuseStats]
    replaced: dict[str, set] = field(default_factory=dict)  # real row labels a generator's rows replace
    key: list[str] = field(default_factory=list)  # columns identifying a row across generators
    group: str = "basket_id"  # unit the cap keeps or drops whole
    relabels: bool = False  # rows may carry `relabels_real` (smoothed labels of real query pairs)


def read_gate(folder: Path, generators: list[str], use_gate: bool) -> dict[str, str]:
    """Return {generator: decision} from `folder/<generator>.json`; refuse a missing folder (when used) or a
    `fail` decision. A generator without a file is left out of the result (fuse warns and uses it ungated)."""
    if not use_gate:
        return {}
    if not folder.is_dir():
        raise ShopError(f"{folder}: gate folder not found; run stage gate first (or set fuse.use_gate: false)")
    decisions = {}
    for generator in generators:
        path = folder / f"{generator}.json"
        if not path.is_file():
            continue
        try:
            entry = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ShopError(f"{path}: not valid JSON ({exc.msg})") from None
        decision = entry.get("decision") if isinstance(entry, dict) else None
        if decision not in ("pass", "drop", "fail"):
            raise ShopError(f"{path}: decision must be pass, drop or fail, got {decision!r}")
        decisions[generator] = decision
    failed = sorted(g for g, d in decisions.items() if d == "fail")
    if failed:
        raise ShopError(
            f"{folder}: generator(s) {failed} failed the synthetic-data gate; "
            "fix them or set their generators.<name>.weight to 0"
        )
    return decisions


def task_generators(task: str, params: Params) -> list[str]:
    """The registry's generators of `task`, in registry order."""
    return [name for name, row in params.generators.items() if row.task == task]


def active_generators(task: str, params: Params, gate: dict[str, str]) -> list[str]:
    """Generators of `task` that are on (augment.enabled, weight > 0) and not dropped by the gate."""
    if not params.augment.enabled:
        return []
    active = []
    for generator in task_generators(task, params):
        if params.generators[generator].weight <= 0:
            continue
        if gate.get(generator) == "drop":
            log.warning("fuse: gate dropped generator %s; it is left out of the %s training sets", generator, task)
            continue
        if params.fuse.use_gate and generator not in gate:
            log.warning("fuse: generator %s has no gate decision; it is used ungated", generator)
        active.append(generator)
    return active


def _real(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(weight=1.0)


def _cap(
    parts: dict[str, pd.DataFrame],
    n_real: int,
    share: float,
    group_col: str,
    seed: int,
    stats: dict[str, FuseStats],
) -> dict[str, pd.DataFrame]:
    """Keep whole groups of synthetic rows in a seeded random order until synthetic rows reach `share` of all
    rows.

    Each group draws its priority from a stream fixed per generator, so every generator keeps about the same
    fraction of its rows. Rows that replace a real row (`relabels_real`) are kept and not counted.
    """
    extra = {g: p[~p["relabels_real"]] if "relabels_real" in p.columns else p for g, p in parts.items()}
    n_base = n_real + sum(len(parts[g]) - len(extra[g]) for g in parts)
    total = sum(len(p) for p in extra.values())
    allowed = int(np.floor(share / (1 - share) * n_base))
    if total <= allowed:
        return parts
    groups = []
    for generator, part in extra.items():
        sizes = part[group_col].astype(str).value_counts(sort=False).sort_index()
        salt = sum(generator.encode())  # the same stream whichever other generators are fused
        priority = np.random.default_rng([seed, salt]).random(len(sizes))
        groups.append(
            pd.DataFrame({"generator": generator, "group": sizes.index, "size": sizes.to_numpy(), "priority": priority})
        )
    ranked = pd.concat(groups, ignore_index=True).sort_values(["priority", "generator", "group"], kind="stable")
    keep, used = set(), 0
    for generator, group, size in zip(ranked["generator"], ranked["group"], ranked["size"], strict=True):
        if used + size <= allowed:
            keep.add((generator, group))
            used += size
    out = {}
    for generator, part in parts.items():
        kept = part[group_col].astype(str).map(lambda g, gen=generator: (gen, g) in keep)
        if "relabels_real" in part.columns:
            kept |= part["relabels_real"]
        out[generator] = part[kept.to_numpy(dtype=bool)]
        stats[generator].capped = len(part) - len(out[generator])
    return out


def assemble(
    cleaned: Cleaned,
    generators: list[str],
    fp: FuseParams,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, FuseStats]]:
    """Return real + the cleaned rows of `generators` (cross-generator duplicates dropped, cap applied),
    stats."""
    stats = {g: FuseStats(**{**vars(cleaned.stats[g]), "capped": 0}) for g in generators}
    dropped = set().union(*(cleaned.replaced.get(g, set()) for g in generators)) if generators else set()
    real = cleaned.real.drop(index=sorted(dropped))
    parts, seen = {}, None
    for generator in generators:
        part = cleaned.parts[generator]
        keys = pd.MultiIndex.from_frame(part[cleaned.key].astype(str))
        dup = keys.duplicated() | (keys.isin(seen) if seen is not None else False)
        seen = keys if seen is None else seen.append(keys)
        stats[generator].duplicates += int(dup.sum())
        parts[generator] = part[~dup]
    parts = _cap(parts, len(real), fp.max_synthetic_share, cleaned.group, seed, stats)
    for generator, part in parts.items():
        stats[generator].rows_out = len(part)
    return pd.concat([real, *parts.values()], ignore_index=True), stats


def clean_interactions(
    real: pd.DataFrame, synthetic: dict[str, pd.DataFrame], weights: dict[str, float], before: pd.Timestamp
) -> Cleaned:
    """Check each generator's interactions against the real rows; weight them.

    Refuses synthetic rows at or after `before` (the validation cutoff): they could carry validation targets.
    Removed as duplicates: rows equal to a real row on (user, sequence, item, ts); views whose rows equal the
    user's whole real history; users not in the real data whose item set equals a real user's.
    """
    real = _real(real).assign(sequence_id=None)
    real_keys = pd.MultiIndex.from_arrays(
        [
            real["user_id"].astype(str),
            real["user_id"].astype(str),
            real["item_id"].astype(str),
            real["ts"].astype(str),
        ]
    )
    real_users = real[real["user_id"].notna()]
    histories = {
        u: sorted(zip(g["ts"], g["item_id"].astype(str), strict=True))
        for u, g in real_users.groupby("user_id", observed=True)
    }
    item_sets = {frozenset(h[1] for h in hist) for hist in histories.values()}
    parts, stats = {}, {}
    for generator, df in synthetic.items():
        late = df["ts"] >= before
        if late.any():
            raise ShopError(
                f"synthetic {generator} rows: {int(late.sum())} row(s) at or after the "
                f"validation cutoff {before}; synthetic rows may only come from earlier history"
            )
        user = df["user_id"].astype(str)
        seq = df["sequence_id"].astype(str) if "sequence_id" in df.columns else user
        df = df.assign(sequence_id=seq.where(seq != user, None), weight=float(weights[generator]))
        keys = pd.MultiIndex.from_arrays([user, seq, df["item_id"].astype(str), df["ts"].astype(str)])
        dup = keys.isin(real_keys)
        # whole views / synthetic users that merely copy a real history carry no new information
        copies = set()
        for (u, sequence), group in df[~dup].groupby([user[~dup], seq[~dup]], observed=True):
            rows = sorted(zip(group["ts"], group["item_id"].astype(str), strict=True))
            if u in histories and sequence != u and rows == histories[u]:
                copies.add(sequence)
            elif u not in histories and frozenset(r[1] for r in rows) in item_sets:
                copies.add(sequence)
        dup |= seq.isin(copies).to_numpy()
        stats[generator] = FuseStats(rows_in=len(df), duplicates=int(dup.sum()))
        parts[generator] = df[~dup]
    return Cleaned(real, parts, stats, key=["user_id", "sequence_id", "item_id", "ts"], group="basket_id")


def fuse_interactions(
    real: pd.DataFrame,
    synthetic: dict[str, pd.DataFrame],
    weights: dict[str, float],
    fp: FuseParams,
    seed: int,
    before: pd.Timestamp,
) -> tuple[pd.DataFrame, dict[str, FuseStats]]:
    """Return real + synthetic interactions (weighted, deduplicated, capped) and per-generator stats."""
    return assemble(clean_interactions(real, synthetic, weights, before), list(synthetic), fp, seed)


def normalise_query(text: pd.Series) -> pd.Series:
    """Lower-case, collapse whitespace: the form queries are compared in for dedup and leakage."""
    return text.astype(str).str.lower().str.split().str.join(" ")


def clean_queries(
    real: pd.DataFrame, synthetic: dict[str, pd.DataFrame], weights: dict[str, float], held_out_queries: set[str]
) -> Cleaned:
    """Check each generator's (query, item) pairs against the real pairs and the held-out queries; weight
    them.

    Synthetic rows whose query text is a validation/test query are removed (leakage guard). A synthetic pair
    equal to a real pair is a duplicate, except for label-smoothing generators, whose row replaces the real
    one.
    """
    real = _real(real)
    real_pairs = pd.Series(
        real.index,
        index=pd.MultiIndex.from_arrays([normalise_query(real["query"]), real["item_id"].astype(str)]),
    )
    real_pairs = real_pairs[~real_pairs.index.duplicated()]
    parts, stats, replaced = {}, {}, {}
    for generator, df in synthetic.items():
        norm = normalise_query(df["query"])
        df = df.assign(query_norm=norm.to_numpy(), weight=float(weights[generator]))
        leaked = norm.isin(held_out_queries).to_numpy()
        keys = pd.MultiIndex.from_arrays([norm, df["item_id"].astype(str)])
        on_real = keys.isin(real_pairs.index) & ~leaked
        stats[generator] = FuseStats(rows_in=len(df), leaked=int(leaked.sum()))
        if generator in REPLACES_PARENT:
            replaced[generator] = set(real_pairs.reindex(keys[on_real]).astype(int))
            stats[generator].replaced_real = len(replaced[generator])
            df = df.assign(relabels_real=on_real)
            on_real = np.zeros(len(df), dtype=bool)
        stats[generator].duplicates = int(on_real.sum())
        parts[generator] = df[~(on_real | leaked)]
    return Cleaned(real, parts, stats, replaced, key=["query_norm", "item_id"], group="query_id", relabels=True)


def fuse_queries(
    real: pd.DataFrame,
    synthetic: dict[str, pd.DataFrame],
    weights: dict[str, float],
    fp: FuseParams,
    seed: int,
    held_out_queries: set[str],
) -> tuple[pd.DataFrame, dict[str, FuseStats]]:
    """Return real + synthetic (query, item) pairs (weighted, deduplicated, capped) and per-generator
    stats."""
    frame, stats = assemble(clean_queries(real, synthetic, weights, held_out_queries), list(synthetic), fp, seed)
    return frame.drop(columns=["query_norm"], errors="ignore"), stats


def build_variants(
    cleaned: Cleaned,
    active: list[str],
    fp: FuseParams,
    seed: int,
) -> tuple[dict[str, pd.DataFrame], dict]:
    """Return {variant: frame} and {variant: per-generator stats}: noaug, aug, synthetic_only,
    minus_<generator>."""
    rows_from = [g for g in active if g in cleaned.parts]
    real = cleaned.real.assign(relabels_real=False) if cleaned.relabels else cleaned.real
    variants: dict[str, pd.DataFrame] = {"noaug": real}
    reports: dict[str, dict] = {"noaug": {}}

    def add(name: str, generators: list[str]) -> None:
        frame, stats = assemble(cleaned, generators, fp, seed)
        frame = frame.drop(columns=["query_norm"], errors="ignore")
        if cleaned.relabels:  # kept on the rows: smoothed labels of real pairs are not extra examples
            frame["relabels_real"] = frame.get("relabels_real", pd.Series(False, index=frame.index))
            frame["relabels_real"] = frame["relabels_real"].astype("boolean").fillna(False).astype(bool)
        variants[name] = frame
        reports[name] = {g: vars(st) for g, st in stats.items()}

    add("aug", rows_from)
    if cleaned.relabels and rows_from:  # query pairs stand alone; interactions need the real histories
        aug = variants["aug"]
        only = aug[aug["is_synthetic"] & ~aug["relabels_real"]]
        if len(only):
            variants["synthetic_only"], reports["synthetic_only"] = only, reports["aug"]
        else:
            log.warning("fuse: no synthetic rows survived (cap or dedup); synthetic_only not written")
    for generator in active:
        if generator in rows_from:
            add(f"minus_{generator}", [g for g in rows_from if g != generator])
        else:  # item-text generators change the items table named in the manifest, not the rows
            variants[f"minus_{generator}"], reports[f"minus_{generator}"] = variants["aug"], reports["aug"]
    return variants, reports


def needed_variants(task: str, params: Params) -> list[str]:
    """The fused variants of `task` the models in `experiments.models` train on (a switch: its `data`)."""
    return list(dict.fromkeys(m.data or m.variant for m in params.experiments.models.values() if m.task == task))


def switch_variants(task: str, params: Params) -> dict[str, str]:
    """{switch variant: the fused variant whose rows it trains on} of `task` (models with `data`)."""
    return {m.variant: m.data for m in params.experiments.models.values() if m.task == task and m.data}


def add_needed(
    task: str,
    variants: dict[str, pd.DataFrame],
    reports: dict,
    params: Params,
    gate: dict[str, str],
) -> dict[str, str]:
    """Add every variant a listed model needs that `build_variants` did not make: a `minus_<g>` of a
    generator the gate dropped is `aug` (with a warning), a switch is its `data` variant's rows; an unknown
    variant is an error. Return
    {variant: reason} for listed variants that have no rows (their folder holds only a manifest saying why,
    so `train@<task>-<variant>` skips them)."""
    generators = task_generators(task, params)
    skipped = {}
    for variant in needed_variants(task, params):
        if variant in variants:
            continue
        generator = variant.removeprefix("minus_")
        if variant.startswith("minus_") and generator in generators:
            if gate.get(generator) == "drop":
                log.warning("fuse: gate dropped %s, so %s/%s equals %s/aug", generator, task, variant, task)
                variants[variant], reports[variant] = variants["aug"], reports["aug"]
            else:  # weight 0 or augmentation off: the generator is not in aug, there is nothing to leave out
                log.warning("fuse: generator %s is off; %s/%s is not written", generator, task, variant)
                skipped[variant] = f"generator {generator} is off (weight 0 or augment.enabled false)"
        elif variant in ("aug", "synthetic_only"):
            log.warning("fuse: no synthetic rows for %s/%s; it is not written", task, variant)
            skipped[variant] = "no synthetic rows (augment.enabled false, every generator off or dropped)"
        elif variant != "noaug":
            raise ShopError(
                f"experiments.models: variant {variant!r} of task {task}: expected noaug, aug, synthetic_only "
                f"or minus_<generator> with a generator of {task} ({', '.join(generators)})"
            )
    for variant, data in switch_variants(task, params).items():  # same rows, own folder: models never clash
        if data in skipped:
            skipped[variant] = skipped[data]
        else:
            variants[variant], reports[variant] = variants[data], reports[data]
    return skipped


def describe_variant(frame: pd.DataFrame, report: dict, items: Path) -> dict:
    """Row counts, synthetic share, sources and weights of one validated variant."""
    relabel = frame["relabels_real"] if "relabels_real" in frame.columns else False
    synthetic = frame[frame["is_synthetic"] & ~relabel]
    return {
        "rows": len(frame),
        "real_rows": int((~frame["is_synthetic"]).sum()),
        "relabelled_real_rows": int((frame["is_synthetic"] & relabel).sum()),
        "synthetic_rows": len(synthetic),
        "synthetic_share": round(len(synthetic) / max(len(frame), 1), 4),
        "rows_by_source": frame["source"].value_counts().sort_index().to_dict(),
        "weight_by_source": frame.groupby("source")["weight"].sum().round(2).sort_index().to_dict(),
        "generators": report,
        "items": shown(items),
    }


def write_task(
    task: str,
    variants: dict[str, pd.DataFrame],
    reports: dict,
    items: dict[str, Path],
    out_dir: Path,
    extra: dict,
    lineage: dict[str, dict],
    skipped: dict[str, str],
    expanded: dict[str, pd.DataFrame],
) -> dict:
    """Write `out_dir/<variant>/` (train.parquet, items.parquet, manifest.json) for every variant and
    `out_dir/summary.json`, in one go; return the summary. `expanded`: a variant's items table with the
    expanded `search_text`, written instead of its items file. A variant's manifest names only its own inputs,
    so a change to one generator leaves the folders of variants without it byte-identical (DVC skips their
    training)."""
    table = TASKS[task].table
    summary = {"task": task, "table": table, "variants": {}, "skipped": skipped, **extra}
    with atomic_dir(out_dir) as tmp:
        for name, frame in variants.items():
            checked = validate_table(frame, table, f"{task}/{name}/train.parquet")
            (tmp / name).mkdir()
            checked.to_parquet(tmp / name / "train.parquet", index=False)
            if name in expanded:
                expanded[name].to_parquet(tmp / name / "items.parquet", index=False)
            else:
                shutil.copyfile(items[name], tmp / name / "items.parquet")
            entry = describe_variant(checked, reports[name], items[name])
            manifest = {"task": task, "table": table, "variant": name, **entry, **lineage[name]}
            write_json(manifest, tmp / name / "manifest.json")
            summary["variants"][name] = {"path": shown(out_dir / name / "train.parquet"), **entry}
        for name, reason in skipped.items():
            (tmp / name).mkdir()
            write_json({"task": task, "table": table, "variant": name, "skipped": reason}, tmp / name / "manifest.json")
        write_json(summary, tmp / "summary.json")
    return summary


def rows_path(folder: Path, generator: str) -> Path:
    """`folder/<generator>/rows.parquet`; ShopError naming the stage to run when it is missing."""
    path = folder / generator / ROWS_FILE
    if not path.exists():
        raise ShopError(
            f"{path}: file not found; run stage augment@{generator} (or set generators.{generator}.weight: 0)"
        )
    return path


def load_synthetic(folder: Path, generators: list[str], table: str) -> dict[str, pd.DataFrame]:
    """Each generator's rows from `folder/<generator>/rows.parquet`, validated as `table`."""
    return {generator: read_table(rows_path(folder, generator), table) for generator in generators}


def clean_retail(params: Params, splits: Path, synthetic: dict, weights: dict) -> tuple[Cleaned, dict]:
    """Retail: real training interactions; synthetic rows must lie before the validation cutoff."""
    real = read_table(splits / "train.parquet", "interactions")
    before = valid_cutoff(params)
    return clean_interactions(real, synthetic, weights, before), {"valid_cutoff": str(before)}


def clean_search(params: Params, splits: Path, synthetic: dict, weights: dict) -> tuple[Cleaned, dict]:
    """Search: real training pairs; synthetic rows whose query is a held-out query are removed."""
    real = read_table(splits / "train.parquet", "queries")
    held_out: set[str] = set()  # fuse may read held-out queries: only to keep them out of training data
    for split in ("valid", "test"):
        held_out |= set(normalise_query(read_table(splits / f"{split}.parquet", "queries")["query"]))
    return clean_queries(real, synthetic, weights, held_out), {}


CLEAN = {"retail": clean_retail, "search": clean_search}


def expand_variants(
    task: str, params: Params, cleaned: Cleaned, reports: dict, items: dict[str, Path], lineage: dict
) -> dict[str, pd.DataFrame]:
    """Search variants that use a generator of `fuse.expansion.generators`: their items with `search_text`
    (document expansion by all of that generator's cleaned queries: the training-row cap does not apply to
    item text); the count of expanded items goes into the variant's lineage."""
    sources = params.fuse.expansion.generators
    unknown = sorted(set(sources) - set(task_generators("search", params)))
    if unknown:
        raise ShopError(f"fuse.expansion.generators: '{unknown[0]}' is not a search generator of the registry")
    if task != "search" or not sources:
        return {}
    out = {}
    for name, used in reports.items():
        parts = [cleaned.parts[g] for g in sources if g in used and g in cleaned.parts]
        if not parts:
            continue
        rows = pd.concat(parts, ignore_index=True)
        out[name], count = expand_items(read_table(items[name], "items"), rows, params.fuse.expansion.max_terms)
        lineage[name]["expansion"] = {"generators": sources, "items_expanded": count}
        log.info("fuse search/%s: %d items expanded by %d queries of %s", name, count, len(rows), sources)
    return out


def fuse_task(
    task: str,
    params: Params,
    gate: dict[str, str],
    splits: Path,
    canonical: Path,
    synthetic_dir: Path,
    out_dir: Path,
) -> dict:
    """Fuse one task (`splits`, `canonical` are the task's folders) into `out_dir`; return its summary."""
    started = time.perf_counter()
    table = TASKS[task].table
    active = active_generators(task, params, gate)
    rows_from = [g for g in active if params.generators[g].table == table]
    item_generators = [g for g in active if params.generators[g].table == "items"]
    weights = {g: params.generators[g].weight for g in task_generators(task, params)}
    synthetic = load_synthetic(synthetic_dir, rows_from, table)
    cleaned, extra = CLEAN[task](params, splits, synthetic, weights)
    variants, reports = build_variants(cleaned, active, params.fuse, params.seed)
    skipped = add_needed(task, variants, reports, params, gate)
    items, lineage = {}, {}
    switches = switch_variants(task, params)
    for name in variants:  # the twin (noaug) and minus_<item generator> keep the real item text
        used = [g for g in item_generators if switches.get(name, name) not in ("noaug", f"minus_{g}")]
        items[name] = rows_path(synthetic_dir, used[0]) if used else canonical / "items.parquet"
        own = sorted(set(reports[name]) | set(used))  # the generators this variant's rows and items come from
        lineage[name] = {
            "seed": params.seed,
            "max_synthetic_share": params.fuse.max_synthetic_share,
            "weights": {g: weights[g] for g in own},
            "gate_decisions": {g: gate.get(g) for g in own},
            "inputs": {shown(rows_path(synthetic_dir, g)): file_sha256(rows_path(synthetic_dir, g)) for g in own},
        }
        if name in switches:
            lineage[name]["rows_of"] = switches[name]
            lineage[name]["train_overrides"] = params.experiments.spec(task, name).train
    expanded = expand_variants(task, params, cleaned, reports, items, lineage)
    inputs = [rows_path(synthetic_dir, g) for g in rows_from + item_generators]
    extra = {
        "augment_enabled": params.augment.enabled,
        "active_generators": active,
        "gate": gate,
        "max_synthetic_share": params.fuse.max_synthetic_share,
        "seed": params.seed,
        "weights": weights,
        **extra,
        "inputs": {shown(p): file_sha256(p) for p in inputs},
    }
    summary = write_task(task, variants, reports, items, out_dir, extra, lineage, skipped, expanded)
    log.info(
        "fuse %s: %s in %.1f s",
        task,
        {n: v["rows"] for n, v in summary["variants"].items()},
        time.perf_counter() - started,
    )
    return summary


def run_fuse(params: Params, splits: Path, canonical: Path, synthetic: Path, gate: Path, out: Path) -> dict[str, dict]:
    """Fuse every task that is on (`<folder>/<task>` inputs, `out/<task>` outputs); return {task: summary}.

    Refuses a failed gate or a missing synthetic folder. A task that is off gets off-markers for its models."""
    on = tasks_on(params.data)
    generators = [name for name, row in params.generators.items() if row.task in on]
    decisions = read_gate(gate, generators, params.fuse.use_gate)
    for task in [name for name in TASKS if name not in on]:  # train leaves these models out, as it does any
        write_task_off(out / task, task)  # variant fuse skips
        for spec in params.experiments.models.values():
            if spec.task == task:
                write_json(
                    {"task": task, "variant": spec.variant, "skipped": off_reason(task)},
                    out / task / spec.variant / "manifest.json",
                )
    return {
        task: fuse_task(task, params, decisions, splits / task, canonical / task, synthetic, out / task) for task in on
    }


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    splits: Annotated[Path, typer.Option(help="folder of <task>/train|valid|test.parquet")] = Path("data/splits"),
    canonical: Annotated[Path, typer.Option(help="folder of canonical <task>/items.parquet")] = Path("data/canonical"),
    synthetic: Annotated[Path, typer.Option(help="folder of <generator>/rows.parquet")] = Path("data/synthetic"),
    gate: Annotated[Path, typer.Option(help="folder of the gate's <generator>.json decisions")] = Path("metrics/gate"),
    out: Annotated[Path, typer.Option(help="folder of fused <task>/<variant>/ training sets")] = Path("data/fused"),
) -> None:
    """Write the fused training sets (noaug, aug, synthetic_only, minus_<generator>) of every task."""
    config = cli.load(params)
    paths = [cli.resolve(p) for p in (splits, canonical, synthetic, gate, out)]
    run_fuse(config, *paths)


if __name__ == "__main__":
    cli.run(app)
