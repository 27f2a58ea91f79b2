"""Quality of synthetic query text beside the real queries: diversity, title copies, lengths, round-trip pass rate.

The gate reports it (`text_quality` in `metrics/gate/<generator>.json`, a table and two length histograms in the
HTML report) for generators whose table is `queries`; it never decides pass / drop / fail. Diversity and lengths
are measured over distinct queries (lower-cased, whitespace collapsed), because a real query is judged against
several items and would otherwise count once per item; title copies are measured per row (a query and its item).
"""

import functools
import html
from collections.abc import Sequence

import numpy as np
import pandas as pd

from monitoring.checks import tokens

# Queries drawn per side for self-BLEU, each scored against the other drawn ones. The cost is quadratic in it:
# 300 takes about 1.5 s per side on one core, whatever the number of queries (60k synthetic queries included).
SELF_BLEU_SAMPLE = 300
WORD_BINS = ["0-1"] + [str(n) for n in range(2, 10)] + ["10+"]
CHAR_BIN_WIDTH, CHAR_BINS = 5, 12  # bins of 5 characters, the last one open ("55+")


def normalise_query(text: pd.Series) -> pd.Series:
    """Lower-cased text with runs of whitespace collapsed to one space."""
    return text.astype(str).str.lower().str.split().str.join(" ")


def distinct_queries(rows: pd.DataFrame) -> list[str]:
    """The sorted distinct normalised queries of a queries table (sorted: the result ignores row order)."""
    return sorted(set(normalise_query(rows["query"])))


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Unique n-grams / all n-grams over `texts` (words as `checks.tokens` splits them); None without any n-gram."""
    grams = [tuple(words[i : i + n]) for words in map(tokens, texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def self_bleu(texts: Sequence[str], sample: int = SELF_BLEU_SAMPLE, seed: int = 0) -> float | None:
    """Mean BLEU of each of `sample` texts (a seeded draw) against the other drawn texts as references.

    nltk's `sentence_bleu`: n-grams up to 4, reweighted uniformly to the text's length when it is shorter
    (`auto_reweigh`; most queries have 2-4 words), Chen & Cherry's smoothing 1. 1.0 when every text repeats
    another, 0 when no two share a word; None with fewer than two texts that have words.
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    rng = np.random.default_rng(seed)
    drawn = rng.choice(len(texts), size=min(sample, len(texts)), replace=False) if len(texts) else []
    words = [w for w in (tokens(texts[i]) for i in drawn) if w]
    if len(words) < 2:
        return None
    smoothing = SmoothingFunction().method1
    scores = [
        sentence_bleu(words[:i] + words[i + 1 :], hyp, smoothing_function=smoothing, auto_reweigh=True)
        for i, hyp in enumerate(words)
    ]
    return float(np.mean(scores))


def title_copy_share(rows: pd.DataFrame, titles: pd.Series) -> float | None:
    """Share of rows whose query equals its item's title (both normalised); rows whose item has no title in
    `titles` (item_id -> title) are left out; None when no row has one."""
    title = rows["item_id"].astype(str).map(normalise_query(titles))
    known = title.notna().to_numpy()
    if not known.any():
        return None
    return float((normalise_query(rows["query"]).to_numpy()[known] == title.to_numpy()[known]).mean())


def round_trip_pass_rate(manifest: dict | None) -> float | None:
    """kept / generated from a generator's manifest (`kept_fraction`, else `kept` and `generated`); None when the
    manifest records no such filter."""
    manifest = manifest or {}
    if manifest.get("kept_fraction") is not None:
        return float(manifest["kept_fraction"])
    if manifest.get("kept") is not None and manifest.get("generated"):
        return manifest["kept"] / manifest["generated"]
    return None


def describe_queries(rows: pd.DataFrame, titles: pd.Series | None, distinct_sample: int, seed: int) -> dict:
    """One side of the section: rows, distinct queries, distinct-1/2 over a seeded draw of `distinct_sample`
    distinct queries, self-BLEU, title copies, lengths."""
    queries = distinct_queries(rows)
    drawn = np.random.default_rng(seed).choice(len(queries), size=min(distinct_sample, len(queries)), replace=False)
    words = np.array([len(tokens(q)) for q in queries], dtype=float)
    chars = np.array([len(q) for q in queries], dtype=float)
    values = {
        "distinct_1": distinct_n([queries[i] for i in drawn], 1),
        "distinct_2": distinct_n([queries[i] for i in drawn], 2),
        "self_bleu": self_bleu(queries, SELF_BLEU_SAMPLE, seed),
        "title_copy_share": title_copy_share(rows, titles) if titles is not None else None,
        "words_mean": words.mean() if len(words) else None,
        "words_median": np.median(words) if len(words) else None,
        "chars_mean": chars.mean() if len(chars) else None,
        "chars_median": np.median(chars) if len(chars) else None,
    }
    return {
        "rows": int(len(rows)),
        "queries": len(queries),
        **{k: None if v is None else round(float(v), 4) for k, v in values.items()},
    }


