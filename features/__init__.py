"""Feature store (Feast): point-in-time user/item context for training, online reads and pushes.

The package imports no Feast: `features.store` opens a store (importing Feast then), `features.client` is the
serving side's online client, `features.definitions` the Feast objects `features.build` registers.
"""

from features.store import (
    open_store,
    point_in_time_item_features,
    point_in_time_service_features,
    point_in_time_user_features,
)

__all__ = [
    "open_store",
    "point_in_time_item_features",
    "point_in_time_service_features",
    "point_in_time_user_features",
]
