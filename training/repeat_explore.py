"""The repeat/explore recommender: candidates from a user's own history (repeat) and from co-purchases,
neighbours and bestsellers (explore), ranked by a LightGBM LambdaRank model over history-only features.

Users are represented by their purchase history, never by a learned id or a feature-store snapshot, so a user
without a Feast snapshot, a new customer with a few items in the session, or a user with no history at all
(bestsellers) is ranked by the same model. Repeat features follow TIFU-KNN (Hu et al. 2020) and
repurchase-interval models (ReCANet, TAIW); the LambdaRank re-ranker over repeat and explore candidates plays the
role of TREx's repeat/explore combination, learned rather than set by hand.

`HistoryState` holds the catalogue-wide statistics of one history (built once: at training per window, at
serving per packaged champion); `state.features(user_rows)` scores candidates for any set of user histories.
Training examples are sliding windows: each window's first basket per user is the target, everything before
the window is history (`windows` of `window_days`; the no-augmentation twin trains on the newest window only).
"""

import logging

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from tqdm.auto import tqdm

from core.errors import ShopError
from core.params import RankerTrainParams
from training.baselines import TifuKnnRecommender
from training.metrics import binary_metrics
from training.protocols import Recommender

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ["user_id", "item_id", "basket_id", "ts"]
RANKING_COLUMNS = ["user_id", "item_id", "score"]
ITEM_VECTOR_DIM = 64
RANKING_CHUNK_USERS = 500  # users scored together by `rankings` (dense rows of the catalogue width per user)

FEATURES = [
    "tifu_own",
    "tifu_neighbours",
    "tifu_blend",
    "blend_rank",
    "times_bought",
    "days_since_item",
    "baskets_since_item",
    "mean_interval_days",
    "due",
    "co_last_basket",
    "co_history",
    "pop_7d",
    "pop_30d",
    "pop_all",
    "trend",
    "item_repeat_rate",
    "item_age_days",
    "user_baskets",
    "user_items",
    "days_since_last_basket",
    "mean_basket_size",
]


def _product(a: sp.csr_matrix, b: sp.csr_matrix) -> sp.csr_matrix:
    """`a @ b` over only the rows of `b` that `a` uses: the same values, bit for bit, but one user's product
    with the 4.8M-entry co-purchase matrix takes 0.2 ms instead of 4 ms (scipy handles all of `b` per call)."""
    used = np.unique(a.indices)
    return a[:, used] @ b[used]


