"""Document expansion (doc2query / Doc2Token style): an item's indexed text gains the words of its synthetic
queries that its title lacks.

Only queries that survived the generator's round-trip filter reach fuse, so the added words come from queries
that already find their item. The title is kept first and whole; at most `max_terms` new words are appended,
most frequent first. The result is the `search_text` column of a search variant's items table, which BM25
indexes (training/hybrid.py) and the service indexes the same way.
"""

import re
from collections import Counter

import pandas as pd
from bm25s.stopwords import STOPWORDS_EN

_WORD = re.compile(r"[a-z0-9]+(?:[/.][0-9]+)?")
_STOP = set(STOPWORDS_EN)


def words(text: str) -> list[str]:
    """Lower-cased words and sizes (`3/4`, `1.5`) of `text`, English stopwords dropped."""
    return [w for w in _WORD.findall(str(text).lower()) if w not in _STOP]


def expansion_terms(title: str, queries: list[str], max_terms: int) -> list[str]:
    """Up to `max_terms` words of `queries` that `title` lacks, most frequent first (ties alphabetical)."""
    known = set(words(title))
    counts = Counter(w for q in queries for w in dict.fromkeys(words(q)) if w not in known)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_terms]]


def expand_items(items: pd.DataFrame, queries: pd.DataFrame, max_terms: int) -> tuple[pd.DataFrame, int]:
    """(`items` with `search_text` = title + new query words, items that gained a word). `queries`: rows with
    `query` and `item_id` (the synthetic queries of one variant)."""
    by_item = queries.assign(item_id=queries["item_id"].astype(str)).groupby("item_id")["query"].agg(list)
    ids = items["item_id"].astype(str)
    added = [
        expansion_terms(title, by_item.get(item, []), max_terms)
        for item, title in zip(ids, items["title"].astype(str), strict=True)
    ]
    titles = items["title"].astype(str)
    text = [f"{title} {' '.join(extra)}" if extra else title for title, extra in zip(titles, added, strict=True)]
    return items.assign(search_text=text), sum(1 for extra in added if extra)
