"""Render `metrics/results.json` as the README's results tables (`reports/results.md`).

Run after the evaluate stage: `python -m training.report --results metrics/results.json --out reports/results.md`.
Every number is read from the results file, so the README table is a copy of this output, never typed by hand.
`--ablation metrics/ablation.json` (written by `python -m training.ablation`) adds the models that only the
ablation experiment trains, marked †, when it scored the same test split.
"""

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from core import cli
from core.errors import ShopError
from core.io import atomic_path
from training.metrics import metric_stats

log = logging.getLogger(__name__)

COLUMNS = {
    "retail": [
        ("NDCG@10", "ndcg@10"),
        ("HR@10", "hr@10"),
        ("NDCG@10 new-to-user", "ndcg@10_new"),
        ("Recall@10 repeat", "recall@10_repeat"),
        ("Recall@10 explore", "recall@10_explore"),
        ("NDCG@10 cold users (≤3 baskets)", "cold_users.ndcg@10"),
        ("Recall@10 new items", "new_items.recall@10"),
    ],
    "search": [
        ("NDCG@10", "ndcg@10"),
        ("NDCG@10 noisy queries", "ndcg@10_noisy"),
        ("Recall@100", "recall@100"),
        ("pairwise accuracy", "pairwise_accuracy"),
    ],
}
TITLES = {"retail": "{}, real test users", "search": "{}, real test queries, whole catalogue"}
DATASETS = {
    "online_retail": "Online Retail",
    "homedepot": "Home Depot",
    "wands": "Wayfair WANDS",
    "esci": "Amazon ESCI",
    "canonical": "your shop",
}
NAMES = {"noaug": "no augmentation (twin)", "aug": "augmented", "synthetic_only": "synthetic queries only"}
LABELS = {
    "repeat_explore": "repeat/explore ranker",
    "two_tower": "two-tower",
    "bi_encoder": "bi-encoder",
    "hybrid": "hybrid BM25 + bi-encoder",
    "reranked_hybrid": "hybrid + LambdaRank re-ranker",
}
PAIRED = {
    "ndcg@10": "NDCG@10",
    "ndcg@10_new": "NDCG@10 new-to-user",
    "cold_users.ndcg@10": "NDCG@10 cold users",
    "ndcg@10_noisy": "NDCG@10 noisy queries",
}


def cell(result: dict, key: str) -> str:
    """'0.234 [0.221, 0.246]' (value and 95% bootstrap CI), or '–' when the metric is undefined."""
    stats = metric_stats(result, key)
    if stats.get("value") is None:
        return "–"
    if stats.get("ci_low") is None or stats["ci_low"] == stats["ci_high"]:
        return f"{stats['value']:.3f}"
    return f"{stats['value']:.3f} [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"


def signed(stats: dict | None) -> str:
    if not stats or stats.get("value") is None:
        return "–"
    return f"{stats['value']:+.3f} [{stats['ci_low']:+.3f}, {stats['ci_high']:+.3f}]"


def task_table(task: str, doc: dict) -> list[str]:
    columns = COLUMNS[task]
    n = metric_stats(next(iter(doc["models"].values())), "ndcg@10").get("n")
    lines = [
        f"| {TITLES[task].format(' + '.join(DATASETS.get(d, d) for d in doc['dataset']))} ({n}) | synthetic share | "
        + " | ".join(c for c, _ in columns)
        + " | NDCG@10 − twin [paired CI] |",
        "|" + " --- |" * (len(columns) + 3),
    ]
    best = doc["uplift"].get("best_baseline")
    for name, result in doc["baselines"].items():
        label = name.replace("_", " ") + (" (best baseline)" if name == best else "")
        lines.append(f"| {label} | 0 | " + " | ".join(cell(result, k) for _, k in columns) + " | |")
    for variant, result in _ordered(doc["models"]):
        label = _label(doc, variant)
        share = doc["synthetic_share"].get(variant)
        twin = doc.get("versus_twin", {}).get(variant, {}).get("ndcg@10")
        lines.append(
            f"| {label} | {'–' if share is None else f'{share:.2f}'} | "
            + " | ".join(cell(result, k) for _, k in columns)
            + f" | {signed(twin)} |"
        )
    return lines


def _ordered(models: dict) -> list:
    order = ["noaug", "aug", "synthetic_only"]
    return sorted(models.items(), key=lambda kv: (order + [kv[0]]).index(kv[0]))