def _baskets(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, basket): first ts, number of items, newest basket first per user gets age 0."""
    baskets = rows.groupby(["user_id", "basket_id"], as_index=False).agg(ts=("ts", "min"), size=("item_id", "nunique"))
    baskets = baskets.sort_values(["user_id", "ts", "basket_id"], kind="stable")
    baskets["age"] = baskets.groupby("user_id").cumcount(ascending=False)
    return baskets


class HistoryState:
    """Catalogue-wide statistics of a history as of `at`: popularity, co-purchases, TIFU vectors of every user."""

    def __init__(self, history: pd.DataFrame, settings: RankerTrainParams, at: pd.Timestamp | None = None):
        self.settings = settings
        rows = history.astype({"item_id": str, "basket_id": str})
        self.at = pd.Timestamp(at) if at is not None else rows["ts"].max() + pd.Timedelta(seconds=1)
        self.item_ids = sorted(rows["item_id"].unique())
        self.position = pd.Index(self.item_ids)
        known = rows.dropna(subset=["user_id"]).astype({"user_id": str})
        self.tifu = TifuKnnRecommender(**settings.tifu.model_dump())
        self.tifu.item_ids = self.item_ids
        self.users, self.vectors = self.tifu.user_vectors(known)
        norms = np.sqrt(np.asarray(self.vectors.multiply(self.vectors).sum(1))).ravel()
        self.unit = (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ self.vectors).tocsr()
        self.unit_t = self.unit.T.tocsr()  # (items, users): neighbour similarities without a transpose per call
        self.copurchase = self._copurchase(rows)
        self.item_stats = self._item_stats(rows, known)
        ranked = self.item_stats.sort_values(["pop_30d", "pop_all"], ascending=False, kind="stable")
        self.bestsellers = ranked.index[: settings.bestseller_candidates].tolist()
        self.popularity_order = ranked.index.tolist()

    def _copurchase(self, rows: pd.DataFrame) -> sp.csr_matrix:
        """P(j in basket | i in basket) over baskets of at most `max_basket_items` items, diagonal zero."""
        pairs = rows[["basket_id", "item_id"]].drop_duplicates()
        size = pairs.groupby("basket_id")["item_id"].transform("size")
        pairs = pairs[size <= self.settings.max_basket_items]
        basket_index = pd.Index(pairs["basket_id"].unique())
        b = sp.csr_matrix(
            (
                np.ones(len(pairs), dtype=np.float32),
                (basket_index.get_indexer(pairs["basket_id"]), self.position.get_indexer(pairs["item_id"])),
            ),
            shape=(len(basket_index), len(self.item_ids)),
        )
        counts = (b.T @ b).tocsr()
        diag = counts.diagonal()
        counts.setdiag(0)
        counts.eliminate_zeros()
        return (sp.diags(1.0 / np.maximum(diag, 1.0)) @ counts).tocsr()

    def _item_stats(self, rows: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
        baskets = rows[["basket_id", "item_id", "ts"]].drop_duplicates(["basket_id", "item_id"])
        total = max(1, baskets["basket_id"].nunique())

        def share(days: int | None) -> pd.Series:
            recent = baskets if days is None else baskets[baskets["ts"] >= self.at - pd.Timedelta(days=days)]
            return recent.groupby("item_id").size() / max(1, recent["basket_id"].nunique() if days else total)

        stats = pd.DataFrame(index=pd.Index(self.item_ids, name="item_id"))
        stats["pop_7d"], stats["pop_30d"], stats["pop_all"] = share(7), share(30), share(None)
        stats = stats.fillna(0.0)
        stats["trend"] = stats["pop_7d"] / (stats["pop_30d"] + 1e-6)
        per_buyer = known.groupby(["item_id", "user_id"])["basket_id"].nunique()
        stats["item_repeat_rate"] = (per_buyer >= 2).groupby("item_id").mean()
        first = baskets.groupby("item_id")["ts"].min()
        stats["item_age_days"] = (self.at - first).dt.total_seconds() / 86400
        return stats

    def item_vectors(self, dim: int, seed: int) -> np.ndarray:
        """Unit vectors of items from a truncated SVD of the symmetric co-purchase matrix."""
        sym = (self.copurchase + self.copurchase.T).astype(np.float32)
        dim = max(1, min(dim, len(self.item_ids) - 1))
        vectors = TruncatedSVD(dim, random_state=seed).fit_transform(sym) if len(self.item_ids) > 2 else sym.toarray()
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    def _neighbour_mean(self, own_unit: sp.csr_matrix, exclude: np.ndarray) -> np.ndarray:
        """Mean TIFU vector of the `neighbours` most cosine-similar users (a user is not their own neighbour)."""
        keep = min(self.settings.tifu.neighbours, self.unit.shape[0] - 1)
        out = np.zeros((own_unit.shape[0], len(self.item_ids)))
        if keep <= 0:
            return out
        for start in range(0, own_unit.shape[0], 256):
            sim = (own_unit[start : start + 256] @ self.unit_t).toarray()
            block = exclude[start : start + 256]
            inside = block >= 0
            sim[np.flatnonzero(inside), block[inside]] = -np.inf
            nearest = np.argpartition(-sim, keep - 1, axis=1)[:, :keep]
            has_history = np.diff(own_unit[start : start + 256].indptr) > 0  # no history: no neighbours
            for row, users in enumerate(nearest):
                if has_history[row]:
                    out[start + row] = np.asarray(self.vectors[users].mean(0)).ravel()
        return out

    def features(self, user_rows: pd.DataFrame, users: list[str] | None = None) -> pd.DataFrame:
        """Candidates and FEATURES for `users` (default: those in `user_rows`), from their histories `user_rows`
        (rows at or after `at` are ignored). A user without rows of known items gets bestsellers."""
        s = self.settings
        rows = user_rows.reindex(columns=HISTORY_COLUMNS).dropna(subset=["user_id", "item_id"])
        rows = rows.astype({"user_id": str, "item_id": str, "basket_id": str})
        if not rows.empty:
            rows = rows[(rows["ts"] < self.at) & rows["item_id"].isin(self.position)]
        users = pd.Index(sorted(set(user_rows["user_id"].dropna().astype(str)) if users is None else set(users)))
        rows = rows[rows["user_id"].isin(users)]
        tifu_users, own = self.tifu.user_vectors(rows) if not rows.empty else (pd.Index([]), None)
        own_dense = np.zeros((len(users), len(self.item_ids)))
        if own is not None:
            own_dense[users.get_indexer(tifu_users)] = own.toarray()
        own_sparse = sp.csr_matrix(own_dense)
        norms = np.sqrt(np.asarray(own_sparse.multiply(own_sparse).sum(1))).ravel()
        own_unit = (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ own_sparse).tocsr()
        neighbours = self._neighbour_mean(own_unit, self.users.get_indexer(users))
        blend = s.tifu.alpha * own_dense + (1 - s.tifu.alpha) * neighbours
        co_history = np.asarray(_product(own_sparse, self.copurchase).todense())

        baskets = _baskets(rows) if not rows.empty else pd.DataFrame(columns=["user_id", "basket_id", "ts", "size"])
        last = baskets[baskets["age"] == 0] if not rows.empty else baskets
        last_items = rows.merge(last[["user_id", "basket_id"]], on=["user_id", "basket_id"])
        b_last = sp.csr_matrix(
            (
                np.ones(len(last_items)),
                (users.get_indexer(last_items["user_id"]), self.position.get_indexer(last_items["item_id"])),
            ),
            shape=(len(users), len(self.item_ids)),
        )
        b_last.data[:] = 1.0
        sizes = np.maximum(np.asarray(b_last.sum(1)).ravel(), 1.0)
        co_last = np.asarray(_product((sp.diags(1.0 / sizes) @ b_last).tocsr(), self.copurchase).todense())

        best = self.position.get_indexer(self.bestsellers)
        frames = []
        for u in range(len(users)):
            top = np.argsort(-blend[u], kind="stable")[: s.tifu_candidates]
            cand = set(top[blend[u][top] > 0])
            explore = co_last[u] + co_history[u]
            top_co = np.argsort(-explore, kind="stable")[: s.copurchase_candidates]
            cand |= set(top_co[explore[top_co] > 0]) | set(best)
            cand = np.array(sorted(cand))
            order = np.argsort(-blend[u][cand], kind="stable")
            rank = np.empty(len(cand))
            rank[order] = np.arange(len(cand))
            frames.append(
                pd.DataFrame(
                    {
                        "user_id": users[u],
                        "item": cand,
                        "tifu_own": own_dense[u, cand],
                        "tifu_neighbours": neighbours[u, cand],
                        "tifu_blend": blend[u, cand],
                        "blend_rank": rank,
                        "co_last_basket": co_last[u, cand],
                        "co_history": co_history[u, cand],
                    }
                )
            )
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["user_id", "item"])
        out["item_id"] = np.asarray(self.item_ids, dtype=object)[out["item"].to_numpy(int)]
        out = out.join(self.item_stats, on="item_id")
        out = out.merge(self._user_item(rows, baskets), on=["user_id", "item_id"], how="left")
        out["times_bought"] = out["times_bought"].fillna(0.0)
        out = out.merge(self._user_stats(rows, baskets, users), on="user_id", how="left")
        return out.drop(columns="item")

    def _user_item(self, rows: pd.DataFrame, baskets: pd.DataFrame) -> pd.DataFrame:
        """Per (user, item) bought before: times bought, recency in days and baskets, mean repurchase interval."""
        cols = ["user_id", "item_id", "times_bought", "days_since_item", "baskets_since_item"]
        if rows.empty:
            numeric = {c: pd.Series(dtype=float) for c in [*cols[2:], "mean_interval_days", "due"]}
            return pd.DataFrame({"user_id": pd.Series(dtype=str), "item_id": pd.Series(dtype=str), **numeric})
        cols_b = ["user_id", "basket_id", "ts", "age"]
        ages = rows.merge(baskets[cols_b], on=["user_id", "basket_id"], suffixes=("", "_b"))
        pair = ages.groupby(["user_id", "item_id"]).agg(
            times_bought=("basket_id", "nunique"), first=("ts_b", "min"), last=("ts_b", "max"), age=("age", "min")
        )
        pair["days_since_item"] = (self.at - pair["last"]).dt.total_seconds() / 86400
        pair["baskets_since_item"] = pair["age"].astype(float)
        span = (pair["last"] - pair["first"]).dt.total_seconds() / 86400
        pair["mean_interval_days"] = (span / (pair["times_bought"] - 1)).where(pair["times_bought"] > 1)
        pair["due"] = pair["days_since_item"] / pair["mean_interval_days"].clip(lower=1.0)
        return pair.reset_index()[[*cols, "mean_interval_days", "due"]]

    def _user_stats(self, rows: pd.DataFrame, baskets: pd.DataFrame, users: pd.Index) -> pd.DataFrame:
        stats = pd.DataFrame({"user_id": users})
        if rows.empty:
            return stats.assign(user_baskets=0.0, user_items=0.0, days_since_last_basket=np.nan, mean_basket_size=0.0)
        per_user = baskets.groupby("user_id").agg(
            user_baskets=("basket_id", "size"), last=("ts", "max"), mean_basket_size=("size", "mean")
        )
        per_user["user_items"] = rows.groupby("user_id")["item_id"].nunique()
        per_user["days_since_last_basket"] = (self.at - per_user["last"]).dt.total_seconds() / 86400
        stats = stats.join(per_user.drop(columns="last"), on="user_id")
        return stats.fillna({"user_baskets": 0.0, "user_items": 0.0, "mean_basket_size": 0.0})


def first_baskets(rows: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Each identified user's first basket with ts in [start, end): the rows of that basket."""
    inside = rows[(rows["ts"] >= start) & (rows["ts"] < end)].dropna(subset=["user_id"])
    first = inside.sort_values(["ts", "basket_id"], kind="stable").groupby("user_id")["basket_id"].first()
    return inside[inside["basket_id"].isin(set(first))]


