"""The champion bundles: a registered model version with its catalogue and ANN index, saved and swapped as one unit.

A bundle directory (one BentoML model per task) holds `meta.json`, the MLflow model in `model/`, the catalogue
`items.parquet`, the item vectors `vectors.npy` with their FAISS index `index.faiss`, and for the recommender
the known users' latest purchases `histories.parquet`, the cold-start `popularity.parquet` and, for a model that
ranks from history (the repeat/explore ranker), the purchases it ranks from, `interactions.parquet`, and every
known user's ranked candidates, `rankings.parquet` (a request without recent items is a lookup). A search
bundle holds its query encoder exported to ONNX Runtime in `query_encoder/` (serving/query_encoder.py) unless
`serve.query_encoder` is torch or the export failed, and a hybrid search model's BM25 index over the catalogue,
`lexical.pkl` (pickled: loading it takes 0.03 s where building it took 4 s of the serving process's CPU, with
the interpreter lock held, in the middle of a champion swap), and, for a model with a re-ranker, the items'
analysed words it reads, `item_words.pkl`.
"""

import importlib
import json
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from core.errors import ShopError
from core.params import Bm25Params, ServeParams
from core.paths import repo_root
from serving.query_encoder import OnnxQueryEncoder, export_query_encoder
from training.lexical import LexicalIndex
from training.model_store import download_model_dir, load_model
from training.repeat_explore import HISTORY_COLUMNS
from training.rerank import ItemWords

logger = logging.getLogger(__name__)

LOADER_ENV = "SHOPAUG_MODEL_LOADER"  # module:function replacing training.model_store.load_model (test fixtures)
GLOBAL = ""  # popularity context of requests that name no country
ITEM_COLUMNS = ["item_id", "title", "description", "category", "price"]
QUERY_ENCODER_DIR = "query_encoder"
WORDS_FILE = "item_words.pkl"  # a re-ranked search model's item words (training.rerank.ItemWords), pickled
LEXICAL_FILE = "lexical.pkl"  # a hybrid search model's BM25 index (training.lexical.LexicalIndex), pickled
CHECK_TEXTS = 64  # catalogue titles the ONNX query encoder must reproduce torch's vectors on


def model_loader() -> Any:
    """Return the `load_model(uri)` function: training.model_store's, or `$SHOPAUG_MODEL_LOADER` (module:function)."""
    spec = os.environ.get(LOADER_ENV)
    if not spec:
        return load_model
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ShopError(f"model loader '{spec}' cannot be imported ({exc})") from None


def tracking_uri(configured: str) -> str:
    """Return $MLFLOW_TRACKING_URI, else `configured` with a relative sqlite path resolved against the repo root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        uri = prefix + str(repo_root() / uri[len(prefix) :])
    return uri


def registry_client(uri: str):
    """Return an MlflowClient on `uri` (tracking and registry)."""
    return MlflowClient(tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri)


def champion_version(client, name: str, alias: str) -> str:
    """Return the version number `alias` points to for registered model `name`; ShopError if there is none."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        raise ShopError(
            f"registered model '{name}' has no version with alias '{alias}' ({str(exc).splitlines()[0]})"
        ) from None


class ItemIndex:
    """Inner-product ANN index over unit item vectors: exact (flat) for small catalogues, HNSW for large ones."""

    def __init__(self, item_ids: list[str], vectors: np.ndarray, index: faiss.Index):
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.position = {item_id: i for i, item_id in enumerate(item_ids)}
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = index

    @classmethod
    def build(cls, item_ids: list[str], vectors: np.ndarray, flat_max_items: int, hnsw_m: int) -> "ItemIndex":
        """Return an index over `vectors` (rows align with `item_ids`)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(item_ids) != len(vectors) or vectors.ndim != 2:
            raise ShopError(f"item index: {len(item_ids)} ids but vectors of shape {vectors.shape}")
        if len(item_ids) <= flat_max_items:
            index = faiss.IndexFlatIP(vectors.shape[1])
        else:
            index = faiss.IndexHNSWFlat(vectors.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = 128
        index.add(vectors)
        return cls(item_ids, vectors, index)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (scores, positions) of the top-k items per query row; positions of missing hits are -1."""
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self.item_ids)))

    def save(self, directory: Path) -> None:
        np.save(directory / "vectors.npy", self.vectors)
        faiss.write_index(self.index, str(directory / "index.faiss"))

    @classmethod
    def load(cls, directory: Path, item_ids: list[str]) -> "ItemIndex":
        return cls(item_ids, np.load(directory / "vectors.npy"), faiss.read_index(str(directory / "index.faiss")))


