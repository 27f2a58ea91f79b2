"""Small real models for the service, in a real MLflow: a real repeat/explore ranker trained on the slice in
seconds, and fixture models with the interface of training.model_store's vector models (MiniLM over titles); the
search fixture is a real `SearchModel` (a hybrid when given `hybrid`) with MiniLM in place of the trained towers.

The service loads them through `$SHOPAUG_MODEL_LOADER=serving_fixture_models:load_model`, so the HTTP,
batching, reload and logging machinery is tested without waiting for a trained champion.
"""

import functools
import json
import os
import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from core.encoder import TextEncoder
from core.params import load_params
from training.model_store import load_model_from_folder, save_model
from training.repeat_explore import first_baskets, train_repeat_explore
from training.rerank import Reranker, examples, train_reranker
from training.serving_api import SearchModel

ADMIN_TOKEN = "test-admin-token"  # the servers started by the tests accept this admin token
QUERY_DELAY_ENV = "SHOPAUG_FIXTURE_QUERY_DELAY_S"  # seconds each query-encoder call sleeps (a slow model)
SLOW_QUERY_S, SLOW_DEADLINE_MS = 0.3, 100  # the slow server's query-encoder time and deadline: searches are late
# a trained hybrid's `config["hybrid"]` (training.train.attach_hybrid), with a high BM25 share and the validated
# BM25 settings; its text column is the fixture's document expansion
EXPANSION_WORD = "zanzibarite"  # a word of one item's expanded search text only, in no title
NEW_ITEMS = 3  # the last catalogue items, unknown to the v1 search model
FIXTURE_HYBRID = {
    "weight": 0.7,
    "depth": 100,
    "bm25": load_params().baselines.bm25.model_dump(),
    "text_column": "search_text",
}


@functools.cache
def _encoder() -> TextEncoder:
    return TextEncoder("minilm", max_length=32, batch_size=128)


class FixtureSearchModel(SearchModel):
    """A `SearchModel` over `items` (item_id, title, search_text) whose query and item vectors are MiniLM vectors of
    the text; `salt` makes two versions rank differently; `hybrid` as a trained model's `config["hybrid"]` (None:
    dense only). Fusion, `catalogue_scores` and `search` are SearchModel's own: what the harness evaluates."""

    def __init__(self, items: pd.DataFrame, salt: str, hybrid: dict | None = None, rerank: dict | None = None):
        self.net, self.item_text, self.salt, self.reranker = None, None, salt, None
        self.config = {"name": "fixture_hybrid" if hybrid else "fixture", **({"hybrid": hybrid} if hybrid else {})}
        if rerank:  # {"depth", "booster": a trained LightGBM booster as text} (fixture_reranker)
            self.reranker = Reranker(lgb.Booster(model_str=rerank["booster"]), rerank["depth"])
            self.config["rerank"] = {"depth": rerank["depth"]}
        self.name = self.config["name"]
        self.fit(pd.DataFrame(), items)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        time.sleep(float(os.environ.get(QUERY_DELAY_ENV, "0")))
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
    """Load a fixture model, or a real shopaug model folder (model.json), from a local folder or any MLflow
    artifact URI (`models:/name/version`)."""
    path = Path(uri)
    if not path.is_dir():
        import mlflow

        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    if (path / "model.json").is_file():
        return load_model_from_folder(path)
    spec = json.loads((path / "fixture.json").read_text())
    if spec["kind"] == "search":
        return FixtureSearchModel(pd.DataFrame(spec["items"]), spec["salt"], spec.get("hybrid"), spec.get("rerank"))
    return FixtureRecommenderModel(spec["titles"], spec["salt"])


def fixture_reranker(items: pd.DataFrame, hybrid: dict, judged: pd.DataFrame) -> dict:
    """A real re-ranker (training/rerank.py) for the fixture hybrid over `items`, trained on the graded `judged`
    (query, item_id, relevance in [0, 1]) rows: {"depth", "booster" (text)} for `register_fixture_model`."""
    model = FixtureSearchModel(items, "", hybrid)
    settings = load_params().train.search.rerank.model_copy(update={"depth": 20, "min_data_in_leaf": 5, "rounds": 30})
    table = examples(judged, model.stage_scores, model.lexical(), model.words(), model.item_ids, 20, "re-ranker")
    reranker, _ = train_reranker(table, table, settings, 0)
    return {"depth": settings.depth, "booster": reranker.booster.model_to_string()}


def train_ranker(interactions: pd.DataFrame, window_days: int = 1):
    """A real repeat/explore ranker trained on `interactions` (two windows of `window_days`, the last
    `window_days` as validation), with the project's ranker settings otherwise."""
    settings = load_params().train.retail.ranker.model_copy(update={"windows": 2, "window_days": window_days})
    end = interactions["ts"].max() + pd.Timedelta(seconds=1)
    before = end - pd.Timedelta(days=window_days)
    valid = first_baskets(interactions, before, end)
    model, _ = train_repeat_explore(
        interactions[interactions["ts"] < before], interactions, valid, before, settings, "aug", 0
    )
    return model


def register_ranker(tracking_uri: str, name: str, interactions: pd.DataFrame, alias: str = "champion") -> str:
    """Train a real ranker on `interactions`, log its model folder, register it as a new version of `name`."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_name=f"ranker-{name}") as run:
        save_model(train_ranker(interactions), tmp)
        mlflow.log_artifacts(tmp, artifact_path="model")
    return _register(client, name, run, alias)


def _register(client, name: str, run, alias: str) -> str:
    """Register the run's `model` artifact folder as a new version of `name` and point `alias` at it."""
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name)
    source = f"{run.info.artifact_uri}/model"
    version = client.create_model_version(name, source=source, run_id=run.info.run_id).version
    client.set_registered_model_alias(name, alias, version)
    return str(version)


def register_fixture_model(
    tracking_uri: str,
    name: str,
    kind: str,
    items: pd.DataFrame,
    salt: str,
    alias: str = "champion",
    hybrid: dict | None = None,
    rerank: dict | None = None,
) -> str:
    """Log a fixture model as a run's artifact, register it as a new version of `name`, point `alias` at it. A
    search model knows `items` (their `search_text`, else the title), is a hybrid when given `hybrid` and has a
    re-ranker when given `rerank` (`fixture_reranker`)."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    spec = {
        "kind": kind,
        "salt": salt,
        "titles": dict(zip(items["item_id"], items["title"], strict=True)),
        "items": [
            {"item_id": str(i), "title": t, "search_text": x}
            for i, t, x in zip(items["item_id"], items["title"], items.get("search_text", items["title"]), strict=True)
        ],
        "hybrid": hybrid,
        "rerank": rerank,
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        mlflow.start_run(run_name=f"fixture-{name}-{salt or 'v1'}") as run,
    ):
        (Path(tmp) / "fixture.json").write_text(json.dumps(spec))
        mlflow.log_artifacts(tmp, artifact_path="model")
    return _register(client, name, run, alias)