def labelled_examples(
    history: pd.DataFrame,
    targets: pd.DataFrame,
    settings: RankerTrainParams,
    window: int,
    catalogue: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Candidates + FEATURES + `label` (item in the user's target basket) for target users with history.

    Catalogue statistics (popularity, co-purchases, neighbours) come from `catalogue` (default: `history`)."""
    known = set(history["user_id"].dropna().astype(str))
    targets = targets[targets["user_id"].astype(str).isin(known)]
    if targets.empty:
        return pd.DataFrame()
    state = HistoryState(history if catalogue is None else catalogue, settings, at=targets["ts"].min())
    users = set(targets["user_id"].astype(str))
    rows = history[history["user_id"].astype(str).isin(users)]
    table = state.features(rows)
    wanted = set(zip(targets["user_id"].astype(str), targets["item_id"].astype(str), strict=True))
    table["label"] = [int(p in wanted) for p in zip(table["user_id"], table["item_id"], strict=True)]
    hit = table.groupby("user_id")["label"].transform("max") > 0  # lists without a positive teach nothing
    return table[hit].assign(window=window).reset_index(drop=True)


def _dataset(table: pd.DataFrame) -> lgb.Dataset:
    table = table.sort_values(["window", "user_id"], kind="stable")
    groups = table.groupby(["window", "user_id"], sort=False).size().to_numpy()
    return lgb.Dataset(table[FEATURES].astype(float), table["label"], group=groups, free_raw_data=False)


class RepeatExploreModel:
    """A trained ranker plus its candidate settings; a `Recommender` over any history it is given.

    `history` (the real interactions it was trained up to, or those `attach_history` gives at serving) backs
    `state`, which `rank_user` and `encode_items` use. `rankings()` scores every known user from that history at
    once (at packaging); `use_rankings` hands them back, so `rank_user` looks a user up instead of re-scoring
    unless the request brings recent items."""

    def __init__(
        self,
        booster: lgb.Booster,
        settings: RankerTrainParams,
        config: dict,
        history: pd.DataFrame,
        selection: lgb.Booster | None = None,
    ):
        self.booster, self.settings, self.config, self.selection = booster, settings, config, selection
        self.name = config.get("name", "repeat_explore")
        self.attach_history(history)

    def attach_history(self, history: pd.DataFrame) -> None:
        """Serve from `history` (canonical interactions): catalogue statistics and every known user's rows."""
        self.history = history[HISTORY_COLUMNS].astype({"user_id": "string", "item_id": str, "basket_id": str})
        self._state: HistoryState | None = None
        self._rows: dict[str, pd.DataFrame] | None = None
        self._vectors: np.ndarray | None = None
        self._rankings: tuple[dict[str, tuple[int, int]], np.ndarray, np.ndarray] | None = None
        self._no_history: list[tuple[str, float]] | None = None

    @property
    def state(self) -> HistoryState:
        if self._state is None:
            self._state = HistoryState(self.history, self.settings)
        return self._state

    @property
    def item_ids(self) -> list[str]:
        return self.state.item_ids

    def before_validation(self) -> "RepeatExploreModel":
        """The model as it was before its refit trained on the validation window (`selection`, the booster
        early-stopped on that window): what is scored on validation, so promotion never compares in-sample
        scores. Itself when it has no such booster."""
        if self.selection is None:
            return self
        return RepeatExploreModel(self.selection, self.settings, self.config, self.history)

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> None:
        """Nothing to learn: the ranker is trained, candidates come from the history given to `recommend`."""

    def knows(self, user_id: str) -> bool:
        """Whether `user_id` has purchases in the attached history."""
        return user_id in self._user_rows()

    def _user_rows(self) -> dict[str, pd.DataFrame]:
        if self._rows is None:
            known = self.history.dropna(subset=["user_id"]).astype({"user_id": str})
            self._rows = {str(u): g for u, g in known.groupby("user_id", sort=False)}
        return self._rows

    def rankings(self) -> pd.DataFrame:
        """Every known user's ranked candidates from the attached history alone (RANKING_COLUMNS, best first per
        user): what `rank_user` answers for that user when the request brings no recent items."""
        known = self.history.dropna(subset=["user_id"]).astype({"user_id": str})
        users = sorted(known["user_id"].unique())
        frames = []
        for start in tqdm(range(0, len(users), RANKING_CHUNK_USERS), desc="ranker: known users", unit="chunk"):
            chunk = users[start : start + RANKING_CHUNK_USERS]
            frames.append(self._scored(self.state, known[known["user_id"].isin(chunk)], chunk)[RANKING_COLUMNS])
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RANKING_COLUMNS)

    def use_rankings(self, rankings: pd.DataFrame) -> None:
        """Answer `rank_user` for users without recent items from `rankings` (made by `rankings()` from the same
        attached history). Kept as arrays with a row span per user rather than 700k Python tuples (memory, and
        objects the garbage collector would walk)."""
        users = rankings["user_id"].astype(str).to_numpy()
        order = np.argsort(users, kind="stable")  # each user's rows together, best first as given
        users = users[order]
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], dtype=int)
        stops = np.r_[starts[1:], len(users)].astype(int)
        spans = {str(users[a]): (int(a), int(b)) for a, b in zip(starts, stops, strict=True)}
        items = rankings["item_id"].astype(str).to_numpy(dtype=object)[order]
        self._rankings = (spans, items, rankings["score"].to_numpy(dtype=float)[order])

    def rank_user(self, user_id: str, recent_item_ids: list[str], k: int) -> list[tuple[str, float]]:
        """Top-k for one user: their attached history plus `recent_item_ids` as a basket bought just now (a new or
        anonymous user may have only those, or nothing: then the ranked bestsellers)."""
        state = self.state
        ranked = None if recent_item_ids else self._without_recent(user_id, k)
        if ranked is not None:
            return _filled(state, ranked, k)
        rows = [self._user_rows().get(user_id, pd.DataFrame())]
        if recent_item_ids:
            now = state.at - pd.Timedelta(seconds=1)
            session = pd.DataFrame({"item_id": [str(i) for i in recent_item_ids]})
            rows.append(session.assign(user_id=user_id, basket_id=f"session:{user_id}", ts=now)[HISTORY_COLUMNS])
        rows = [r for r in rows if not r.empty]
        user_rows = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=HISTORY_COLUMNS)
        return self.rank(state, user_rows, k, [user_id]).get(user_id, [])

    def _without_recent(self, user_id: str, k: int) -> list[tuple[str, float]] | None:
        """The best k ranked candidates of a request without recent items that need no scoring: a known user's
        from `use_rankings`, or those every user without purchases shares (scored once). None: score the user."""
        if self._rankings is not None and user_id in self._rankings[0]:
            spans, items, scores = self._rankings
            start, stop = spans[user_id]
            stop = min(stop, start + k)
            return list(zip(items[start:stop].tolist(), scores[start:stop].tolist(), strict=True))
        if self.knows(user_id):
            return None
        if self._no_history is None:
            table = self._scored(self.state, pd.DataFrame(columns=HISTORY_COLUMNS), [user_id])
            self._no_history = list(zip(table["item_id"], table["score"].astype(float), strict=True))
        return self._no_history[:k]

    def encode_items(self, items: pd.DataFrame) -> np.ndarray:
        """Unit item vectors from co-purchases (truncated SVD of the co-purchase matrix) for `/similar` and the
        index; items without purchases get zeros."""
        if self._vectors is None:
            self._vectors = self.state.item_vectors(ITEM_VECTOR_DIM, self.config.get("seed", 0))
        pos = self.state.position.get_indexer(items["item_id"].astype(str))
        out = np.zeros((len(items), self._vectors.shape[1]), dtype=np.float32)
        out[pos >= 0] = self._vectors[pos[pos >= 0]]
        return out

    def rank(
        self, state: HistoryState, user_rows: pd.DataFrame, k: int, users: list[str] | None = None
    ) -> dict[str, list[tuple[str, float]]]:
        """Top-k (item, score) per user (`users`, default: those in `user_rows`): ranked candidates, then the
        rest by popularity."""
        table = self._scored(state, user_rows, users)
        return {
            user: _filled(state, list(zip(group["item_id"], group["score"].astype(float), strict=True)), k)
            for user, group in table.groupby("user_id", sort=False)
        }

    def _scored(self, state: HistoryState, user_rows: pd.DataFrame, users: list[str] | None) -> pd.DataFrame:
        """Candidates with FEATURES and the ranker's `score`, best first per user."""
        table = state.features(user_rows, users)
        if table.empty:
            return table.assign(score=pd.Series(dtype=float))
        # one request's ~200 rows: threads cost more than they save (0.9 vs 5.8 ms measured on 2 busy cores)
        threads = 1 if table["user_id"].nunique() == 1 else self.settings.threads
        table["score"] = self.booster.predict(table[FEATURES].astype(float), num_threads=threads)
        return table.sort_values(["user_id", "score"], ascending=[True, False], kind="stable")

    def recommend(self, history: pd.DataFrame, user_ids: list[str], k: int) -> dict[str, list[str]]:
        state = HistoryState(history, self.settings)
        rows = history[history["user_id"].astype(str).isin(set(user_ids))]
        ranked = self.rank(state, rows, k, list(user_ids))
        return {u: [i for i, _ in ranked.get(u, [])] for u in user_ids}