def _label(doc: dict, variant: str) -> str:
    kind = doc.get("model", {}).get(variant, "model")
    switch = doc.get("switches", {}).get(variant)
    mark = " †" if variant in doc.get("experiment", {}).get("variants", []) else ""
    if switch:
        return f"{LABELS.get(kind, kind)}, {_variant_name(switch['data'])} + {_overrides(switch['train'])}{mark}"
    return f"{LABELS.get(kind, kind)}, {_variant_name(variant)}{mark}"


def _variant_name(variant: str) -> str:
    return NAMES.get(variant, variant.replace("minus_", "augmented without "))


def _overrides(train: dict, prefix: str = "") -> str:
    """`{rerank: {enabled: true}}` -> "rerank.enabled=True"."""
    return ", ".join(
        _overrides(value, f"{prefix}{key}.") if isinstance(value, dict) else f"{prefix}{key}={value}"
        for key, value in train.items()
    )


def paired_table(task: str, doc: dict) -> list[str]:
    """Paired differences per segment: each model against its twin and against the strongest baseline."""
    best = doc.get("versus_best_baseline") or {}
    rows = [(f"{_label(doc, v)} − twin", d) for v, d in _ordered(doc.get("versus_twin", {}))]
    baseline = str(best.get("baseline", "")).replace("_", " ")
    rows += [(f"{_label(doc, v)} − {baseline}", d) for v, d in _ordered(best.get("models", {}))]
    if not rows:
        return []
    keys = [k for k in PAIRED if k in rows[0][1]]
    lines = [f"| {task}: paired difference [95% CI] | " + " | ".join(PAIRED[k] for k in keys) + " |"]
    lines.append("|" + " --- |" * (len(keys) + 1))
    lines += [f"| {label} | " + " | ".join(signed(d.get(k)) for k in keys) + " |" for label, d in rows]
    return lines


def ablation_table(task: str, doc: dict) -> list[str]:
    if not doc.get("ablation"):
        return []
    lines = [
        f"| {task}: generator left out | NDCG@10 without it | contribution to NDCG@10 (aug − without) [paired CI] |",
        "| --- | --- | --- |",
    ]
    for generator, delta in sorted(doc["ablation"].items()):
        low, high = delta.get("ndcg@10_ci") or [None, None]
        contribution = (
            signed({"value": delta.get("ndcg@10"), "ci_low": low, "ci_high": high})
            if low is not None
            else f"{delta.get('ndcg@10'):+.3f}"
        )
        lines.append(f"| {generator} | {cell(doc['models'][f'minus_{generator}'], 'ndcg@10')} | {contribution} |")
    return lines


def switch_table(task: str, doc: dict) -> list[str]:
    """Each training switch against the model trained on the same rows without it."""
    rows = doc.get("switches") or {}
    if not rows:
        return []
    keys = [k for k in PAIRED if k in next(iter(rows.values()))]
    lines = [
        f"| {task}: training switch (same rows) | " + " | ".join(f"{PAIRED[k]} gain" for k in keys) + " |",
        "|" + " --- |" * (len(keys) + 1),
    ]
    for switch in rows.values():
        label = f"{_overrides(switch['train'])} on {_variant_name(switch['data'])}"
        lines.append(f"| {label} | " + " | ".join(signed(switch.get(k)) for k in keys) + " |")
    return lines


