"""The ablation experiment: the models of `experiments.ablation` trained and scored in one `dvc exp run`.

`dvc repro` trains `experiments.models` only (the twins and the augmented models). This command runs the same
pipeline once more as a DVC experiment in a temporary copy (`dvc exp run --temp`) with the ablation models
added to `experiments.models` (`-S +experiments.models.<name>=...`). Unchanged stages come from the DVC cache,
so only the added models train, and `evaluate` scores every model on the same real test queries with the
same paired bootstrap CIs; the experiment stops there (promotion and packaging belong to the main run). The
experiment's `metrics/results.json` is then written to `metrics/ablation.json`, which the `report` stage adds
to the tables (rows marked †). `make ablation` runs this, then `dvc repro report`.
"""

import datetime as dt
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from core import cli
from core.errors import ShopError
from core.io import write_json
from core.params import ModelSpec
from core.paths import repo_root

log = logging.getLogger(__name__)

RESULTS = "metrics/results.json"
TARGET = "evaluate"  # the experiment stops where the results are written: promote and package are the main run's


def hydra_value(value: Any) -> str:
    """`value` in the Hydra override grammar `dvc exp run -S` reads: {k:v,...}, [a,b], null, true, 0.1, 'text'."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_value(v)}" for key, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def overrides(ablation: dict[str, ModelSpec]) -> list[str]:
    """The `-S` values that add each ablation model to `experiments.models` and empty `experiments.ablation`."""
    if not ablation:
        raise ShopError("experiments.ablation is empty: there is no ablation model to train")
    added = [
        f"+experiments.models.{name}={hydra_value(spec.model_dump(exclude_defaults=True))}"
        for name, spec in ablation.items()
    ]
    return [*added, "~experiments.ablation"]


def run_experiment(name: str, sets: list[str], root: Path) -> None:
    """`dvc exp run --temp --name NAME -S ... evaluate` in `root`; its stage logs stream to this terminal."""
    command = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "--name", name]
    for value in sets:
        command += ["-S", value]
    command.append(TARGET)
    log.info("running %s", " ".join(command[2:]))
    if subprocess.run(command, cwd=root, check=False).returncode != 0:
        raise ShopError(f"dvc exp run for {name} failed (its log is above)")


def export(name: str, models: list[str], root: Path, out: Path) -> dict:
    """The experiment's results document plus {experiment: {name, models, time}}, written to `out`."""
    import dvc.api  # slow import, only here

    try:
        doc = json.loads(dvc.api.read(RESULTS, repo=str(root), rev=name))
    except Exception as exc:  # noqa: BLE001 - dvc raises many types; the message names the experiment
        raise ShopError(f"cannot read {RESULTS} of experiment {name!r}: {exc}") from None
    doc["experiment"] = {"name": name, "models": models, "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    write_json(doc, out)
    return doc


app = cli.stage_app(__doc__)


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    out: Annotated[Path, typer.Option(help="where the experiment's results go")] = Path("metrics/ablation.json"),
    name: Annotated[str | None, typer.Option(help="experiment name (default ablation-<UTC time>)")] = None,
    run: Annotated[bool, typer.Option(help="--no-run: only export the existing experiment --name")] = True,
) -> None:
    """Train and score the ablation models in one DVC experiment; write its results for the report."""
    config = cli.load(params)
    root = repo_root()
    if not run and not name:
        raise ShopError("--no-run needs --name: the experiment whose results to export")
    name = name or f"ablation-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    if run:
        run_experiment(name, overrides(config.experiments.ablation), root)
    doc = export(name, list(config.experiments.ablation), root, cli.resolve(out))
    scored = {task: sorted(doc[task]["models"]) for task in doc if task != "experiment"}
    typer.echo(f"{name}: {scored} -> {out}; `dvc repro report` adds them to reports/results.md")


if __name__ == "__main__":
    cli.run(app)
