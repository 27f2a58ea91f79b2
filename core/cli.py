"""The one way a stage command is built: a Typer app with `--params`, readable logs and one-line errors.

Every stage module does the same three things:

    app = cli.stage_app(__doc__)

    @app.command()
    def main(params: cli.ParamsOption = cli.PARAMS, out: Annotated[Path, typer.Option(help=...)] = ...):
        config = cli.load(params)
        ...

    if __name__ == "__main__":
        cli.run(app)

`dvc.yaml` passes each stage its input and output paths; the defaults are the same paths (core.paths),
so `python -m <stage>` run by hand behaves like `dvc repro`.
"""

import gc
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from core import stage_times
from core.errors import ShopError
from core.params import Params, load_params
from core.paths import repo_root

ParamsOption = Annotated[
    Path,
    typer.Option(
        "--params", help="params.yaml to read (absolute, or relative to the working folder or the repository root)"
    ),
]
PARAMS = Path("params.yaml")


def stage_app(doc: str | None) -> typer.Typer:
    """A Typer app whose help is the module docstring (its first paragraph on `--help`)."""
    return typer.Typer(add_completion=False, help=(doc or "").strip(), pretty_exceptions_enable=False)


def resolve(path: Path | str) -> Path:
    """`path` as given when it exists or is absolute, or when the working folder is a project (holds a
    params.yaml: outputs not written yet land there); else relative to the repository root."""
    path = Path(path).expanduser()
    here = path.is_absolute() or path.exists() or Path(PARAMS).is_file()
    return path if here else repo_root() / path


def load(path: Path | str | None = None, overrides: dict | None = None) -> Params:
    """Validated params from `path` (default: the repository's params.yaml); ShopError names the key at fault."""
    return load_params(resolve(path or PARAMS), overrides)


def run(app: typer.Typer) -> None:
    """Run a stage: INFO logs on stderr; a ShopError becomes `error: <message>` and exit code 2, no traceback.

    Under DVC it also prints the stage's expected time when it starts and its time when it ends.
    """
    level = os.environ.get("SHOPAUG_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    code = 0
    try:
        start, stage = time.monotonic(), stage_times.started()
        app(standalone_mode=False)
        stage_times.finished(stage, time.monotonic() - start)
    except ShopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except typer.Abort:
        code = 1
    except typer.TyperException as exc:  # a usage error (unknown option, bad value): one line, click's exit code
        print(f"error: {exc.format_message()} (see --help)", file=sys.stderr)
        code = exc.exit_code
    if code:
        # Exit outside the handler, after a collection: the failed stage's frames (its traceback) hold native
        # objects, e.g. a pyarrow reader, whose worker threads otherwise live on into interpreter shutdown and
        # can abort it ("terminate called without an active exception", exit -6, apache/arrow#34314).
        gc.collect()
        sys.exit(code)
