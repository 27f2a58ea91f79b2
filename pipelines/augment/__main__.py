"""Stage `augment@<generator>`: run one generator of the registry (params.yaml `generators`) into its folder.

Looks up the generator's row, imports `pipelines.augment.<generator>`, validates the row's `settings` with the
module's `Settings`, calls its `generate(ctx)` and writes `<out>/rows.parquet` (+ extra tables) and
`<out>/manifest.json`. Generators read only their task's training split and canonical tables.
"""

import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from core import cli
from core.errors import ShopError
from core.tasks import tasks_on, write_task_off
from pipelines.augment.manifest import Context, generator_module, load_settings, write_generator

log = logging.getLogger(__name__)
app = cli.stage_app(__doc__)


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    generator: Annotated[str, typer.Option(help="registry row to run (params.yaml generators)")] = ...,
    splits: Annotated[Path | None, typer.Option(help="the task's splits folder [data/splits/<task>]")] = None,
    canonical: Annotated[Path | None, typer.Option(help="the task's canonical folder [data/canonical/<task>]")] = None,
    out: Annotated[Path | None, typer.Option(help="the generator's folder [data/synthetic/<generator>]")] = None,
) -> None:
    """Generate one generator's synthetic rows and manifest."""
    config = cli.load(params)
    if generator not in config.generators:
        raise ShopError(f"--generator {generator}: not in params.yaml generators ({', '.join(config.generators)})")
    row = config.generators[generator]
    module = generator_module(generator)
    settings = load_settings(config, generator, module.Settings)
    splits = cli.resolve(splits or Path("data/splits") / row.task)
    canonical = cli.resolve(canonical or Path("data/canonical") / row.task)
    out = cli.resolve(out or Path("data/synthetic") / generator)
    if row.task not in tasks_on(config.data):
        write_task_off(out, row.task)
        return
    started = time.perf_counter()
    output = module.generate(Context(generator, config, settings, splits, canonical))
    seconds = time.perf_counter() - started
    manifest = write_generator(
        output, out, generator=generator, table=row.table, settings=settings.model_dump(), seed=config.seed
    )
    log.info(
        "%s: %d rows in %.1f s (%.0f rows/s) -> %s",
        generator,
        manifest["rows"],
        seconds,
        manifest["rows"] / max(seconds, 1e-9),
        out,
    )


if __name__ == "__main__":
    cli.run(app)
