"""A stand-in pyfunc model for registry tests where the real trained model is not the point."""

import json
from pathlib import Path

import mlflow
import numpy as np

from training import tracking


class TinyPyfunc(mlflow.pyfunc.PythonModel):
    """A stand-in model: its folder holds `quality.json`; predict returns that quality once per input row."""

    def load_context(self, context):
        folder = Path(context.artifacts["model_dir"])
        self.quality = json.loads((folder / "quality.json").read_text())["quality"]

    def predict(self, context, model_input, params=None):
        return np.full((len(model_input), 4), self.quality, dtype=np.float32)


def tiny_model_dir(path: Path, quality: float) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "quality.json").write_text(json.dumps({"quality": quality}))
    return path


def lineage(root: Path, task: str, variant: str) -> tracking.Lineage:
    """The lineage paths of `task`/`variant` in a repo-shaped folder (what the train stage's options name)."""
    return tracking.Lineage(
        data=root / "data/fused" / task / variant,
        splits=root / "data/splits" / task,
        canonical=root / "data/canonical" / task,
        synthetic=root / "data/synthetic",
        gate=root / "metrics/gate",
        gate_reports=root / "reports/gate",
        raw=root / "data/raw" / task,
    )
