"""What the evaluation harness asks of a model: every baseline and trained model implements one of these."""

from typing import Protocol

import pandas as pd


class Recommender(Protocol):
    """Ranks the full catalogue for users represented by their purchase history (not a learned id alone)."""

    name: str

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> None:
        """Learn from canonical training interactions (ts before the cutoff) and the item catalogue."""

    def recommend(self, history: pd.DataFrame, user_ids: list[str], k: int) -> dict[str, list[str]]:
        """Return the top-k item ids per user; `history` = the canonical interactions visible to the model."""


class Retriever(Protocol):
    """Scores (query, item) pairs and retrieves from the whole catalogue."""

    name: str

    def fit(self, queries: pd.DataFrame, items: pd.DataFrame) -> None:
        """Learn from canonical training queries and index the catalogue `items`."""

    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        """Return the top-k (item_id, score) of the indexed catalogue for each query."""

    def score(self, queries: list[str], item_ids: list[str]) -> list[float]:
        """Return one relevance score per (query, item_id) pair, for re-ranking judged candidates."""
