"""The train stage: train every configured `task/variant` (and the ablation variants) with `training.train`.

Each model trains in its own process (`python -m training.train --task T --variant V`), so a crash or the
memory of one run never leaks into the next; the train CLI logs each run and registers the model in MLflow.
"""

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from core import cli
from core.errors import ShopError
from core.params import load_params
from core.paths import repo_root
from training.evaluate import planned_runs

log = logging.getLogger(__name__)
app = typer.Typer(add_completion=False, help=__doc__.splitlines()[0])


@app.callback()
def _commands() -> None:
    """Experiment runs of the pipeline (subcommands below)."""


@app.command()
def train(
    params_path: Annotated[Path | None, typer.Option("--params", help="params.yaml to read")] = None,
    out: Annotated[Path, typer.Option(help="model folders go to <out>/<task>/<variant>")] = Path("models"),
    dry_run: Annotated[bool, typer.Option(help="print the runs without training")] = False,
) -> None:
    """Train the models of `experiments.runs` (+ minus_<generator> variants when `experiments.ablation`)."""
    root = repo_root()
    params = load_params(params_path)
    runs = planned_runs(params, root)
    if not runs:
        raise ShopError("no fused training set for any of experiments.runs: run the fuse stage first")
    for task, variant in runs:
        cmd = [sys.executable, "-m", "training.train", "--task", task, "--variant", variant]
        cmd += ["--out", str(out)]
        if params_path:
            cmd += ["--params", str(params_path)]
        typer.echo(" ".join(cmd[1:]))
        if dry_run:
            continue
        started = time.perf_counter()
        if subprocess.run(cmd, cwd=root).returncode != 0:
            raise ShopError(f"training {task}/{variant} failed (see its log above)")
        log.info("%s/%s trained in %.0f s", task, variant, time.perf_counter() - started)


if __name__ == "__main__":
    cli.run(app)
