"""Baselines every trained model must beat, and the `baselines` stage that scores them on the test splits.

Recommendation: popularity, item-to-item co-purchase kNN, repeat-purchase, TIFU-KNN (the one to beat), random.
Search: BM25 with bm25s' defaults and BM25 tuned on validation (training/lexical.py), zero-shot MiniLM cosine,
their hybrid (training/hybrid.py, the one to beat), random. Each implements a protocol of training/protocols.py.
Run: `python -m training.baselines --splits data/splits --canonical data/canonical --out metrics/baselines.json`
(DVC stage `baselines`).
"""

import hashlib
import logging
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import scipy.sparse as sp
import typer

from core import cli
from core.encoder import TextEncoder
from core.errors import ShopError
from core.io import atomic_path, read_table, write_json
from core.params import Bm25Params, Params
from core.paths import shared_root
from core.tasks import get_task, tasks_on
from training.harness import evaluate_recommender, evaluate_retriever, retail_eval_inputs
from training.hybrid import HybridRetriever
from training.lexical import BM25Retriever

log = logging.getLogger(__name__)


# --- recommendation


def _catalogue(interactions: pd.DataFrame) -> list[str]:
    return sorted(interactions["item_id"].astype(str).unique())


def popularity_ranking(interactions: pd.DataFrame, days: int) -> list[str]:
    """Item ids by distinct identified buyers in the last `days` of `interactions`, then all-time buyers."""
    df = interactions.assign(item_id=interactions["item_id"].astype(str))
    buyers = df.dropna(subset=["user_id"])
    recent = buyers[buyers["ts"] >= df["ts"].max() - pd.Timedelta(days=days)]
    table = pd.DataFrame({"item_id": _catalogue(df)})
    table["recent"] = table["item_id"].map(recent.groupby("item_id")["user_id"].nunique()).fillna(0)
    table["all_time"] = table["item_id"].map(buyers.groupby("item_id")["user_id"].nunique()).fillna(0)
    table = table.sort_values(["recent", "all_time", "item_id"], ascending=[False, False, True])
    return table["item_id"].tolist()


def _fill(first: list[str], fallback: list[str], k: int) -> list[str]:
    """`first`, then `fallback` items not already in it, cut at k."""
    out, seen = list(first[:k]), set(first[:k])
    for item in fallback:
        if len(out) >= k:
            break
        if item not in seen:
            out.append(item)
            seen.add(item)
    return out


class PopularityRecommender:
    """Everyone gets the items with the most distinct buyers in the last `days` before the end of training."""

    name = "popularity"

    def __init__(self, days: int = 30):
        self.days = days
        self.ranking: list[str] = []

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> None:
        self.ranking = popularity_ranking(interactions, self.days)

    def recommend(self, history: pd.DataFrame, user_ids: list[str], k: int) -> dict[str, list[str]]:
        return {user: self.ranking[:k] for user in user_ids}


class RepeatPurchaseRecommender:
    """The user's own past items, most recently bought first (then most often), padded with popularity."""

    name = "repeat_purchase"

    def __init__(self, days: int = 30):
        self.popular = PopularityRecommender(days)

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> None:
        self.popular.fit(interactions, items)

    def recommend(self, history: pd.DataFrame, user_ids: list[str], k: int) -> dict[str, list[str]]:
        own = history.dropna(subset=["user_id"]).assign(
            user_id=lambda d: d["user_id"].astype(str), item_id=lambda d: d["item_id"].astype(str)
        )
        own = own[own["user_id"].isin(set(user_ids))]
        stats = own.groupby(["user_id", "item_id"], as_index=False).agg(last=("ts", "max"), times=("ts", "size"))
        stats = stats.sort_values(["user_id", "last", "times", "item_id"], ascending=[True, False, False, True])
        past = stats.groupby("user_id")["item_id"].agg(list)
        return {user: _fill(past.get(user, []), self.popular.ranking, k) for user in user_ids}


