"""Generator 7: LLMRec-style item enrichment: a category and a short description for every catalogue item.

Online Retail titles are ~27 characters with no category. LLMRec (Wei et al., WSDM 2024) asks an LLM for item
attributes; with `use_llm: true` this goes through the configured text backend (huggingface / openai). The
default needs no LLM: MiniLM title embeddings are clustered (k-means) and each cluster is named by its top TF-
IDF terms; the description combines title, category and price band. Its rows are the enriched items table.
"""

import logging
import re

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from core.errors import ShopError
from core.io import read_table
from core.params import Params
from core.paths import shared_root
from pipelines.augment import backends
from pipelines.augment.manifest import Context, GeneratorOutput
from pipelines.augment.retail_history import encode_titles

log = logging.getLogger(__name__)
GENERATOR = "item_enrichment"
BANDS = ["budget", "mid-range", "premium", "luxury"]


class Settings(BaseModel):
    """Generator 7: LLMRec-style category + description per item (LLM backend, else embedding clusters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    use_llm: bool = Field(description="generate through augment.backend (huggingface/openai)")
    n_clusters: int = Field(ge=2, description="categories found by clustering title embeddings")
    top_terms: int = Field(ge=1, description="TF-IDF terms naming a cluster")
    price_bands: list[float] = Field(description="GBP edges: budget | mid | premium | luxury")


def price_band(price: pd.Series, edges: list[float]) -> pd.Series:
    """Map prices to budget | mid-range | premium | luxury by the GBP `edges` (sorted ascending)."""
    labels = BANDS[: len(edges) + 1] if len(edges) < len(BANDS) else [f"band {i}" for i in range(len(edges) + 1)]
    return pd.Series(
        np.asarray(labels, dtype=object)[np.digitize(price.fillna(0).to_numpy(), sorted(edges))],
        index=price.index,
    )


def name_clusters(titles: pd.Series, labels: np.ndarray, top_terms: int) -> dict[int, str]:
    """Name each cluster by its `top_terms` most distinctive words (class-based TF-IDF over cluster
    documents).

    Each cluster's titles form one document, so words common to every cluster (colours, "set") rank low; names
    are made unique by adding terms.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    clusters = np.unique(labels)
    docs = [" ".join(titles[labels == c].str.lower()) for c in clusters]
    vectorizer = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z]{3,}\b", sublinear_tf=True)
    tfidf = vectorizer.fit_transform(docs).toarray()
    vocab = np.asarray(vectorizer.get_feature_names_out())
    names: dict[int, str] = {}
    for row, cluster in enumerate(clusters):
        order = np.lexsort((vocab, -tfidf[row]))  # ties broken alphabetically for determinism
        terms = [vocab[i] for i in order if tfidf[row, i] > 0]
        take = top_terms
        name = " ".join(terms[:take]) or f"group {cluster}"
        while name in names.values() and take < len(terms):
            take += 1
            name = " ".join(terms[:take])
        names[int(cluster)] = name if name not in names.values() else f"{name} {cluster}"
    return names


def enrich_by_clusters(items: pd.DataFrame, vectors: np.ndarray, p: Settings, seed: int) -> pd.DataFrame:
    """Return items with `category` (k-means cluster named by TF-IDF terms), `description`, `cluster`,
    `price_band`."""
    from sklearn.cluster import KMeans

    k = min(p.n_clusters, len(np.unique(vectors, axis=0)))
    labels = (
        KMeans(n_clusters=k, random_state=seed, n_init=3).fit_predict(vectors) if k > 1 else np.zeros(len(items), int)
    )
    names = name_clusters(items["title"].astype(str), labels, p.top_terms)
    out = items.copy()
    out["cluster"] = labels.astype("int64")
    out["category"] = [names[c] for c in labels]
    out["price_band"] = price_band(out["price"], p.price_bands)
    out["description"] = [
        describe(t, c, b, pr)
        for t, c, b, pr in zip(out["title"], out["category"], out["price_band"], out["price"], strict=True)
    ]
    return out


def describe(title: str, category: str, band: str, price: float) -> str:
    """A one-sentence description built from the item's own fields (no invented attributes)."""
    text = re.sub(r"\s+", " ", str(title)).strip().capitalize() or "Item"
    price_text = f" at £{price:.2f}" if pd.notna(price) and price > 0 else ""
    return f"{text}: a {band} item{price_text} from the {category} range."


def enrich_by_llm(items: pd.DataFrame, params: Params, p: Settings) -> pd.DataFrame:
    """Ask the configured LLM backend for a category and a short description per item (LLMRec prompts)."""
    if params.augment.backend.name == "offline":
        raise ShopError(
            "generators.item_enrichment.settings.use_llm: needs augment.backend.name huggingface or openai "
            "(the offline backend cannot write descriptions)"
        )
    generator = backends.make_backend(params.augment.backend, params.seed, root=shared_root())
    band = price_band(items["price"], p.price_bands)
    stems = [f"Product title: {t}\nPrice band: {b}\n" for t, b in zip(items["title"], band, strict=True)]
    categories = generator.complete([s + "Give a product category of 1-3 words. Category:" for s in stems])
    descriptions = generator.complete([s + "Write one sentence describing this product. Description:" for s in stems])
    generator.close()
    out = items.copy()
    out["price_band"] = band
    out["cluster"] = -1
    out["category"] = [first_line(c[0] if c else "", "category").lower() or "uncategorised" for c in categories]
    out["description"] = [
        first_line(d[0] if d else "", "description")[:300] or describe(t, c, b, pr)
        for d, t, c, b, pr in zip(descriptions, out["title"], out["category"], band, out["price"], strict=True)
    ]
    return out


def first_line(text: str, label: str) -> str:
    """The first non-empty line of an LLM reply, without quotes or a leading `<label>:`, whitespace collapsed."""
    for line in str(text).strip().splitlines():
        line = line.strip().strip("\"'`").strip()
        if line.lower().startswith(label + ":"):
            line = line[len(label) + 1 :].strip().strip("\"'`").strip()
        if line:
            return " ".join(line.split())
    return ""


def generate(ctx: Context) -> GeneratorOutput:
    """Every item with a generated category and description (the enriched items table)."""
    p, params = ctx.settings, ctx.params
    catalogue = read_table(ctx.table("items"), "items").sort_values("item_id", kind="stable").reset_index(drop=True)
    if p.use_llm:
        enriched = enrich_by_llm(catalogue, params, p)
    else:
        enriched = enrich_by_clusters(catalogue, encode_titles(catalogue, params.encoder), p, params.seed)
    enriched["parent_id"] = enriched["item_id"]
    log.info("%s: %d items in %d categories", GENERATOR, len(enriched), enriched["category"].nunique())
    return GeneratorOutput(
        enriched,
        inputs=[ctx.table("items")],
        backend=params.augment.backend.name if p.use_llm else "minilm-kmeans-tfidf",
        model_id=params.augment.backend.model if p.use_llm else params.encoder.model,
        settings={"backend": params.augment.backend.model_dump()} if p.use_llm else {},
        extra={"categories": int(enriched["category"].nunique())},
    )
