"""Building blocks of the gate and the drift monitor: Evidently reports, text descriptors, fidelity, privacy."""

import datetime as dt
import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.errors import ShopError

log = logging.getLogger(__name__)
TOKEN = re.compile(r"[a-z0-9]+")
EMBEDDING = "text_embedding"


def tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric words of `text`."""
    return TOKEN.findall(str(text).lower())


def vocabulary(texts: Sequence[str]) -> set[str]:
    """Every word used in `texts`."""
    return {t for text in texts for t in tokens(text)}


def oov_share(texts: Sequence[str], vocab: set[str]) -> np.ndarray:
    """Per text, the share of its words that are not in `vocab` (0 for a text without words)."""
    out = np.zeros(len(texts))
    for i, text in enumerate(texts):
        words = tokens(text)
        if words:
            out[i] = sum(w not in vocab for w in words) / len(words)
    return out


def vocabulary_overlap(synthetic: Sequence[str], real_vocab: set[str]) -> float:
    """Share of the distinct synthetic words that also occur in the real text."""
    vocab = vocabulary(synthetic)
    return len(vocab & real_vocab) / len(vocab) if vocab else 1.0


def require_columns(df: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    """Raise ShopError naming `name` and the first missing columns; refuse an empty frame."""
    if df is None or len(df) == 0:
        raise ShopError(f"{name}: no rows to check")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ShopError(f"{name}: missing column(s) {missing}")


class EncoderCache:
    """MiniLM vectors of texts, each distinct text encoded once per process (real samples are shared)."""

    def __init__(self, factory: Callable[[], object]):
        self._factory, self._encoder, self._vectors = factory, None, {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        todo = sorted({str(t) for t in texts} - self._vectors.keys())
        if todo:
            if self._encoder is None:
                self._encoder = self._factory()
            for text, vector in zip(todo, self._encoder.encode(todo), strict=True):
                self._vectors[text] = vector
        return np.stack([self._vectors[str(t)] for t in texts]) if len(texts) else np.zeros((0, 384), np.float32)


@dataclass
class Comparison:
    """Real vs synthetic frames (same columns) and what the Evidently report compares in them."""

    real: pd.DataFrame
    synthetic: pd.DataFrame
    numeric: list[str]
    categorical: list[str] = field(default_factory=list)
    text: str | None = None  # text column: length / word count / OOV descriptors and MiniLM embedding drift


def text_descriptors(frame: pd.DataFrame, text: str, vocab: set[str]) -> pd.DataFrame:
    """`frame` with the text descriptors the reports compare, computed by Evidently's descriptor API:
    `<text>_chars` (TextLength), `<text>_words` and `<text>_oov` (share of words not in `vocab`).

    Words and OOV are custom column descriptors over `tokens`: Evidently's WordCount drops digits, which
    e-commerce text is full of ("18 in. vanity" is three words here, two there), and its OOVWordsPercentage
    counts words missing from an English dictionary, not from the shop's own real text.
    """
    from evidently import DataDefinition, Dataset
    from evidently.core.datasets import DatasetColumn
    from evidently.descriptors import CustomColumnDescriptor, TextLength

    def words(column: DatasetColumn) -> DatasetColumn:
        return DatasetColumn("num", column.data.map(lambda t: float(len(tokens(t)))))

    def oov(column: DatasetColumn) -> DatasetColumn:
        return DatasetColumn("num", pd.Series(oov_share(column.data.tolist(), vocab), index=column.data.index))

    dataset = Dataset.from_pandas(
        pd.DataFrame({text: frame[text].astype(str).to_numpy()}),
        data_definition=DataDefinition(text_columns=[text]),
        descriptors=[
            TextLength(text, alias=f"{text}_chars"),
            CustomColumnDescriptor(text, words, alias=f"{text}_words"),
            CustomColumnDescriptor(text, oov, alias=f"{text}_oov"),
        ],
    )
    described = dataset.as_dataframe()
    columns = [f"{text}_chars", f"{text}_words", f"{text}_oov"]
    return frame.assign(**{c: described[c].astype(float).to_numpy() for c in columns})


@functools.cache
def classifier_embeddings_drift() -> type:
    """The Evidently metric class `ClassifierEmbeddingsDrift(embeddings_name=..., tests=...)`: the ROC AUC of
    Evidently's `ModelDriftMethod` classifier told to separate current from reference embeddings.

    The same score as `EmbeddingsDrift(drift_method=ModelDriftMethod())`, without the t-SNE plot that metric
    always draws (about a minute per report on 2 cores). Built on first use: importing Evidently is slow.
    """
    from evidently import Dataset
    from evidently.core.metric_types import SingleValue, SingleValueCalculation, SingleValueMetric
    from evidently.metrics.embeddings import ModelDriftMethod

    class ClassifierEmbeddingsDrift(SingleValueMetric):
        embeddings_name: str

    class ClassifierEmbeddingsDriftCalculation(SingleValueCalculation[ClassifierEmbeddingsDrift]):
        def calculate(self, context, current_data: Dataset, reference_data: Dataset | None) -> SingleValue:
            if reference_data is None:
                raise ShopError("embedding drift needs reference data")
            columns = current_data.data_definition.embeddings[self.metric.embeddings_name]
            current, reference = current_data.as_dataframe()[columns], reference_data.as_dataframe()[columns]
            score, _, _ = ModelDriftMethod()(current.copy(), reference.copy())  # it adds a target column
            return self.result(float(score))

        def display_name(self) -> str:
            return f"Drift in embeddings: {self.metric.embeddings_name} (classifier ROC AUC)"

    return ClassifierEmbeddingsDrift


def evidently_compare(
    comp: Comparison,
    encoder: EncoderCache | None,
    tests: dict[str, list],
    vocab: set[str],
    extra_metrics: Sequence = (),
    timestamp: dt.datetime | None = None,
) -> tuple[object, dict[str, float]]:
    """Run one Evidently report (synthetic = current, real = reference); return (snapshot, {check: value}).
    `timestamp` dates the snapshot (a serving window's end; default: now).

    Column drift uses normed Wasserstein distance (numeric) and Jensen-Shannon distance (categorical), so values
    are effect sizes rather than p-values (any large sample is "significantly" different). Text columns get
    length / word / OOV descriptors plus embedding drift: the ROC AUC of Evidently's classifier told to separate
    real from synthetic MiniLM embeddings (0.5 = indistinguishable).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue, RowCount, ValueDrift

    real, synth = comp.real.reset_index(drop=True), comp.synthetic.reset_index(drop=True)
    numeric = list(comp.numeric)
    emb_cols: list[str] = []
    if comp.text:
        real, synth = text_descriptors(real, comp.text, vocab), text_descriptors(synth, comp.text, vocab)
        numeric += [f"{comp.text}_chars", f"{comp.text}_words"]
        if encoder is not None:
            vr, vs = encoder.encode(real[comp.text].tolist()), encoder.encode(synth[comp.text].tolist())
            emb_cols = [f"emb_{i}" for i in range(vr.shape[1])]
            real = pd.concat([real, pd.DataFrame(vr, columns=emb_cols)], axis=1)
            synth = pd.concat([synth, pd.DataFrame(vs, columns=emb_cols)], axis=1)
    oov = [f"{comp.text}_oov"] if comp.text else []  # the real side is 0 by construction: a mean, not a drift
    keep = numeric + oov + comp.categorical + emb_cols
    for frame in (real, synth):
        for c in numeric + oov + emb_cols:
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
        for c in comp.categorical:
            frame[c] = frame[c].astype(str)
    definition = DataDefinition(
        numerical_columns=numeric + oov + emb_cols,
        categorical_columns=comp.categorical,
        embeddings={EMBEDDING: emb_cols} if emb_cols else None,
    )
    metrics: list = [RowCount()]
    names: list[str] = ["rows"]
    for c in numeric:
        metrics.append(ValueDrift(column=c, method="wasserstein", tests=tests.get(f"drift:{c}", [])))
        names.append(f"drift:{c}")
    for c in comp.categorical:
        metrics.append(ValueDrift(column=c, method="jensenshannon", tests=tests.get(f"drift:{c}", [])))
        names.append(f"drift:{c}")
    if oov:
        metrics.append(MeanValue(column=oov[0], tests=tests.get("oov", [])))
        names.append("oov_mean")
    if emb_cols:
        drift = classifier_embeddings_drift()
        metrics.append(drift(embeddings_name=EMBEDDING, tests=tests.get("embedding_drift", [])))
        names.append("embedding_drift")
    metrics += list(extra_metrics)
    names += [type(m).__name__ for m in extra_metrics]
    snapshot = Report(metrics).run(
        Dataset.from_pandas(synth[keep], data_definition=definition),
        Dataset.from_pandas(real[keep], data_definition=definition),
        timestamp=timestamp,
    )
    values = {}
    for name, result in zip(names, snapshot.dict()["metrics"], strict=True):
        value = result["value"]
        values[name] = float(value) if isinstance(value, int | float) and value is not None else value
    return snapshot, values


def failed_tests(snapshot) -> list[str]:
    """Names of the Evidently tests of `snapshot` that did not pass."""
    return [t["name"] for t in snapshot.dict().get("tests", []) if t["status"] not in ("SUCCESS", "WARNING")]


def fidelity(real: pd.DataFrame, synthetic: pd.DataFrame, numeric: list[str], categorical: list[str]) -> dict:
    """SDMetrics quality report: column shapes (KS / TV complement) and column pair trends, each in 0..1."""
    import warnings

    from sdmetrics.reports.single_table import QualityReport

    columns = numeric + categorical
    metadata = {
        "columns": {
            **{c: {"sdtype": "numerical"} for c in numeric},
            **{c: {"sdtype": "categorical"} for c in categorical},
        }
    }
    real = real[columns].copy()
    synthetic = synthetic[columns].copy()
    for frame in (real, synthetic):
        for c in numeric:
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
        for c in categorical:
            frame[c] = frame[c].astype(str)
    report = QualityReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.generate(real, synthetic, metadata, verbose=False)
    props = report.get_properties().set_index("Property")["Score"]
    shapes = report.get_details("Column Shapes")
    out = {"shape_score": _num(props.get("Column Shapes")), "pair_trend_score": _num(props.get("Column Pair Trends"))}
    out["shape_by_column"] = {str(r["Column"]): _num(r["Score"]) for _, r in shapes.iterrows()}
    return out


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(value) else round(value, 6)


# ----------------------------------------------------------------------------------------------- privacy
def histories(frame: pd.DataFrame) -> pd.Series:
    """Per sequence (`sequence_id` if present, else user), the sorted tuple of its (ts, item) rows."""
    key = frame["sequence_id"].astype(str) if "sequence_id" in frame.columns else frame["user_id"].astype(str)
    rows = pd.Series(list(zip(frame["ts"].astype(str), frame["item_id"].astype(str), strict=True)), index=frame.index)
    return rows.groupby(key.to_numpy()).agg(lambda r: tuple(sorted(r)))


def identical_history_share(real: pd.DataFrame, synthetic: pd.DataFrame) -> float:
    """Share of synthetic histories identical to a real one (the rule fuse also applies).

    A view of a real user (its user id is real) is identical when its (ts, item) rows equal that user's real
    history; a new synthetic user is identical when its item set equals any real user's item set.
    """
    real_hist = histories(real.assign(sequence_id=real["user_id"]))
    real_sets = {frozenset(i for _, i in h) for h in real_hist}
    users = synthetic.assign(
        _seq=synthetic["sequence_id"].astype(str)
        if "sequence_id" in synthetic.columns
        else synthetic["user_id"].astype(str)
    )
    owner = users.groupby("_seq")["user_id"].first().astype(str)
    synth_hist = histories(synthetic)
    same = 0
    for seq, hist in synth_hist.items():
        user = owner.get(seq)
        if user in real_hist.index:
            same += hist == real_hist[user]
        else:
            same += frozenset(i for _, i in hist) in real_sets
    return same / max(len(synth_hist), 1)


def copied_row_share(real: pd.DataFrame, synthetic: pd.DataFrame, key: list[str]) -> float:
    """Share of synthetic rows equal to a real row on `key` columns."""
    real_keys = pd.MultiIndex.from_frame(real[key].astype(str))
    return float(pd.MultiIndex.from_frame(synthetic[key].astype(str)).isin(real_keys).mean())


def _split_reference(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return order[: n // 2], order[n // 2 :]


def dcr_vectors(real: np.ndarray, synthetic: np.ndarray, rng: np.random.Generator, metric: str = "euclidean") -> dict:
    """Distance to closest real record for synthetic rows vs. the same for held-out real rows.

    The real rows are split in half: synthetic rows and the held-out half are both matched against the other
    half, so `dcr_ratio` < 1 means synthetic records sit closer to real ones than real people are to each other.
    """
    from sklearn.neighbors import NearestNeighbors

    if len(real) < 4 or len(synthetic) == 0:
        raise ShopError("privacy: too few records to measure the distance to the closest real record")
    base, holdout = _split_reference(len(real), rng)
    nn = NearestNeighbors(n_neighbors=1, metric=metric).fit(real[base])
    d_syn = nn.kneighbors(synthetic)[0][:, 0]
    d_real = nn.kneighbors(real[holdout])[0][:, 0]
    return _dcr_summary(d_syn, d_real)


def dcr_sets(real_sets: list[frozenset], synthetic_sets: list[frozenset], rng: np.random.Generator) -> dict:
    """Jaccard distance of each synthetic item set (history) to the closest real user's, vs real-to-real."""
    import scipy.sparse as sp

    if len(real_sets) < 4 or not synthetic_sets:
        raise ShopError("privacy: too few histories to measure the distance to the closest real record")
    vocab = {i: n for n, i in enumerate(sorted(set().union(*real_sets, *synthetic_sets)))}

    def matrix(sets):
        rows = [r for r, s in enumerate(sets) for _ in s]
        cols = [vocab[i] for s in sets for i in s]
        return sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(sets), len(vocab)))

    base, holdout = _split_reference(len(real_sets), rng)
    ref = matrix([real_sets[i] for i in base])
    ref_sizes = np.asarray(ref.sum(axis=1)).ravel()

    def closest(sets):
        m = matrix(sets)
        inter = (m @ ref.T).toarray()
        sizes = np.asarray(m.sum(axis=1)).ravel()
        union = sizes[:, None] + ref_sizes[None, :] - inter
        return 1 - (inter / np.maximum(union, 1)).max(axis=1)

    return _dcr_summary(closest(synthetic_sets), closest([real_sets[i] for i in holdout]))


def _dcr_summary(d_syn: np.ndarray, d_real: np.ndarray) -> dict:
    med_real = float(np.median(d_real))
    return {
        "dcr_median": round(float(np.median(d_syn)), 6),
        "dcr_p05": round(float(np.quantile(d_syn, 0.05)), 6),
        "dcr_exact_share": round(float((d_syn <= 1e-9).mean()), 6),
        "dcr_real_median": round(med_real, 6),
        "dcr_ratio": round(float(np.median(d_syn)) / med_real, 6) if med_real > 0 else None,
    }
