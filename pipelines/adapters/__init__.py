"""Dataset adapters: each turns one upstream format into canonical tables (a dict name -> DataFrame).

Every adapter is `adapter(path, report=None) -> dict[str, DataFrame]`; it fills `report` with its counts.
"""

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pipelines.adapters.canonical import read_canonical
from pipelines.adapters.esci import read_esci
from pipelines.adapters.homedepot import read_homedepot
from pipelines.adapters.online_retail import read_online_retail
from pipelines.adapters.wands import read_wands

Adapter = Callable[..., dict[str, pd.DataFrame]]

ADAPTERS: dict[str, Adapter] = {
    "online_retail": read_online_retail,
    "homedepot": read_homedepot,
    "wands": read_wands,
    "esci": read_esci,
    "canonical": read_canonical,
}

# The tables each task needs from its adapter.
TASK_TABLES = {"retail": ("items", "users", "interactions"), "search": ("items", "queries")}


def load_source(adapter: str, path: Path, report: dict | None = None) -> dict[str, pd.DataFrame]:
    """Run the named adapter on `path`."""
    return ADAPTERS[adapter](Path(path), report=report)


__all__ = ["ADAPTERS", "TASK_TABLES", "load_source"]
