"""One error type for problems a user can fix, and a CLI wrapper that prints it as one line."""

import logging
import sys

import click
import typer


class ShopError(Exception):
    """A problem with the user's input or configuration; the message names the file, key or id at fault."""


def run_cli(app: typer.Typer) -> None:
    """Run a Typer app; a ShopError becomes `error: <message>` on stderr and exit code 2, never a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app(standalone_mode=False)
    except ShopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