def _filled(state: HistoryState, ranked: list[tuple[str, float]], k: int) -> list[tuple[str, float]]:
    """The first k of `ranked` (best first), topped up with the most popular items it lacks, scored below it."""
    ranked = ranked[:k]
    if len(ranked) < k:
        seen = {i for i, _ in ranked}
        low = min((score for _, score in ranked), default=0.0) - 1.0
        ranked += [(i, low) for i in state.popularity_order if i not in seen][: k - len(ranked)]
    return ranked


def train_ranker(
    windows: list[pd.DataFrame], valid: pd.DataFrame, lgb_params: dict, rounds: int, early_stopping: int
) -> tuple[lgb.Booster, dict]:
    """LambdaRank on the training windows, early-stopped on the validation window, then refit on all of them
    with the best number of rounds. Returns the refit booster and {best_iteration, the validation curve (on
    candidate lists with a target), the early-stopped booster}."""
    train = pd.concat(windows, ignore_index=True) if windows else pd.DataFrame()
    if train.empty or valid.empty:
        raise ShopError("repeat/explore ranker: no training or validation examples (no user bought again?)")
    curve: dict = {}
    params = {**lgb_params, "objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "verbosity": -1}
    booster = lgb.train(
        params,
        _dataset(train),
        rounds,
        valid_sets=[_dataset(valid)],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(early_stopping, verbose=False), lgb.record_evaluation(curve)],
    )
    best = booster.best_iteration or rounds
    final = lgb.train(params, _dataset(pd.concat([train, valid], ignore_index=True)), best)
    return final, {"best_iteration": best, "valid_ndcg@10": curve["valid"]["ndcg@10"], "early_stopped": booster}