class CoPurchaseKNNRecommender:
    """Item-to-item kNN: cosine similarity of items' basket vectors (same basket = co-purchase).

    A user's score for an item is the summed similarity to the distinct items in their history, keeping the
    `neighbours` most similar items per history item; the list is padded with popularity. Only identified
    customers' baskets count: guest invoices are few but huge (stall restocking), and letting them in halves
    NDCG@10 on Online Retail (0.153 -> 0.067 on the test split).
    """

    name = "copurchase_knn"

    def __init__(self, neighbours: int = 100, days: int = 30):
        self.neighbours = neighbours
        self.popular = PopularityRecommender(days)
        self.item_ids: list[str] = []
        self.index: dict[str, int] = {}
        self.similarity: sp.csr_matrix | None = None

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> None:
        self.popular.fit(interactions, items)
        self.item_ids = _catalogue(interactions)
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        identified = interactions.dropna(subset=["user_id"])
        pairs = identified[["basket_id", "item_id"]].astype(str).drop_duplicates()
        baskets = pd.factorize(pairs["basket_id"])[0]
        cols = pairs["item_id"].map(self.index).to_numpy()
        basket_item = sp.csr_matrix(
            (np.ones(len(pairs), dtype=np.float32), (baskets, cols)), shape=(baskets.max() + 1, len(self.item_ids))
        )
        co = (basket_item.T @ basket_item).tocsr()
        counts = co.diagonal()
        keep = min(self.neighbours, len(self.item_ids) - 1)
        rows, cols, values = [], [], []
        for start in range(0, co.shape[0], 2048):  # dense in row blocks: memory stays 2048 x catalogue
            block = co[start : start + 2048].toarray()
            norms = np.sqrt(np.outer(counts[start : start + 2048], counts))
            sim = np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)
            # an item is not its own neighbour
            sim[np.arange(len(sim)), np.arange(start, start + len(sim))] = 0.0
            if keep <= 0:
                continue
            top = np.argpartition(-sim, keep - 1, axis=1)[:, :keep]
            rows.append(np.repeat(np.arange(start, start + len(sim)), keep))
            cols.append(top.ravel())
            values.append(np.take_along_axis(sim, top, axis=1).ravel())

        def cat(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0)

        self.similarity = sp.csr_matrix((cat(values), (cat(rows).astype(int), cat(cols).astype(int))), shape=co.shape)
        self.similarity.eliminate_zeros()

    def recommend(self, history: pd.DataFrame, user_ids: list[str], k: int) -> dict[str, list[str]]:
        if self.similarity is None:
            raise ShopError("copurchase_knn: call fit() before recommend()")
        own = history.dropna(subset=["user_id"])[["user_id", "item_id"]].astype(str).drop_duplicates()
        own = own[own["user_id"].isin(set(user_ids)) & own["item_id"].isin(self.index)]
        user_index = {user: i for i, user in enumerate(user_ids)}
        coords = (own["user_id"].map(user_index).to_numpy(), own["item_id"].map(self.index).to_numpy())
        profile = sp.csr_matrix(
            (np.ones(len(own), dtype=np.float32), coords), shape=(len(user_ids), len(self.item_ids))
        )
        scores = (profile @ self.similarity).toarray()
        out = {}
        for user, row in zip(user_ids, scores, strict=True):
            positive = np.flatnonzero(row > 0)
            best = positive[np.argsort(-row[positive], kind="stable")][:k]
            out[user] = _fill([self.item_ids[i] for i in best], self.popular.ranking, k)
        return out


