"""Small real models with the interface of training.model_store's models (MiniLM over item titles), in a real MLflow.

The service loads them through `$SHOPAUG_MODEL_LOADER=serving_fixture_models:load_model`, so the HTTP,
batching, reload and logging machinery is tested without waiting for a trained champion.
"""

import functools
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from core.encoder import TextEncoder

ADMIN_TOKEN = "test-admin-token"  # the servers started by the tests accept this admin token


@functools.cache
def _encoder() -> TextEncoder:
    return TextEncoder("minilm", max_length=32, batch_size=128)


class FixtureSearchModel:
    """Query and item vectors are MiniLM vectors of the text; `salt` makes two versions rank differently."""

    def __init__(self, item_ids: list[str], salt: str):
        self.item_ids, self.salt = item_ids, salt

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return _encoder().encode([f"{self.salt}{t}" for t in texts])

    def encode_items(self, items: pd.DataFrame) -> np.ndarray:
        return _encoder().encode([f"{self.salt}{t}" for t in items["title"].tolist()])


class FixtureRecommenderModel:
    """A user is the unit mean of the MiniLM vectors of the titles they bought (cached by `encode_items`)."""

    def __init__(self, titles: dict[str, str], salt: str):
        self.titles, self.salt = titles, salt
        self.item_ids = list(titles)
        self._vectors: dict[str, np.ndarray] = {}

    def encode_items(self, items: pd.DataFrame, item_features: pd.DataFrame | None = None) -> np.ndarray:
        vectors = _encoder().encode([f"{self.salt}{t}" for t in items["title"].tolist()])
        self._vectors.update(zip(items["item_id"].astype(str), vectors, strict=True))
        return vectors

    def encode_users(self, histories: list[list[str]], user_features: pd.DataFrame | None = None) -> np.ndarray:
        out = np.ones((len(histories), 384), dtype=np.float32)
        for row, history in enumerate(histories):
            known = [self._vectors[i] for i in history if i in self._vectors]
            if known:
                out[row] = np.mean(known, axis=0)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def load_model(uri: str):
    """Load a fixture model from a local folder or any MLflow artifact URI (`models:/name/version`)."""
    path = Path(uri)
    if not path.is_dir():
        import mlflow

        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    spec = json.loads((path / "fixture.json").read_text())
    if spec["kind"] == "search":
        return FixtureSearchModel(spec["item_ids"], spec["salt"])
    return FixtureRecommenderModel(spec["titles"], spec["salt"])


def register_fixture_model(
    tracking_uri: str, name: str, kind: str, items: pd.DataFrame, salt: str, alias: str = "champion"
) -> str:
    """Log a fixture model as a run's artifact, register it as a new version of `name`, point `alias` at it."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    spec = {
        "kind": kind,
        "salt": salt,
        "item_ids": items["item_id"].tolist(),
        "titles": dict(zip(items["item_id"], items["title"], strict=True)),
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        mlflow.start_run(run_name=f"fixture-{name}-{salt or 'v1'}") as run,
    ):
        (Path(tmp) / "fixture.json").write_text(json.dumps(spec))
        mlflow.log_artifacts(tmp, artifact_path="model")
        source = f"{run.info.artifact_uri}/model"
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name)
    version = client.create_model_version(name, source=source, run_id=run.info.run_id).version
    client.set_registered_model_alias(name, alias, version)
    return str(version)
