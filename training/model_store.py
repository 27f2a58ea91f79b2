"""Model folders: save a trained model, load one back (from a folder or the MLflow registry), download a
registered model's folder. Serving loads its champion through `load_model`.

Folder layout: `model.json` (config, `kind`, `format_version`), `weights.pt` (heads), `items.parquet`, and
`query_encoder/` + with a re-ranker `reranker.txt` (LightGBM) (search) or `item_text_vectors.npy` +
`item_buckets.npy` (recommender), `item_encoder/` when the item text is encoded by a frozen pretrained encoder.
The repeat/explore recommender: `model.json`, `ranker.txt` (LightGBM; `ranker_before_validation.txt`, the
booster before its refit on the validation window, scored on validation) and `history.parquet` (the
interactions it ranks from until serving attaches newer ones).
"""

import json
import tempfile
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import torch
import yaml
from mlflow.exceptions import MlflowException

from core.errors import ShopError
from core.params import RankerTrainParams, load_params
from core.paths import repo_root, shared_root
from training.models import BiEncoder, TextTower, build_two_tower
from training.registry import ensure_configured
from training.repeat_explore import RepeatExploreModel
from training.rerank import Reranker
from training.serving_api import FrozenTextVectors, RecommenderModel, SearchModel

FORMAT_VERSION = 1
RERANKER_FILE = "reranker.txt"  # a search model's re-ranker (training/rerank.py)
MODEL_DIR_KEY = "model_dir"  # the pyfunc artifact holding the saved folder (at <model>/artifacts/model_dir)


def default_cache_dir() -> Path:
    """The shared frozen-text embedding cache: `train.cache_dir` of the repository's params.yaml; outside a
    checkout (a logged model loaded with its own code, e.g. by `mlflow models serve`) a per-user cache."""
    if (repo_root() / "params.yaml").is_file():
        return shared_root() / load_params().train.cache_dir
    return Path.home() / ".cache" / "shopaug" / "text_vectors"


Model = SearchModel | RecommenderModel | RepeatExploreModel


def _save_ranker(model: RepeatExploreModel, folder: Path) -> None:
    model.booster.save_model(str(folder / "ranker.txt"))
    if model.selection is not None:
        model.selection.save_model(str(folder / "ranker_before_validation.txt"))
    model.history.to_parquet(folder / "history.parquet", index=False)
    config = {**model.config, "kind": "repeat_explore", "format_version": FORMAT_VERSION}
    (folder / "model.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")


def _load_ranker(folder: Path, config: dict) -> RepeatExploreModel:
    booster = lgb.Booster(model_file=str(folder / "ranker.txt"))
    history = pd.read_parquet(folder / "history.parquet")
    before = folder / "ranker_before_validation.txt"
    selection = lgb.Booster(model_file=str(before)) if before.exists() else None
    return RepeatExploreModel(booster, RankerTrainParams(**config["settings"]), config, history, selection)


def save_model(model: Model, folder: str | Path) -> Path:
    """Write `model` as a self-contained folder (layout in the module docstring); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, RepeatExploreModel):
        _save_ranker(model, folder)
        return folder
    net = model.net
    heads = {n: t for n, t in net.state_dict().items() if not n.startswith("query_tower.")}
    torch.save(heads, folder / "weights.pt")
    model.items.to_parquet(folder / "items.parquet", index=False)
    config = dict(model.config)
    if isinstance(model, SearchModel):
        net.query_tower.export(folder / "query_encoder")
        config["kind"] = "search"
        if model.reranker is not None:
            model.reranker.booster.save_model(folder / RERANKER_FILE)
    else:
        np.save(folder / "item_text_vectors.npy", model.text_vectors)
        np.save(folder / "item_buckets.npy", model.buckets)
        config["kind"] = "recommender"
    if model.item_text is not None:
        encoder = model.item_text.encoder
        encoder.model.save_pretrained(folder / "item_encoder")
        encoder.tokenizer.save_pretrained(folder / "item_encoder")
    config["format_version"] = FORMAT_VERSION
    (folder / "model.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    return folder


def load_model_from_folder(folder: str | Path, cache_dir: str | Path | None = None) -> Model:
    """Rebuild the model `save_model` wrote; refuses a folder without model.json or of another format version.

    Frozen item-text vectors are cached under `cache_dir` (default: `default_cache_dir()`).
    """
    folder = Path(folder)
    try:
        config = json.loads((folder / "model.json").read_text())
    except (OSError, ValueError) as exc:
        raise ShopError(f"{folder}: not a shopaug model folder (model.json: {exc})") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise ShopError(f"{folder}/model.json: format_version {config.get('format_version')} != {FORMAT_VERSION}")
    if config.get("kind") == "repeat_explore":
        return _load_ranker(folder, config)
    heads = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
    items = pd.read_parquet(folder / "items.parquet")
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    item_text = (
        FrozenTextVectors(str(folder / "item_encoder"), config["item_max_length"], cache_dir)
        if (folder / "item_encoder").exists()
        else None
    )
    if config["kind"] == "search":
        tower = TextTower(str(folder / "query_encoder"), config["query_max_length"])
        net = BiEncoder(tower, config["shared_items"], 1.0)
        net.load_state_dict(heads, strict=False)
        reranker = None
        if "rerank" in config:
            if not (folder / RERANKER_FILE).is_file():
                raise ShopError(f"{folder}: model.json names a re-ranker but {RERANKER_FILE} is missing")
            booster = lgb.Booster(model_file=str(folder / RERANKER_FILE))
            reranker = Reranker(booster, config["rerank"]["depth"])
        return SearchModel(net, items, config, item_text, reranker)
    net = build_two_tower(config)
    net.load_state_dict(heads)
    return RecommenderModel(
        net, items, config, item_text, np.load(folder / "item_text_vectors.npy"), np.load(folder / "item_buckets.npy")
    )


def download_model_dir(model_uri: str, dst: str | Path | None = None) -> Path:
    """Download a logged/registered model (`models:/shopaug-search@champion`, `runs:/...`) and return the
    saved model folder it wraps, byte for byte as the training code wrote it."""
    ensure_configured()
    dst = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="shopaug-model-"))
    try:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    except MlflowException as exc:
        raise ShopError(f"{model_uri}: cannot download model ({str(exc).splitlines()[0]})") from None
    try:  # where pyfunc put the folder: MLmodel -> flavors.python_function.artifacts.model_dir.path
        mlmodel = yaml.safe_load((root / "MLmodel").read_text())
        folder = root / mlmodel["flavors"]["python_function"]["artifacts"][MODEL_DIR_KEY]["path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        folder = None
    if folder is None or not folder.is_dir():
        raise ShopError(f"{model_uri}: not a shopaug model (its MLmodel names no `{MODEL_DIR_KEY}` artifact)")
    return folder


def is_registry_uri(text: str) -> bool:
    """True for `models:/...` and `runs:/...` URIs."""
    return str(text).startswith(("models:/", "runs:/"))


def load_model(model_uri_or_folder: str | Path, cache_dir: str | Path | None = None) -> Model:
    """A local model folder, or a registered/logged MLflow model (`models:/shopaug-recommender@champion`)."""
    text = str(model_uri_or_folder)
    if Path(text).expanduser().is_dir():
        return load_model_from_folder(Path(text).expanduser(), cache_dir)
    if is_registry_uri(text):
        return load_model_from_folder(download_model_dir(text), cache_dir)
    raise ShopError(f"{text}: neither a model folder nor a models:/ or runs:/ URI")