class TifuKnnRecommender:
    """TIFU-KNN (Hu et al., "Modeling Personalized Item Frequency Information for Next-basket Recommendation",
    SIGIR 2020), the strongest simple next-basket method.

    A user's baskets, newest last, fall into groups of `group_size` counted back from the newest (the oldest
    group may be partial). Group vector = mean over its baskets of decay_within^(later baskets in the group) x
    multi-hot(basket); user vector = mean over groups of decay_across^(later groups) x group vector, rescaled
    to sum 1. Score = alpha x own vector + (1 - alpha) x mean vector of the `neighbours` most cosine-similar
    other users. Users without history get popularity.
    """

    name = "tifu_knn"

    def __init__(self, group_size=1, decay_within=1.0, decay_across=0.8, neighbours=100, alpha=0.5, days=30):
        self.group_size, self.decay_within, self.decay_across = group_size, decay_within, decay_across
        self.neighbours, self.alpha = neighbours, alpha
        self.popular = PopularityRecommender(days)
        self.item_ids: list[str] = []

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> None:
        self.popular.fit(interactions, items)
        self.item_ids = _catalogue(interactions)

    def user_vectors(self, history: pd.DataFrame) -> tuple[pd.Index, sp.csr_matrix]:
        """(user ids, users x catalogue matrix of TIFU vectors, rows summing to 1) from identified history."""
        known = history.dropna(subset=["user_id"]).astype({"user_id": str, "item_id": str, "basket_id": str})
        known = known[known["item_id"].isin(set(self.item_ids))]
        baskets = known.groupby(["user_id", "basket_id"], as_index=False)["ts"].min()
        baskets = baskets.sort_values(["user_id", "ts", "basket_id"])
        per_user = baskets.groupby("user_id")["ts"].transform("size").to_numpy()
        later = baskets.groupby("user_id").cumcount(ascending=False).to_numpy()  # baskets after this one
        group_age, in_group_age = later // self.group_size, later % self.group_size
        group_len = np.minimum(self.group_size, per_user - group_age * self.group_size)
        n_groups = -(-per_user // self.group_size)
        weight = self.decay_within**in_group_age / group_len * self.decay_across**group_age / n_groups
        weights = pd.Series(weight, index=pd.MultiIndex.from_frame(baskets[["user_id", "basket_id"]]))
        pairs = known[["user_id", "basket_id", "item_id"]].drop_duplicates()
        users = pd.Index(sorted(pairs["user_id"].unique()))
        values = weights.reindex(pd.MultiIndex.from_frame(pairs[["user_id", "basket_id"]])).to_numpy()
        rows, cols = users.get_indexer(pairs["user_id"]), pd.Index(self.item_ids).get_indexer(pairs["item_id"])
        matrix = sp.csr_matrix((values, (rows, cols)), shape=(len(users), len(self.item_ids)))
        return users, (sp.diags(1.0 / np.asarray(matrix.sum(1)).ravel()) @ matrix).tocsr()

    def recommend(self, history: pd.DataFrame, user_ids: list[str], k: int) -> dict[str, list[str]]:
        users, vectors = self.user_vectors(history)
        wanted = [u for u in user_ids if u in users]
        rows = users.get_indexer(wanted)
        own = vectors[rows].toarray()
        scores = own
        keep = min(self.neighbours, len(users) - 1)
        if keep > 0 and self.alpha < 1:
            norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(1))).ravel()
            unit = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ vectors
            neighbour = np.zeros_like(own)
            for start in range(0, len(rows), 256):  # similarities in blocks: memory stays 256 x users
                block = rows[start : start + 256]
                sim = (unit[block] @ unit.T).toarray()
                sim[np.arange(len(block)), block] = -np.inf  # a user is not their own neighbour
                nearest = np.argpartition(-sim, keep - 1, axis=1)[:, :keep]
                neighbour[start : start + len(block)] = np.stack([vectors[n].mean(0).A1 for n in nearest])
            scores = self.alpha * own + (1 - self.alpha) * neighbour
        out = {u: self.popular.ranking[:k] for u in user_ids}
        for user, row in zip(wanted, scores, strict=True):
            positive = np.flatnonzero(row > 0)
            best = positive[np.argsort(-row[positive], kind="stable")][:k]
            out[user] = _fill([self.item_ids[i] for i in best], self.popular.ranking, k)
        return out


class RandomRecommender:
    """Uniformly random items from the catalogue (a floor, seeded)."""

    name = "random"

    def __init__(self, seed: int = 42):
        self.rng = np.random.default_rng(seed)
        self.item_ids: list[str] = []

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> None:
        self.item_ids = _catalogue(interactions)

    def recommend(self, history: pd.DataFrame, user_ids: list[str], k: int) -> dict[str, list[str]]:
        k = min(k, len(self.item_ids))
        return {
            user: [self.item_ids[i] for i in self.rng.choice(len(self.item_ids), k, replace=False)] for user in user_ids
        }


# --- search


class RandomRetriever:
    """Random catalogue items and random pair scores (a floor, seeded)."""

    name = "random"

    def __init__(self, seed: int = 42):
        self.rng = np.random.default_rng(seed)
        self.item_ids: list[str] = []

    def fit(self, queries: pd.DataFrame, items: pd.DataFrame) -> None:
        self.item_ids = items["item_id"].astype(str).tolist()

    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        k = min(k, len(self.item_ids))
        return [
            [
                (self.item_ids[i], float(k - r))
                for r, i in enumerate(self.rng.choice(len(self.item_ids), k, replace=False))
            ]
            for _ in queries
        ]

    def score(self, queries: list[str], item_ids: list[str]) -> list[float]:
        return self.rng.random(len(item_ids)).tolist()


