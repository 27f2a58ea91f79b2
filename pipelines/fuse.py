"""Fusion: training sets = real rows + synthetic rows of the generators the gate passed, weighted, capped,
deduplicated.

Per task (retail interactions, search queries) it writes `data/fused/<task>/<variant>.parquet` and one
`manifest.json`: `noaug` (real only), `aug` (real + every active generator), `synthetic_only` (search) and
`minus_<generator>` (aug without one generator, for ablation). Every row keeps its provenance (`is_synthetic`,
`source`, `parent_id`) and gets a `weight` (1 for real rows, the generator's weight otherwise).
`augment.enabled: false` gives the no-augmentation twin: `aug` = `noaug` and no ablation variants.
"""

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
from core.errors import ShopError
from core.io import atomic_dir, read_table, write_json
from core.params import FuseParams, Params, load_params
from core.paths import repo_root
from core.schema import validate_table
from pipelines.augment.manifest import file_sha256
from pipelines.augment.retail_history import valid_cutoff

log = logging.getLogger(__name__)
app = typer.Typer(add_completion=False, help=__doc__)

GENERATORS = {
    "retail": ["cf_interactions", "sequence_aug", "synthetic_users"],
    "search": ["synthetic_queries", "query_rewrites", "hard_negatives"],
}
ITEM_GENERATORS = {"retail": ["item_enrichment"], "search": []}
TABLE = {"retail": "interactions", "search": "queries"}
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


def read_gate(path: Path, use_gate: bool) -> dict[str, str]:
    """Return {generator: decision} from the gate file; refuse a missing file (when used) or a `fail`
    decision."""
    if not use_gate:
        return {}
    if not path.exists():
        raise ShopError(f"{path}: file not found; run stage gate first (or set fuse.use_gate: false)")
    try:
        gate = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ShopError(f"{path}: not valid JSON ({exc.msg})") from None
    decisions = {}
    for generator, entry in gate.items():
        decision = entry.get("decision") if isinstance(entry, dict) else None
        if decision not in ("pass", "drop", "fail"):
            raise ShopError(f"{path}: {generator}.decision must be pass, drop or fail, got {decision!r}")
        decisions[generator] = decision
    failed = sorted(g for g, d in decisions.items() if d == "fail")
    if failed:
        raise ShopError(
            f"{path}: generator(s) {failed} failed the synthetic-data gate; fix them or set their fuse.weights to 0"
        )
    return decisions


def active_generators(task: str, params: Params, gate: dict[str, str]) -> list[str]:
    """Generators of `task` that are on (augment.enabled, weight > 0) and not dropped by the gate."""
    if not params.augment.enabled:
        return []
    active = []
    for generator in GENERATORS[task] + ITEM_GENERATORS[task]:
        if getattr(params.fuse.weights, generator) <= 0:
            continue
        if gate.get(generator) == "drop":
            log.warning("fuse: gate dropped generator %s; it is left out of the %s training sets", generator, task)
            continue
        if gate and generator not in gate:
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
    real: pd.DataFrame, synthetic: dict[str, pd.DataFrame], fp: FuseParams, before: pd.Timestamp
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
                f"data/synthetic/{generator}.parquet: {int(late.sum())} row(s) at or after the "
                f"validation cutoff {before}; synthetic rows may only come from earlier history"
            )
        user = df["user_id"].astype(str)
        seq = df["sequence_id"].astype(str) if "sequence_id" in df.columns else user
        df = df.assign(sequence_id=seq.where(seq != user, None), weight=float(getattr(fp.weights, generator)))
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
    real: pd.DataFrame, synthetic: dict[str, pd.DataFrame], fp: FuseParams, seed: int, before: pd.Timestamp
) -> tuple[pd.DataFrame, dict[str, FuseStats]]:
    """Return real + synthetic interactions (weighted, deduplicated, capped) and per-generator stats."""
    return assemble(clean_interactions(real, synthetic, fp, before), list(synthetic), fp, seed)


def normalise_query(text: pd.Series) -> pd.Series:
    """Lower-case, collapse whitespace: the form queries are compared in for dedup and leakage."""
    return text.astype(str).str.lower().str.split().str.join(" ")