def components_table(task: str, doc: dict) -> list[str]:
    """The hybrids' parts on the same test queries (each bi-encoder alone, BM25 over expanded items) and the
    paired differences that say what each part adds."""
    parts = doc.get("components") or {}
    if not parts.get("models"):
        return []
    columns = COLUMNS[task]
    lines = [f"| {task}: components | " + " | ".join(c for c, _ in columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    for name, result in parts["models"].items():
        lines.append(f"| {name.replace('_', ' ')} | " + " | ".join(cell(result, k) for _, k in columns) + " |")
    diffs = parts.get("differences") or {}
    if diffs:
        keys = [k for k in PAIRED if k in next(iter(diffs.values()))]
        lines += ["", f"| {task}: what a part adds [paired 95% CI] | " + " | ".join(PAIRED[k] for k in keys) + " |"]
        lines.append("|" + " --- |" * (len(keys) + 1))
        lines += [f"| {label} | " + " | ".join(signed(d.get(k)) for k in keys) + " |" for label, d in diffs.items()]
    return lines


def merge_ablation(results: dict, ablation: dict) -> dict:
    """`results` plus, per task, the models only the ablation experiment scored (its `models`, shares, paired
    differences, ablation and switch tables) when it used the same test split; `experiment` says which run
    and whether its twin and augmented models still score as here (else it is stale)."""
    run = ablation.get("experiment")
    merged = dict(results)
    for task, extra in ablation.items():
        if task == "experiment" or task not in results:
            continue
        doc = results[task]
        if extra.get("test_split", {}).get("digest") != doc.get("test_split", {}).get("digest"):
            log.warning("ablation results for %s are from another test split: left out (run make ablation)", task)
            continue
        added = [v for v in extra["models"] if v not in doc["models"]]
        if not added:
            continue
        doc = merged[task] = json.loads(json.dumps(doc))
        for key in ("models", "synthetic_share", "model", "versus_twin"):
            doc.setdefault(key, {}).update({v: extra[key][v] for v in added if v in extra.get(key, {})})
        best, extra_best = doc.get("versus_best_baseline") or {}, extra.get("versus_best_baseline") or {}
        if best.get("baseline") == extra_best.get("baseline"):
            best.setdefault("models", {}).update(
                {v: extra_best["models"][v] for v in added if v in extra_best["models"]}
            )
        doc["ablation"] = doc.get("ablation") or extra.get("ablation") or {}
        doc["switches"] = (doc.get("switches") or {}) | {
            v: s for v, s in (extra.get("switches") or {}).items() if v in added
        }
        same = [v for v in extra["models"] if v in doc["models"] and v not in added]
        stale = [
            v for v in same if metric_stats(extra["models"][v], "ndcg@10") != metric_stats(doc["models"][v], "ndcg@10")
        ]
        doc["experiment"] = {
            "name": (run or {}).get("name", "?"),
            "time": (run or {}).get("time", "?"),
            "variants": added,
            "stale": stale,
        }
    return merged


def experiment_note(doc: dict) -> list[str]:
    """The † footnote: which experiment scored the marked rows, and whether this run's models still match it."""
    run = doc.get("experiment")
    if not run:
        return []
    note = (
        f"† trained and scored by the ablation experiment `{run['name']}` ({run['time']}, `make ablation`): the "
        "same pipeline with experiments.ablation added to experiments.models, the same test queries; its paired "
        "CIs are against its own twin and baselines"
    )
    if run["stale"]:
        note += (
            f". **Stale:** its {', '.join(run['stale'])} scored differently from this run's, so these rows describe "
            "an earlier pipeline; run `make ablation` again"
        )
    else:
        note += ", whose NDCG@10 equals this run's"
    return [note + ".", ""]


def render(results: dict) -> str:
    """The markdown tables for every task in `results` (the evaluate stage's document)."""
    out = ["<!-- generated by `python -m training.report` from metrics/results.json -->", ""]
    for task, doc in results.items():
        out += task_table(task, doc) + [""]
        paired = paired_table(task, doc)
        if paired:
            out += paired + [""]
        for table in (ablation_table(task, doc), switch_table(task, doc)):
            if table:
                out += table + [""]
        components = components_table(task, doc)
        if components:
            out += components + [""]
        out += experiment_note(doc)
        uplift = doc["uplift"]["models"].get("aug", {})
        best = doc["uplift"].get("best_baseline")
        if uplift:
            parts = [
                f"{ref.removeprefix('baseline:')} {v['ndcg@10']:+.1%}"
                for ref, v in uplift.items()
                if ref != "best_baseline" and v.get("ndcg@10") is not None
            ]
            out += [
                f"{task}: augmented NDCG@10 relative to "
                + ", ".join(parts)
                + (f" (best baseline: {best})" if best else "")
                + ".",
                "",
            ]
    return "\n".join(out)


def read_results(path: Path, hint: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ShopError(f"{path}: cannot read results ({exc}); {hint}") from None


app = cli.stage_app(__doc__)


@app.command()
def main(
    results: Annotated[Path, typer.Option(help="the evaluate stage's results")] = Path("metrics/results.json"),
    ablation: Annotated[
        Path | None, typer.Option(help="the ablation experiment's results (python -m training.ablation)")
    ] = None,
    out: Annotated[Path, typer.Option(help="markdown file to write")] = Path("reports/results.md"),
) -> None:
    """Write the results tables (models, baselines, paired differences, ablation) as markdown."""
    doc = read_results(cli.resolve(results), "run the evaluate stage first")
    if ablation is not None:
        doc = merge_ablation(doc, read_results(cli.resolve(ablation), "run python -m training.ablation"))
    out = cli.resolve(out)
    text = render(doc)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    typer.echo(text)


if __name__ == "__main__":
    cli.run(app)