class MiniLMRetriever:
    """Zero-shot cosine similarity of pretrained MiniLM embeddings of queries and item titles (exact search).

    Item embeddings are cached under `cache_dir`, keyed by model, max_length and a hash of the titles.
    """

    name = "minilm_zero_shot"

    def __init__(
        self, model: str = "minilm", max_length: int = 64, batch_size: int = 256, cache_dir: Path | None = None
    ):
        self.model_name, self.max_length, self.batch_size = model, max_length, batch_size
        self.cache_dir = cache_dir
        self._encoder = None
        self.item_ids: list[str] = []
        self.item_vectors = np.zeros((0, 0), dtype=np.float32)

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = TextEncoder(self.model_name, self.max_length, self.batch_size)
        return self._encoder

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Unit vectors for `texts`; encoded shortest first so batches carry little padding."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        vectors = self.encoder.encode([texts[i] for i in order], progress=progress)
        out = np.empty_like(vectors)
        out[order] = vectors
        return out

    def fit(self, queries: pd.DataFrame, items: pd.DataFrame) -> None:
        self.item_ids = items["item_id"].astype(str).tolist()
        titles = items["title"].astype(str).tolist()
        key_text = "\x1f".join([self.model_name, str(self.max_length), *titles])
        key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
        path = self.cache_dir / f"minilm_items_{key}.npy" if self.cache_dir else None
        if path is not None and path.exists():
            self.item_vectors = np.load(path)
            log.info("loaded %d cached item embeddings from %s", len(self.item_vectors), path)
            return
        started = time.perf_counter()
        self.item_vectors = self.encode(titles, progress=True)
        log.info("encoded %d item titles in %.0f s", len(titles), time.perf_counter() - started)
        if path is not None:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, self.item_vectors)

    def catalogue_scores(self, queries: list[str]) -> np.ndarray:
        """(len(queries), n_items) cosine similarities (what hybrid retrieval fuses)."""
        return self.encode(queries) @ self.item_vectors.T

    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        k = min(k, len(self.item_ids))
        q = self.encode(queries)
        out = []
        for start in range(0, len(q), 512):  # 512 x catalogue scores at a time keeps memory small
            scores = q[start : start + 512] @ self.item_vectors.T
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            for row, cand in zip(scores, top, strict=True):
                best = cand[np.argsort(-row[cand], kind="stable")]
                out.append([(self.item_ids[i], float(row[i])) for i in best])
        return out

    def score(self, queries: list[str], item_ids: list[str]) -> list[float]:
        index = {item: i for i, item in enumerate(self.item_ids)}
        distinct = sorted(set(queries))
        vectors = dict(zip(distinct, self.encode(distinct), strict=True))
        return [
            float(vectors[q] @ self.item_vectors[index[i]]) if i in index else 0.0
            for q, i in zip(queries, item_ids, strict=True)
        ]


RECOMMENDERS = {
    "popularity": PopularityRecommender,
    "copurchase_knn": CoPurchaseKNNRecommender,
    "repeat_purchase": RepeatPurchaseRecommender,
    "tifu_knn": TifuKnnRecommender,
    "random": RandomRecommender,
}
RETRIEVERS = ["bm25_untuned", "bm25", "minilm_zero_shot", "hybrid", "random"]


BASELINES = {"retail": list(RECOMMENDERS), "search": RETRIEVERS}
# bm25s' own defaults (Lucene BM25, k1 1.5, b 0.75, two-character tokens): the untuned reference row
BM25_DEFAULTS = Bm25Params(
    k1=1.5,
    b=0.75,
    method="lucene",
    delta=0.5,
    stem=False,
    normalise_units=False,
    single_char_tokens=False,
    correct_typos=False,
)


def _retail_baseline(name: str, params: Params):
    b = params.baselines
    return {
        "popularity": lambda: PopularityRecommender(b.popularity_days),
        "copurchase_knn": lambda: CoPurchaseKNNRecommender(b.knn_neighbours, b.popularity_days),
        "repeat_purchase": lambda: RepeatPurchaseRecommender(b.popularity_days),
        "tifu_knn": lambda: TifuKnnRecommender(**b.tifu_knn.model_dump(), days=b.popularity_days),
        "random": lambda: RandomRecommender(params.seed),
    }[name]()


