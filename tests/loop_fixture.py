"""Run the whole loop (`dvc repro`) in a copy of this repository, on small real data, with the knobs shrunk.

The copy holds the tracked code and config (not dvc.lock, metrics/, reports/, docs/ or tests/), so DVC starts
from nothing, as on a fresh clone. `SMALL` shrinks sizes and step budgets, never what runs, and opens the drift
gate (see there).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from core.paths import repo_root

SHARED = Path(os.environ.get("SHOP_DATA_DIR", repo_root().parent / "shared" / "data"))

LEFT_OUT = ("dvc.lock", "metrics/", "reports/", "docs/", "tests/")
KEPT = ("metrics/ablation.json",)  # committed input of `report` (the last ablation experiment's results)

# Every generator, model and stage of the default loop runs; only sizes and step budgets are small.
SMALL = {
    "generators": {
        "synthetic_queries": {"settings": {"max_items": 12, "fine_tune_steps": 2, "fine_tune_batch_size": 4}},
        "statistical_queries": {"settings": {"max_items": 100}},
        "query_rewrites": {"settings": {"max_queries": 40}},
        "hard_negatives": {"settings": {"max_queries": 40}},
        "cf_interactions": {"settings": {"iterations": 3}},
        "synthetic_users": {"settings": {"n_users": 20, "vae_epochs": 5}},
        "item_enrichment": {"settings": {"n_clusters": 8}},
    },
    # On a few hundred queries, two fine-tuning steps give SmolLM2 queries the gate would rightly drop or stop;
    # its drift thresholds are opened so that every model still trains (copy and privacy checks stay as they are).
    "gate": {
        "sample_rows": 100,
        "dcr_rows": 200,
        **{f"drift_{level}": 100.0 for level in ("drop", "fail")},
        **{f"{check}_{level}": 1.0 for check in ("embedding", "oov") for level in ("drop", "fail")},
        **{f"{check}_{level}": 0.0 for check in ("shape", "pair_trend") for level in ("drop", "fail")},
    },
    "evaluation": {"bootstrap_samples": 50},
    "train": {
        "checkpoint_every": 1000,
        "retail": {"max_steps": 4, "eval_every": 2, "ranker": {"rounds": 10, "early_stopping": 5, "windows": 2}},
        "search": {
            "max_steps": 4,
            "eval_every": 2,
            "sampled_negatives": 64,
            "hybrid": {"weights": [0.3, 0.6], "depth": 100},
        },
    },
    "mlflow": {"system_metrics": False},
}


def retail_lines(n_customers: int, seed: int = 0) -> pd.DataFrame:
    """Every raw Online Retail line (as text) of `n_customers` seeded real customers."""
    raw = pd.read_csv(SHARED / "online_retail" / "online_retail.csv.gz", dtype=str)
    customers = np.sort(raw["CustomerID"].dropna().unique())
    chosen = set(np.random.default_rng(seed).choice(customers, size=n_customers, replace=False))
    return raw[raw["CustomerID"].isin(chosen)].reset_index(drop=True)


def homedepot_judgments(n_queries: int, n_products: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Real Home Depot rows of `n_queries` seeded queries, and the titles of their products plus others up to
    `n_products` (indexed by product_uid)."""
    raw = pd.read_csv(SHARED / "homedepot" / "search_relevance.csv.gz")
    rng = np.random.default_rng(seed)
    terms = rng.choice(np.sort(raw["search_term"].unique()), size=n_queries, replace=False)
    judged = raw[raw["search_term"].isin(terms)].reset_index(drop=True)
    titles = raw.drop_duplicates("product_uid").set_index("product_uid")["product_title"]
    others = np.sort(titles.index.difference(judged["product_uid"]))
    extra = rng.choice(others, size=max(n_products - judged["product_uid"].nunique(), 0), replace=False)
    return judged, titles.loc[np.union1d(judged["product_uid"].unique(), extra)]


def merge(base: dict, update: dict) -> dict:
    """`base` with `update`'s keys set, nested mappings merged."""
    merged = dict(base)
    for key, value in update.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def copy_repository(target: Path) -> Path:
    """Copy what git tracks or would (as it is on disk) into `target`, less `LEFT_OUT`; make it a git repository."""
    root = repo_root()
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    for name in tracked.decode().split("\0"):
        if not name or (name.startswith(LEFT_OUT) and name not in KEPT) or not (root / name).is_file():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes((root / name).read_bytes())
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    return target


def write_params(repo: Path, update: dict, models: dict | None = None, ablation: dict | None = None) -> None:
    """Write the copy's params.yaml: the repository's, with `SMALL` and then `update` merged in; `models` and
    `ablation`, when given, replace `experiments.models` and `experiments.ablation` (a merge cannot leave one out)."""
    params = merge(merge(yaml.safe_load((repo_root() / "params.yaml").read_text()), SMALL), update)
    for key, value in (("models", models), ("ablation", ablation)):
        if value is not None:
            params["experiments"][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def repro(repo: Path, data_dir: Path, timeout: int = 1500, command: tuple = ("dvc", "repro")):
    """`python -m dvc repro` (or another `python -m` command) in `repo` with `data_dir` as $SHOP_DATA_DIR and
    nothing of this machine's MLflow/BentoML/DVC settings; returns the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BENTOML_", "SHOPAUG_", "DVC_"))}
    env |= {
        "SHOP_DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
    }
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout
    )


def scored_models(repo: Path) -> set[str]:
    """The `<task>-<variant>` models whose real test-split NDCG@10 the run's metrics/results.json holds."""
    results = json.loads((repo / "metrics" / "results.json").read_text())
    return {
        f"{task}-{variant}"
        for task, section in results.items()
        for variant, metrics in section["models"].items()
        if isinstance(metrics.get("ndcg@10", {}).get("value"), float)
    }
