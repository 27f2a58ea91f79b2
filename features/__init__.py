"""Feature store (Feast): point-in-time user/item context for training, online reads and pushes."""

import functools

import pandas as pd

from features.client import OnlineFeatureClient
from features.store import (
    open_store,
    point_in_time_item_features,
    point_in_time_service_features,
    point_in_time_user_features,
)

__all__ = [
    "OnlineFeatureClient",
    "default_client",
    "open_store",
    "point_in_time_item_features",
    "point_in_time_service_features",
    "point_in_time_user_features",
    "push_purchases",
]


@functools.lru_cache(maxsize=1)
def default_client() -> OnlineFeatureClient:
    """The OnlineFeatureClient of the configured store ($SHOP_FEAST_CONFIG or features/feature_store.yaml)."""
    return OnlineFeatureClient()


def push_purchases(purchases: pd.DataFrame, client: OnlineFeatureClient | None = None) -> pd.DataFrame:
    """Fold new purchases into the online user features (see OnlineFeatureClient.push_purchases)."""
    return (client or default_client()).push_purchases(purchases)