@dataclass
class Bundle:
    """One task's serving state; the service swaps a whole bundle, so requests never mix two versions."""

    task: str  # "retail" (recommender) or "search"
    registered_name: str
    version: str
    model: Any
    items: pd.DataFrame  # catalogue rows indexed by item_id
    index: ItemIndex
    histories: dict[str, list[str]] = field(default_factory=dict)
    popularity: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    interactions: pd.DataFrame | None = None  # what a history-based model (the repeat/explore ranker) ranks from
    lexical: LexicalIndex | None = None  # a hybrid search model's BM25 side, rows aligned with `index.item_ids`
    # a history-based model's ranked candidates per known user, as `save_bundle` writes them; None once loaded
    # (the model holds them then, as arrays: one copy per serving process)
    rankings: pd.DataFrame | None = None
    query_encoder: OnnxQueryEncoder | None = None  # search: the query tower on ONNX Runtime (else the model's)
    words: ItemWords | None = None  # a re-ranked search model's item words, rows aligned with `index.item_ids`

    def meta(self) -> dict:
        return {"task": self.task, "registered_name": self.registered_name, "version": self.version}


def download_model(uri: str, dst: Path) -> Path:
    """Download registered model `uri` into `dst`; return the folder `load_model` reads (the shopaug model folder
    inside an MLflow pyfunc model when there is one, else the downloaded artifacts as they are)."""
    try:
        return download_model_dir(uri, dst)
    except ShopError:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))


def encode_catalogue(model: Any, items: pd.DataFrame) -> np.ndarray:
    """Return the model's unit vectors for catalogue rows `items` (columns ITEM_COLUMNS)."""
    vectors = np.asarray(model.encode_items(items.reset_index(drop=True)[ITEM_COLUMNS]), dtype=np.float32)
    if len(vectors) != len(items):
        raise ShopError(f"model returned {len(vectors)} item vectors for {len(items)} catalogue items")
    return vectors


def indexed_texts(model: Any, items: pd.DataFrame) -> pd.Series | None:
    """The text the hybrid search model `model` indexes for each of the catalogue rows `items`, in their order
    (`SearchModel.fit`): its `hybrid.text_column`, taken from `model.items` by item id when `items` lack the
    column, the title for items the model does not know. None for a model without `hybrid` (dense only)."""
    hybrid = getattr(model, "hybrid", None)
    if not hybrid:
        return None
    column, ids = hybrid["text_column"], items["item_id"].astype(str)
    if column in items.columns:
        texts = items[column]
    else:
        known = getattr(model, "items", None)
        if known is None or column not in known.columns:
            known = pd.DataFrame({"item_id": [], column: []})
        by_id = known.assign(item_id=known["item_id"].astype(str)).drop_duplicates("item_id").set_index("item_id")
        texts = ids.map(by_id[column])
        missing = int(texts.isna().sum())
        if missing:
            logger.warning(
                "hybrid search: %d of %d catalogue items have no '%s' in the model; BM25 indexes their title",
                missing,
                len(items),
                column,
            )
        texts = texts.fillna(items["title"])
    return texts.astype(str)


def lexical_index(model: Any, items: pd.DataFrame) -> LexicalIndex | None:
    """BM25 over `indexed_texts` with the hybrid model's BM25 settings, rows in the order of `items`."""
    texts = indexed_texts(model, items)
    if texts is None:
        return None
    ids = items["item_id"].astype(str).tolist()
    return LexicalIndex(Bm25Params(**model.hybrid["bm25"])).fit(ids, texts.tolist())


def item_words(model: Any, items: pd.DataFrame, lexical: LexicalIndex | None) -> ItemWords | None:
    """The re-ranker's analysed title and text words of the rows `items` (None: the model has no re-ranker)."""
    if getattr(model, "reranker", None) is None or lexical is None:
        return None
    return ItemWords.build(lexical, items["title"].astype(str).tolist(), indexed_texts(model, items).tolist())


