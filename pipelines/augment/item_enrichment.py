"""Generator 7: LLMRec-style item enrichment: a category and a short description for every catalogue item.

Online Retail titles are ~27 characters with no category. LLMRec (Wei et al., WSDM 2024) asks an LLM for item
attributes; with `use_llm: true` this goes through the configured text backend (huggingface / openai). The
default needs no LLM: MiniLM title embeddings are clustered (k-means) and each cluster is named by its top TF-
IDF terms; the description combines title, category and price band. Title embeddings are written beside the
output for the other generators (`item_embeddings.parquet`).
"""

import logging
import re
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from core import cli
from core.errors import ShopError
from core.io import atomic_path, read_table
from core.params import ItemEnrichmentParams, Params, load_params
from core.paths import repo_root
from pipelines.augment.manifest import write_synthetic
from pipelines.augment.retail_history import ITEMS_PATH

log = logging.getLogger(__name__)
app = typer.Typer(add_completion=False, help=__doc__)
GENERATOR = "item_enrichment"
BANDS = ["budget", "mid-range", "premium", "luxury"]
EMBEDDINGS_PATH = Path("data/synthetic/item_embeddings.parquet")


def encode_titles(items: pd.DataFrame, encoder_params) -> np.ndarray:
    """Return MiniLM unit vectors of the item titles (item id when a title is empty), in `items` order."""
    from core.encoder import TextEncoder

    titles = [t.strip() or i for t, i in zip(items["title"].astype(str), items["item_id"].astype(str), strict=True)]
    return TextEncoder(encoder_params.model, encoder_params.max_length, encoder_params.batch_size).encode(titles)


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


def enrich_by_clusters(items: pd.DataFrame, vectors: np.ndarray, p: ItemEnrichmentParams, seed: int) -> pd.DataFrame:
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


def enrich_by_llm(items: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Ask the configured LLM backend for a category and a short description per item (LLMRec prompts)."""
    from pipelines.augment import backends

    if params.augment.backend.name == "offline":
        raise ShopError(
            "augment.item_enrichment.use_llm: needs augment.backend.name huggingface or openai "
            "(the offline backend cannot write descriptions)"
        )
    generator = backends.make_backend(params.augment.backend, params.seed, root=repo_root())
    band = price_band(items["price"], params.augment.item_enrichment.price_bands)
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


def write_embeddings(items: pd.DataFrame, vectors: np.ndarray, path: Path | str) -> None:
    """Write item ids and their title vectors (fixed-size float32 lists) as Parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(vectors.astype(np.float32).ravel())
    table = pa.table(
        {
            "item_id": pa.array(items["item_id"].astype(str).tolist()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_embeddings(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Return (item ids, (n, d) float32 vectors) written by `write_embeddings`."""
    import pyarrow.parquet as pq

    if not Path(path).exists():
        raise ShopError(f"{path}: file not found; run stage augment_item_enrichment first")
    table = pq.read_table(path)
    column = table.column("embedding").combine_chunks()
    vectors = column.flatten().to_numpy().reshape(len(table), column.type.list_size)
    return np.asarray(table.column("item_id").to_pylist()), vectors.astype(np.float32)


@app.command()
def main(
    params_file: Annotated[Path, typer.Option(help="params.yaml to read")] = Path("params.yaml"),
    items: Annotated[Path, typer.Option(help="canonical items to enrich")] = ITEMS_PATH,
    out: Annotated[Path, typer.Option(help="enriched items to write")] = Path("data/synthetic/item_enrichment.parquet"),
    embeddings: Annotated[Path, typer.Option(help="title embeddings to write")] = EMBEDDINGS_PATH,
) -> None:
    """Write every item with a generated category and description, plus its title embedding."""
    started = time.perf_counter()
    params = load_params(repo_root() / params_file if not params_file.is_absolute() else params_file)
    p = params.augment.item_enrichment
    catalogue = read_table(items, "items").sort_values("item_id", kind="stable").reset_index(drop=True)
    vectors = encode_titles(catalogue, params.encoder)
    write_embeddings(catalogue, vectors, embeddings)
    enriched = enrich_by_llm(catalogue, params) if p.use_llm else enrich_by_clusters(catalogue, vectors, p, params.seed)
    enriched["parent_id"] = enriched["item_id"]
    backend = params.augment.backend.name if p.use_llm else "minilm-kmeans-tfidf"
    model = params.augment.backend.model if p.use_llm else params.encoder.model
    write_synthetic(
        enriched,
        out,
        "items",
        generator=GENERATOR,
        params=p.model_dump(),
        seed=params.seed,
        inputs=[items],
        started=started,
        backend=backend,
        model_id=model,
        extra={"categories": int(enriched["category"].nunique())},
    )
    log.info("%s: %d items in %d categories -> %s", GENERATOR, len(enriched), enriched["category"].nunique(), out)


if __name__ == "__main__":
    cli.run(app)
