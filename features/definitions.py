"""Feast definitions: user and item entities, their snapshot sources, feature views, services, push source."""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float32, Int64, String

from features.compute import HOUR_BUCKETS, N_TEXT_CLUSTERS, WEEKDAYS

# Snapshots of the training side of the temporal split are valid this long after their timestamp: lookups
# during the test period (after the last snapshot at the cutoff) still see the cutoff's values.
SNAPSHOT_TTL = timedelta(days=90)


def _field(name: str, dtype, description: str, default: str = "0") -> Field:
    # The default is what the online client returns for an id the store has never seen.
    return Field(name=name, dtype=dtype, description=description, tags={"default": default})


# The customer: one row per customer and snapshot; `user_id` is the canonical user id (a string).
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="a registered customer")

# The catalogue item: `item_id` is the canonical item id (a stock code for Online Retail).
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="a catalogue item")

# Daily snapshots of user features written by `python -m features.build`; a row stamped t was computed from
# training interactions with ts < t, so a point-in-time join never sees the future.
user_snapshots = FileSource(
    name="user_snapshots",
    path="../data/features/user_features.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="daily user feature snapshots from the training split",
)

# The same for items (popularity windows, price statistics, co-purchase degree, text attributes).
item_snapshots = FileSource(
    name="item_snapshots",
    path="../data/features/item_features.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="daily item feature snapshots from the training split",
)

# Serving pushes updated user rows here after new purchases (OnlineFeatureClient.push_purchases); the batch source
# above backs it for training and materialisation.
user_activity_push = PushSource(name="user_activity_push", batch_source=user_snapshots)

USER_FIELDS = [
    _field("recency_days", Float32, "days from the last purchase to the snapshot", default="-1"),
    _field("frequency", Int64, "distinct baskets so far"),
    _field("monetary", Float32, "total spend so far (sum of quantity * price)"),
    _field("n_lines", Int64, "purchase lines so far (one per basket and item)"),
    _field("avg_basket_size", Float32, "distinct items per basket"),
    _field("avg_basket_value", Float32, "spend per basket"),
    _field("days_since_first_purchase", Float32, "days from the first purchase to the snapshot", default="-1"),
    _field("country", String, "country of the customer", default=""),
    *[_field(f"share_{b}", Float32, f"share of purchase lines in the {b} hour bucket") for b in HOUR_BUCKETS],
    *[_field(f"share_{d}", Float32, f"share of purchase lines on {d}") for d in WEEKDAYS],
    *[
        _field(f"share_cluster_{k}", Float32, f"share of purchase lines in title cluster {k}")
        for k in range(N_TEXT_CLUSTERS)
    ],
    _field("top_category", String, "most purchased item category ('' when items have none)", default=""),
    _field("top_category_share", Float32, "share of purchase lines in top_category"),
]

# User context for recommendation: RFM, basket habits, time-of-day/week activity and taste shares.
user_stats = FeatureView(
    name="user_stats",
    entities=[user],
    ttl=SNAPSHOT_TTL,
    schema=USER_FIELDS,
    online=True,
    source=user_activity_push,
    tags={"team": "recsys", "grain": "daily snapshot", "owner": "features"},
)

ITEM_FIELDS = [
    _field("pop_7d", Int64, "baskets containing the item in the 7 days before the snapshot"),
    _field("pop_30d", Int64, "baskets containing the item in the 30 days before the snapshot"),
    _field("pop_90d", Int64, "baskets containing the item in the 90 days before the snapshot"),
    _field("n_baskets", Int64, "baskets containing the item so far"),
    _field("n_buyers", Int64, "distinct identified customers who bought the item so far"),
    _field("repurchase_rate", Float32, "share of buyers who bought it in two or more baskets"),
    _field("price_mean", Float32, "mean unit price over purchase lines"),
    _field("price_std", Float32, "standard deviation of the unit price"),
    _field("price_min", Float32, "lowest unit price"),
    _field("price_max", Float32, "highest unit price"),
    _field("copurchase_degree", Int64, "distinct other items bought in the same basket so far"),
    _field("title_chars", Int64, "characters in the title"),
    _field("title_tokens", Int64, "whitespace tokens in the title"),
    _field("title_mean_token_len", Float32, "mean token length of the title"),
    _field("text_cluster", Int64, "title cluster id (TF-IDF + k-means)", default="-1"),
    _field("category", String, "item category (data or enrichment; '' when unknown)", default=""),
    _field("days_since_first_seen", Float32, "days from the first sale to the snapshot", default="0"),
    _field("is_cold_start", Int64, "1 when first sold less than features.cold_start_days ago", default="1"),
]

# Item context: windowed popularity, buyers, price, repurchase, co-purchase, title and freshness.
item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=SNAPSHOT_TTL,
    schema=ITEM_FIELDS,
    online=True,
    source=item_snapshots,
    tags={"team": "recsys", "grain": "daily snapshot", "owner": "features"},
)

# Training reads every feature point-in-time; serving reads the same views online (same definitions).
recommender_training = FeatureService(
    name="recommender_training", features=[user_stats, item_stats], tags={"use": "training"}
)
recommender_serving = FeatureService(
    name="recommender_serving", features=[user_stats, item_stats], tags={"use": "serving"}
)

ALL_OBJECTS = [
    user,
    item,
    user_snapshots,
    item_snapshots,
    user_activity_push,
    user_stats,
    item_stats,
    recommender_training,
    recommender_serving,
]