def onnx_query_encoder(model: Any, items: pd.DataFrame, threads: int, int8: bool) -> OnnxQueryEncoder | None:
    """`model`'s query tower exported to ONNX Runtime (int8 weights if `int8`) and checked on catalogue titles;
    None (torch serves the queries, with a warning) when the model has no query tower or the export fails."""
    tower = getattr(getattr(model, "net", None), "query_tower", None)
    if tower is None:
        logger.warning("query encoder: %s has no query tower to export; torch encodes queries", type(model).__name__)
        return None
    titles = items["title"].astype(str)
    longest = titles[titles.str.len().nlargest(8).index]  # cut at the tower's max_length
    texts = [*titles.head(CHECK_TEXTS), *longest, "warm up"]
    try:
        return export_query_encoder(tower, texts, threads, int8)
    except (ShopError, RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
        logger.warning("query encoder: ONNX export failed, torch encodes queries (%s)", exc)
        return None


def assemble_bundle(
    task: str,
    name: str,
    version: str,
    model: Any,
    items: pd.DataFrame,
    histories: dict[str, list[str]] | None,
    popularity: dict[str, list[tuple[str, float]]] | None,
    serve: ServeParams,
    interactions: pd.DataFrame | None = None,
) -> Bundle:
    """Encode the catalogue with `model`, build the index (and a hybrid search model's BM25 index), and return
    the bundle. A model that ranks from history (`attach_history`) is given `interactions` first and ranks every
    known user once, so serving looks those users up; a search model's query tower is exported to ONNX Runtime
    when `serve.query_encoder` says so."""
    rankings = None
    if interactions is not None and not hasattr(model, "attach_history"):
        interactions = None  # a model that does not rank from history ships without them
    if interactions is not None:
        interactions = interactions[HISTORY_COLUMNS]
        model.attach_history(interactions)
        rankings = model.rankings()
        model.use_rankings(rankings)
    items = items.set_index("item_id", drop=False) if "item_id" in items.columns else items
    items = items[~items.index.duplicated()]
    vectors = encode_catalogue(model, items)
    index = ItemIndex.build(items.index.tolist(), vectors, serve.flat_index_max_items, serve.hnsw_m)
    query_encoder, lexical = None, lexical_index(model, items)
    if task == "search" and serve.query_encoder != "torch":
        query_encoder = onnx_query_encoder(model, items, serve.torch_threads, serve.query_encoder == "onnx_int8")
    return Bundle(
        task,
        name,
        str(version),
        model,
        items,
        index,
        histories or {},
        popularity or {},
        interactions,
        lexical,
        rankings,
        query_encoder,
        item_words(model, items, lexical),
    )


def save_bundle(bundle: Bundle, directory: Path) -> None:
    """Write everything but the model (the caller puts the MLflow model in `directory/model`)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "meta.json").write_text(json.dumps(bundle.meta(), indent=2) + "\n")
    bundle.items.reset_index(drop=True)[ITEM_COLUMNS].to_parquet(directory / "items.parquet", index=False)
    bundle.index.save(directory)
    if bundle.task == "retail":
        pd.DataFrame({"user_id": list(bundle.histories), "item_ids": list(bundle.histories.values())}).to_parquet(
            directory / "histories.parquet", index=False
        )
        rows = [(ctx, item, score) for ctx, ranked in bundle.popularity.items() for item, score in ranked]
        pd.DataFrame(rows, columns=["context", "item_id", "score"]).to_parquet(
            directory / "popularity.parquet", index=False
        )
    if bundle.interactions is not None:
        bundle.interactions.to_parquet(directory / "interactions.parquet", index=False)
    if bundle.rankings is not None:
        bundle.rankings.to_parquet(directory / "rankings.parquet", index=False)
    if bundle.query_encoder is not None:
        bundle.query_encoder.save(directory / QUERY_ENCODER_DIR)
    if bundle.lexical is not None:
        (directory / LEXICAL_FILE).write_bytes(pickle.dumps(bundle.lexical))
    if bundle.words is not None:
        (directory / WORDS_FILE).write_bytes(pickle.dumps(bundle.words))


def load_bundle(directory: Path, load_model=None, threads: int = 1) -> Bundle:
    """Load a bundle saved by `save_bundle` plus its MLflow model (through `load_model`, default model_loader());
    its ONNX query encoder, if it has one, runs on `threads` threads."""
    directory = Path(directory)
    meta = json.loads((directory / "meta.json").read_text())
    model = (load_model or model_loader())(str(directory / "model"))
    items = pd.read_parquet(directory / "items.parquet").set_index("item_id", drop=False)
    index = ItemIndex.load(directory, items.index.tolist())
    histories, popularity = {}, {}
    if meta["task"] == "retail":
        frame = pd.read_parquet(directory / "histories.parquet")
        histories = {u: list(h) for u, h in zip(frame["user_id"], frame["item_ids"], strict=True)}
        pop = pd.read_parquet(directory / "popularity.parquet")
        for ctx, group in pop.groupby("context", sort=False):
            popularity[str(ctx)] = list(zip(group["item_id"], group["score"].astype(float), strict=True))
    interactions = None
    if (directory / "interactions.parquet").exists():
        interactions = pd.read_parquet(directory / "interactions.parquet")
        model.attach_history(interactions)
    if (directory / "rankings.parquet").exists():
        model.use_rankings(pd.read_parquet(directory / "rankings.parquet"))
    query_encoder = None
    if (directory / QUERY_ENCODER_DIR).is_dir():
        query_encoder = OnnxQueryEncoder.load(directory / QUERY_ENCODER_DIR, threads)
    lexical_file = directory / LEXICAL_FILE
    lexical = pickle.loads(lexical_file.read_bytes()) if lexical_file.exists() else lexical_index(model, items)
    words_file = directory / WORDS_FILE
    words = pickle.loads(words_file.read_bytes()) if words_file.exists() else item_words(model, items, lexical)
    return Bundle(
        meta["task"],
        meta["registered_name"],
        meta["version"],
        model,
        items,
        index,
        histories,
        popularity,
        interactions,
        lexical,
        None,
        query_encoder,
        words,
    )


def packaged_bundle(name: str, version: str) -> Path | None:
    """The folder of the newest bundle of registered model `name` at `version` in the BentoML model store
    ($BENTOML_HOME), as `python -m serving.package` labels it; None when that version was never packaged."""
    import bentoml

    found = [m for m in bentoml.models.list(name) if m.info.labels.get("mlflow_version") == str(version)]
    return Path(max(found, key=lambda m: m.info.creation_time).path) if found else None


def user_histories(interactions: pd.DataFrame, history_len: int) -> dict[str, list[str]]:
    """Return each known user's latest `history_len` purchases, oldest first, repeats kept (as training sees them)."""
    known = interactions.dropna(subset=["user_id"]).sort_values(["ts", "basket_id"], kind="stable")
    latest = known.groupby("user_id", sort=False).tail(history_len)
    return {str(u): [str(i) for i in g] for u, g in latest.groupby("user_id", sort=False)["item_id"]}


def context_popularity(
    interactions: pd.DataFrame, users: pd.DataFrame | None, days: int, top: int = 200
) -> dict[str, list[tuple[str, float]]]:
    """Return the most bought items (distinct baskets) of the last `days`, globally ("") and per country."""
    recent = interactions[interactions["ts"] >= interactions["ts"].max() - pd.Timedelta(days=days)]
    baskets = recent.drop_duplicates(["basket_id", "item_id"])
    ranked: dict[str, list[tuple[str, float]]] = {GLOBAL: _top(baskets, top)}
    if users is not None and "country" in users.columns:
        with_country = baskets.merge(users[["user_id", "country"]], on="user_id", how="inner")
        for country, group in with_country.groupby("country"):
            ranked[str(country).strip().lower()] = _top(group, top)
    return ranked


def _top(baskets: pd.DataFrame, top: int) -> list[tuple[str, float]]:
    counts = baskets["item_id"].value_counts().head(top)
    share = counts / max(1, baskets["basket_id"].nunique())
    return [(str(i), float(s)) for i, s in share.items()]