def valid_ndcg(model: Recommender, history: pd.DataFrame, targets: pd.DataFrame) -> float:
    """Mean NDCG@10 of `model` on target baskets `targets` given `history` (the whole catalogue ranking)."""
    users = sorted(set(targets["user_id"].astype(str)) & set(history["user_id"].dropna().astype(str)))
    ranked = model.recommend(history, users, 10)
    wanted = targets.groupby(targets["user_id"].astype(str))["item_id"].agg(lambda s: set(s.astype(str)))
    return float(np.mean([binary_metrics(ranked[u], wanted[u], 10, [10])["ndcg@10"] for u in users]))


def window_examples(
    rows: pd.DataFrame, before: pd.Timestamp, n_windows: int, window_days: int, settings: RankerTrainParams
) -> list[pd.DataFrame]:
    """Labelled examples of `n_windows` windows of `window_days` ending at `before`, newest first.

    Synthetic rows (`is_synthetic`) add users (a `sequence_id` view is a user of its own) and target baskets,
    never catalogue statistics: those come from real rows only, as when the model ranks real users."""
    real = rows[~rows["is_synthetic"].astype(bool)] if "is_synthetic" in rows.columns else rows
    if "sequence_id" in rows.columns:  # a synthetic view of a user's sequence is a user of its own
        rows = rows.assign(user_id=rows["sequence_id"].astype("string").fillna(rows["user_id"]))
    out = []
    for w in tqdm(range(n_windows), desc="ranker windows", unit="window"):
        end = before - pd.Timedelta(days=w * window_days)
        start = end - pd.Timedelta(days=window_days)
        history = rows[rows["ts"] < start]
        if history["user_id"].notna().sum() == 0:
            log.warning("window %d (%s): no history before it; stopping at %d windows", w, start.date(), w)
            break
        targets = first_baskets(rows, start, end)
        out.append(labelled_examples(history, targets, settings, w + 1, real[real["ts"] < start]))
        log.info("window %d: %s..%s, %d candidate rows", w + 1, start.date(), end.date(), len(out[-1]))
    return out