def query_text_quality(
    synthetic: pd.DataFrame,
    real: pd.DataFrame,
    titles: pd.Series | None,
    manifest: dict | None,
    seed: int,
) -> dict:
    """The gate's `text_quality` section: {"synthetic": {...}, "real": {...}, "distinct_n_queries",
    "self_bleu_sample", "notes"}.

    Distinct-n falls as texts are added (common words repeat), so both sides are measured on the same number of
    distinct queries, `distinct_n_queries` (the smaller side's count; a seeded draw from the larger). `titles`
    maps item_id to the canonical item title (None: title copies are not measured); `manifest` is the generator's
    manifest.json (None or without kept / generated: no round-trip pass rate). Reported only.
    """
    same_size = min(len(distinct_queries(synthetic)), len(distinct_queries(real)))
    out = {
        "synthetic": describe_queries(synthetic, titles, same_size, seed),
        "real": describe_queries(real, titles, same_size, seed),
        "distinct_n_queries": same_size,
        "self_bleu_sample": SELF_BLEU_SAMPLE,
        "notes": [],
    }
    rate = round_trip_pass_rate(manifest)
    out["synthetic"]["round_trip_pass_rate"] = None if rate is None else round(rate, 4)
    if titles is None:
        out["notes"].append("no items table: title copies not measured")
    elif out["synthetic"]["title_copy_share"] is None:
        out["notes"].append("no synthetic row names an item of the catalogue: title copies not measured")
    if rate is None:
        out["notes"].append("the manifest records no round-trip filter (kept / generated)")
    return out


TEXT_QUALITY_ROWS = {
    "rows": "rows",
    "queries": "distinct queries",
    "distinct_1": "distinct-1 (unique words / words)",
    "distinct_2": "distinct-2 (unique word pairs / pairs)",
    "self_bleu": "self-BLEU (lower = more diverse)",
    "title_copy_share": "query = its item's title",
    "words_mean": "words, mean",
    "words_median": "words, median",
    "chars_mean": "characters, mean",
    "chars_median": "characters, median",
    "round_trip_pass_rate": "round-trip pass rate (kept / generated)",
}


def text_quality_html(section: dict | None) -> str:
    """The synthetic text quality table (synthetic beside real), or nothing for generators without one."""
    if not section:
        return ""

    def cell(value) -> str:
        return "–" if value is None else html.escape(str(value))

    rows = "".join(
        f"<tr><td>{label}</td><td>{cell(section['synthetic'].get(key))}</td><td>{cell(section['real'].get(key))}"
        "</td></tr>"
        for key, label in TEXT_QUALITY_ROWS.items()
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in section["notes"])
    return (
        "<h3>Synthetic text quality (reported, not decisive)</h3>"
        f"<p>Over distinct queries (title copies: over rows); distinct-n on {section['distinct_n_queries']} and "
        f"self-BLEU on {section['self_bleu_sample']} seeded queries per side. Length histograms: the last two "
        "panels of the report below.</p>"
        "<table border='1' cellpadding='4' style='border-collapse:collapse'>"
        f"<tr><th>metric</th><th>synthetic</th><th>real (training)</th></tr>{rows}</table>"
        + (f"<ul>{notes}</ul>" if notes else "")
    )


# ------------------------------------------------------------------------------------------- histograms
def length_histograms(synthetic: Sequence[str], real: Sequence[str]) -> dict[str, dict]:
    """Per unit (words, characters): bin labels and the share of each side's texts in each bin."""
    char_bins = [f"{i * CHAR_BIN_WIDTH}-{(i + 1) * CHAR_BIN_WIDTH - 1}" for i in range(CHAR_BINS - 1)]
    units = {
        "words": (WORD_BINS, lambda t: max(len(tokens(t)) - 1, 0)),
        "characters": (char_bins + [f"{(CHAR_BINS - 1) * CHAR_BIN_WIDTH}+"], lambda t: len(t) // CHAR_BIN_WIDTH),
    }
    out = {}
    for unit, (bins, bin_of) in units.items():
        shares = {}
        for side, texts in (("synthetic", synthetic), ("real", real)):
            counts = np.bincount([min(bin_of(t), len(bins) - 1) for t in texts], minlength=len(bins))
            shares[side] = [round(float(c), 6) for c in counts / max(counts.sum(), 1)]
        out[unit] = {"bins": bins, **shares}
    return out


@functools.cache
def length_histogram_metric() -> type:
    """The Evidently metric class `QueryLengthHistogram(unit=, bins=, synthetic=, real=)`: draws two given
    histograms (shares per bin) side by side in the report; its value is their total variation distance.

    The shares come in as parameters because they are over distinct queries while the report's datasets are row
    samples; Evidently draws them with the plotly it bundles, so the page needs no second copy of plotly.js.
    Built on first use: importing Evidently is slow.
    """
    import plotly.graph_objects as go
    from evidently.core.metric_types import SingleValue, SingleValueCalculation, SingleValueMetric
    from evidently.legacy.renderers.html_widgets import plotly_figure

    class QueryLengthHistogram(SingleValueMetric):
        unit: str
        bins: list[str]
        synthetic: list[float]
        real: list[float]

    class QueryLengthHistogramCalculation(SingleValueCalculation[QueryLengthHistogram]):
        def calculate(self, context, current_data, reference_data) -> SingleValue:
            m = self.metric
            figure = go.Figure(
                [
                    go.Bar(x=m.bins, y=m.synthetic, name="synthetic (current)", marker_color="#ed0400"),
                    go.Bar(x=m.bins, y=m.real, name="real (reference)", marker_color="#4d4d4d"),
                ]
            )
            figure.update_layout(barmode="group", xaxis_title=m.unit, yaxis_title="share of distinct queries")
            result = self.result(0.5 * sum(abs(s - r) for s, r in zip(m.synthetic, m.real, strict=True)))
            result.widget = [plotly_figure(title=self.display_name(), figure=figure)]
            return result

        def display_name(self) -> str:
            return f"Query length in {self.metric.unit}, synthetic vs real distinct queries (total variation)"

    return QueryLengthHistogram


def length_histogram_metrics(synthetic: pd.DataFrame, real: pd.DataFrame) -> list:
    """Two `QueryLengthHistogram` metrics (words, characters) for the gate's Evidently report."""
    metric = length_histogram_metric()
    hist = length_histograms(distinct_queries(synthetic), distinct_queries(real))
    return [metric(unit=unit, **h) for unit, h in hist.items()]