def _search_baseline(name: str, params: Params):
    b, e = params.baselines, params.encoder

    def minilm() -> MiniLMRetriever:
        return MiniLMRetriever(e.model, e.max_length, e.batch_size, shared_root() / params.train.cache_dir)

    return {
        "bm25_untuned": lambda: BM25Retriever(BM25_DEFAULTS, name="bm25_untuned"),
        "bm25": lambda: BM25Retriever(b.bm25),
        "minilm_zero_shot": minilm,
        "hybrid": lambda: HybridRetriever(BM25Retriever(b.bm25), minilm(), b.hybrid.weight, b.hybrid.depth),
        "random": lambda: RandomRetriever(params.seed),
    }[name]()


def make_baseline(name: str, task: str, params: Params):
    """Return an unfitted baseline named `name` for `task` ("retail" or "search"), configured from params.

    The zero-shot MiniLM caches its item vectors in `train.cache_dir` (shared with training's frozen vectors).
    """
    known = BASELINES[get_task(task).name]
    if name not in known:
        raise ShopError(f"unknown {task} baseline '{name}'; expected one of {sorted(known)}")
    return {"retail": _retail_baseline, "search": _search_baseline}[task](name, params)


# --- the stage


def run_baselines(params: Params, splits: Path, canonical: Path, models: dict[str, list[str]] | None = None) -> dict:
    """Fit each baseline on the train split and score it on the test split of both tasks; return metrics."""
    models = models or BASELINES
    out: dict[str, dict] = {"retail": {}, "search": {}}
    if models.get("retail"):
        train = read_table(splits / "retail" / "train.parquet", "interactions")
        test = read_table(splits / "retail" / "test.parquet", "interactions")
        items = read_table(canonical / "retail" / "items.parquet", "items")
        history, targets = retail_eval_inputs(train, test)
        cutoff = pd.Timestamp(params.split.retail.cutoff, tz="UTC")
        for name in models["retail"]:
            model = make_baseline(name, "retail", params)
            model.fit(history, items)
            out["retail"][name] = evaluate_recommender(
                model, history, targets, items, params.evaluation, cutoff=cutoff, seed=params.seed
            )
    if models.get("search"):
        train_q = read_table(splits / "search" / "train.parquet", "queries")
        test_q = read_table(splits / "search" / "test.parquet", "queries")
        noisy_path = splits / "search" / "test_noisy.parquet"
        noisy = read_table(noisy_path, "queries") if noisy_path.is_file() else None
        items = read_table(canonical / "search" / "items.parquet", "items")
        for name in models["search"]:
            started = time.perf_counter()
            model = make_baseline(name, "search", params)
            model.fit(train_q, items)
            out["search"][name] = evaluate_retriever(
                model, test_q, items, params.evaluation, seed=params.seed, noisy=noisy
            )
            log.info("search/%s took %.0f s", name, time.perf_counter() - started)
    return out


HEADLINE = ("hr", "ndcg", "recall")
app = cli.stage_app(__doc__)


@app.command()
def main(
    params: cli.ParamsOption = cli.PARAMS,
    splits: Annotated[Path, typer.Option(help="folder with retail/, search/ splits")] = Path("data/splits"),
    canonical: Annotated[Path, typer.Option(help="canonical tables folder")] = Path("data/canonical"),
    out: Annotated[Path, typer.Option(help="metrics JSON to write")] = Path("metrics/baselines.json"),
) -> None:
    """Score every baseline on the test split of each task that is on and write metrics JSON (DVC metrics)."""
    config = cli.load(params)
    on = tasks_on(config.data)
    models = {task: names for task, names in BASELINES.items() if task in on}
    metrics = {
        task: m
        for task, m in run_baselines(config, cli.resolve(splits), cli.resolve(canonical), models).items()
        if task in on
    }
    write_json(metrics, cli.resolve(out))
    for task, by_model in metrics.items():
        for name, result in by_model.items():
            headline = {
                m: round(v["value"], 4)
                for m, v in result.items()
                if m != "segments" and v["value"] is not None and m.split("@")[0] in HEADLINE
            }
            typer.echo(f"{task:7s} {name:17s} {headline}")


if __name__ == "__main__":
    cli.run(app)
