"""How long each DVC stage takes: the line a stage prints when it starts, and the record it keeps when it ends.

The expected time is this machine's last successful run of the stage (`data/cache/stage_times.json`, written
here), else the reference measured on 2 CPU cores with the default params (`reports/stage_times.json`, a copy of
such a record).
DVC names the running stage in `$DVC_STAGE` (e.g. `train@search-aug`); outside DVC nothing is printed.
"""

import json
import logging
import os
from pathlib import Path

from core.io import atomic_path
from core.paths import repo_root, shared_root

log = logging.getLogger("stage")
REFERENCE = repo_root() / "reports" / "stage_times.json"
LOCAL = shared_root() / "data" / "cache" / "stage_times.json"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _read(path: Path) -> dict[str, float]:
    """The record (stage -> seconds) at `path`, or {} when it is missing or unreadable: a log line never stops
    a stage."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def expected(stage: str) -> str:
    """'expected about 3.1 min (its last run here)', '... (reference: ...)' or 'no expected time (not measured yet)'."""
    if stage in (here := _read(LOCAL)):
        return f"expected about {_minutes(here[stage])} (its last run here)"
    if stage in (reference := _read(REFERENCE)):
        return f"expected about {_minutes(reference[stage])} (reference: default params, 2 CPU cores)"
    return "no expected time (not measured yet)"


def started() -> str | None:
    """Log the running DVC stage and its expected time; return the stage's name (None outside DVC)."""
    stage = os.environ.get("DVC_STAGE")
    if stage:
        log.info("stage %s: started, %s", stage, expected(stage))
    return stage


def finished(stage: str | None, seconds: float) -> None:
    """Log the stage's time and keep it as this machine's expectation for the next run."""
    if not stage:
        return
    log.info("stage %s: done in %s", stage, _minutes(seconds))
    record = _read(LOCAL) | {stage: round(seconds, 1)}
    LOCAL.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(LOCAL) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