def train_repeat_explore(
    rows: pd.DataFrame,
    real_train: pd.DataFrame,
    valid_targets: pd.DataFrame,
    before: pd.Timestamp,
    settings: RankerTrainParams,
    variant: str,
    seed: int,
) -> tuple[RepeatExploreModel, dict]:
    """Train on `rows` (the fused training interactions) in windows ending at the validation cutoff `before`;
    early-stop on the real validation targets with the real history before `before`."""
    n_windows = 1 if variant == "noaug" else settings.windows
    windows = window_examples(rows, before, n_windows, settings.window_days, settings)
    valid = labelled_examples(real_train[real_train["ts"] < before], valid_targets, settings, 0)
    lgb_params = {
        "learning_rate": settings.learning_rate,
        "num_leaves": settings.num_leaves,
        "min_data_in_leaf": settings.min_data_in_leaf,
        "feature_fraction": settings.feature_fraction,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambdarank_truncation_level": 20,
        "num_threads": settings.threads,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
    }
    booster, curve = train_ranker(windows, valid, lgb_params, settings.rounds, settings.early_stopping)
    valid_history = real_train[real_train["ts"] < before][HISTORY_COLUMNS]
    early = RepeatExploreModel(curve["early_stopped"], settings, {}, valid_history)
    score = valid_ndcg(early, valid_history, valid_targets)  # before the refit sees the validation window
    config = {
        "name": f"repeat_explore_{variant}",
        "variant": variant,
        "trained_before": str(before),
        "windows": len(windows),
        "train_rows": int(sum(len(w) for w in windows)),
        "settings": settings.model_dump(),
    }
    metrics = {
        "best_iteration": curve["best_iteration"],
        "valid_ndcg@10": score,
        "valid_ndcg@10_candidates": float(max(curve["valid_ndcg@10"])),
        "windows": len(windows),
        "train_rows": config["train_rows"],
        "history": [{"step": i + 1, "valid_ndcg@10": float(v)} for i, v in enumerate(curve["valid_ndcg@10"])],
    }
    history = real_train[HISTORY_COLUMNS]  # what the model knows at its cutoff (replaced at serving)
    model = RepeatExploreModel(booster, settings, {**config, "seed": seed}, history, curve["early_stopped"])
    return model, metrics