def clean_queries(
    real: pd.DataFrame, synthetic: dict[str, pd.DataFrame], fp: FuseParams, held_out_queries: set[str]
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
        df = df.assign(query_norm=norm.to_numpy(), weight=float(getattr(fp.weights, generator)))
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
    return Cleaned(real, parts, stats, replaced, key=["query_norm", "item_id"], group="query_id")


def fuse_queries(
    real: pd.DataFrame,
    synthetic: dict[str, pd.DataFrame],
    fp: FuseParams,
    seed: int,
    held_out_queries: set[str],
) -> tuple[pd.DataFrame, dict[str, FuseStats]]:
    """Return real + synthetic (query, item) pairs (weighted, deduplicated, capped) and per-generator
    stats."""
    frame, stats = assemble(clean_queries(real, synthetic, fp, held_out_queries), list(synthetic), fp, seed)
    return frame.drop(columns=["query_norm"], errors="ignore"), stats


def build_variants(
    task: str,
    cleaned: Cleaned,
    active: list[str],
    fp: FuseParams,
    seed: int,
) -> tuple[dict[str, pd.DataFrame], dict]:
    """Return {variant: frame} and {variant: per-generator stats}: noaug, aug, synthetic_only,
    minus_<generator>."""
    rows_from = [g for g in active if g in cleaned.parts]
    real = cleaned.real.assign(relabels_real=False) if task == "search" else cleaned.real
    variants: dict[str, pd.DataFrame] = {"noaug": real}
    reports: dict[str, dict] = {"noaug": {}}

    def add(name: str, generators: list[str]) -> None:
        frame, stats = assemble(cleaned, generators, fp, seed)
        frame = frame.drop(columns=["query_norm"], errors="ignore")
        if task == "search":  # kept on the rows: smoothed labels of real pairs are not extra examples
            frame["relabels_real"] = frame.get("relabels_real", pd.Series(False, index=frame.index))
            frame["relabels_real"] = frame["relabels_real"].astype("boolean").fillna(False).astype(bool)
        variants[name] = frame
        reports[name] = {g: vars(st) for g, st in stats.items()}

    add("aug", rows_from)
    if task == "search" and rows_from:
        aug = variants["aug"]
        only = aug[aug["is_synthetic"] & ~aug["relabels_real"]]
        if len(only):
            variants["synthetic_only"], reports["synthetic_only"] = only, reports["aug"]
        else:
            log.warning("fuse: no synthetic %s rows survived (cap or dedup); synthetic_only not written", task)
    for generator in active:
        if generator in rows_from:
            add(f"minus_{generator}", [g for g in rows_from if g != generator])
        else:  # item-text generators change the items table named in the manifest, not the rows
            variants[f"minus_{generator}"], reports[f"minus_{generator}"] = variants["aug"], reports["aug"]
    return variants, reports


def write_task(
    task: str,
    variants: dict[str, pd.DataFrame],
    reports: dict,
    out_dir: Path,
    extra: dict,
    items: dict[str, str] | None = None,
    shown_dir: Path | None = None,
) -> dict:
    """Write every variant (validated canonical table + `weight`) and the task's manifest.json in one go."""
    manifest = {"task": task, "table": TABLE[task], "variants": {}, **extra}
    with atomic_dir(out_dir) as tmp:
        for name, frame in variants.items():
            checked = validate_table(frame, TABLE[task], f"{task}/{name}.parquet")
            checked.to_parquet(tmp / f"{name}.parquet", index=False)
            relabel = checked["relabels_real"] if "relabels_real" in checked.columns else False
            synthetic = checked[checked["is_synthetic"] & ~relabel]
            manifest["variants"][name] = {
                "path": str((shown_dir or out_dir) / f"{name}.parquet"),
                "rows": len(checked),
                "real_rows": int((~checked["is_synthetic"]).sum()),
                "relabelled_real_rows": int((checked["is_synthetic"] & relabel).sum()),
                "synthetic_rows": len(synthetic),
                "synthetic_share": round(len(synthetic) / max(len(checked), 1), 4),
                "rows_by_source": checked["source"].value_counts().sort_index().to_dict(),
                "weight_by_source": checked.groupby("source")["weight"].sum().round(2).sort_index().to_dict(),
                "generators": reports[name],
                **({"items": items[name]} if items else {}),
            }
        write_json(manifest, tmp / "manifest.json")
    return manifest


def _load_synthetic(directory: Path, generators: list[str], table: str) -> dict[str, pd.DataFrame]:
    out = {}
    for generator in generators:
        path = directory / f"{generator}.parquet"
        if not path.exists():
            raise ShopError(
                f"{path}: file not found; run stage augment_{generator} (or set fuse.weights.{generator}: 0)"
            )
        out[generator] = read_table(path, table)
    return out


def fuse_task(task: str, params: Params, root: Path, gate: dict[str, str], out_dir: Path) -> dict:
    """Fuse one task from the files under `root` into `out_dir`; return its manifest."""
    started = time.perf_counter()
    active = active_generators(task, params, gate)
    rows_from = [g for g in active if g in GENERATORS[task]]
    synthetic_dir = root / "data/synthetic"
    synthetic = _load_synthetic(synthetic_dir, rows_from, TABLE[task])
    extra: dict = {
        "augment_enabled": params.augment.enabled,
        "active_generators": active,
        "gate": gate,
        "max_synthetic_share": params.fuse.max_synthetic_share,
        "seed": params.seed,
        "weights": params.fuse.weights.model_dump(),
    }
    items = None
    if task == "retail":
        real = read_table(root / "data/splits/retail/train.parquet", "interactions")
        before = valid_cutoff(params)
        cleaned = clean_interactions(real, synthetic, params.fuse, before)
        enriched = "item_enrichment" in active
        items = {}
        extra["valid_cutoff"] = str(before)
    else:
        real = read_table(root / "data/splits/search/train.parquet", "queries")
        held_out: set[str] = set()  # fuse may read held-out queries: only to keep them out of training data
        for split in ("valid", "test"):
            held_out |= set(
                normalise_query(read_table(root / f"data/splits/search/{split}.parquet", "queries")["query"])
            )
        cleaned = clean_queries(real, synthetic, params.fuse, held_out)
    variants, reports = build_variants(task, cleaned, active, params.fuse, params.seed)
    if items is not None:
        items = {
            name: "data/synthetic/item_enrichment.parquet"
            if enriched and name not in ("noaug", "minus_item_enrichment")  # the twin has no synthetic text
            else "data/canonical/retail/items.parquet"
            for name in variants
        }
    extra["inputs"] = {
        str(p.relative_to(root)): file_sha256(p) for p in (synthetic_dir / f"{g}.parquet" for g in rows_from)
    }
    extra["wall_seconds"] = round(time.perf_counter() - started, 2)
    shown = out_dir.relative_to(root) if out_dir.is_relative_to(root) else out_dir
    manifest = write_task(task, variants, reports, out_dir, extra, items, shown)
    log.info("fuse %s: %s", task, {n: v["rows"] for n, v in manifest["variants"].items()})
    return manifest


def run_fuse(params: Params, root: Path, gate_path: Path, out_root: Path) -> dict[str, dict]:
    """Fuse retail and search; return {task: manifest}. Refuses a failed gate or a missing synthetic file."""
    gate = read_gate(gate_path, params.fuse.use_gate)
    return {task: fuse_task(task, params, root, gate, out_root / task) for task in ("retail", "search")}


@app.command()
def main(
    params_file: Annotated[Path, typer.Option(help="params.yaml to read")] = Path("params.yaml"),
    gate: Annotated[Path, typer.Option(help="the gate's decisions")] = Path("metrics/gate.json"),
    out: Annotated[Path, typer.Option(help="folder of fused training sets")] = Path("data/fused"),
) -> None:
    """Write the fused training sets (noaug, aug, synthetic_only, minus_<generator>) for retail and search."""
    root = repo_root()
    params = load_params(root / params_file if not params_file.is_absolute() else params_file)
    run_fuse(
        params,
        root,
        root / gate if not gate.is_absolute() else gate,
        root / out if not out.is_absolute() else out,
    )


if __name__ == "__main__":
    cli.run(app)
