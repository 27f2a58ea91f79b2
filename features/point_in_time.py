"""Point-in-time Feast context (user and item features as of each example) for real and synthetic rows.

Training code calls `add_context` on a fused training set (or any examples with user_id / item_id and a time).
Features come only from the feature store's public functions, so each row sees the latest snapshot stamped at
or before its own time: context never leaks the future. Ids the store has never seen (synthetic users, guest
rows) get NaN features and a `*_context_missing` flag rather than invented values.
"""

import logging

import pandas as pd

from core.errors import ShopError
from features.store import point_in_time_item_features, point_in_time_user_features

log = logging.getLogger(__name__)


def add_context(
    examples: pd.DataFrame,
    *,
    ts_col: str = "ts",
    as_of: pd.Timestamp | None = None,
    user_features: list[str] | None = None,
    item_features: list[str] | None = None,
    users: bool = True,
    items: bool = True,
    store=None,
) -> pd.DataFrame:
    """Return `examples` (same rows, same order) plus `user_<feature>` / `item_<feature>` columns as of each
    row.

    The row's time is `ts_col` or, when the examples have no time (search queries), the fixed `as_of`. Lookups
    are made once per distinct (id, time) pair. Refuses examples lacking the id or time columns.
    """
    if ts_col not in examples.columns and as_of is None:
        raise ShopError(f"examples: no column '{ts_col}' and no as_of time for point-in-time features")
    when = (
        pd.to_datetime(examples[ts_col], utc=True)
        if ts_col in examples.columns
        else pd.Series(
            pd.Timestamp(as_of).tz_convert("UTC") if pd.Timestamp(as_of).tzinfo else pd.Timestamp(as_of, tz="UTC"),
            index=examples.index,
        )
    )
    out = examples.copy()
    lookups = [
        ("user", "user_id", point_in_time_user_features, user_features, users),
        ("item", "item_id", point_in_time_item_features, item_features, items),
    ]
    for prefix, key, lookup, names, wanted in lookups:
        if not wanted:
            continue
        if key not in examples.columns:
            raise ShopError(f"examples: missing column '{key}' for {prefix} context")
        ids = examples[key].astype("string")
        known = ids.notna()
        entity = (
            pd.DataFrame({key: ids[known].astype(str), "event_timestamp": when[known]})
            .drop_duplicates()
            .reset_index(drop=True)
        )
        kwargs = {"store": store} if store is not None else {}
        table = lookup(entity, names, **kwargs) if len(entity) else entity
        values = [c for c in table.columns if c not in (key, "event_timestamp")]
        table = table.rename(columns={c: c if c.startswith(f"{prefix}_") else f"{prefix}_{c}" for c in values})
        table[key] = table[key].astype(str)
        table["event_timestamp"] = pd.to_datetime(table["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
        renamed = [c if c.startswith(f"{prefix}_") else f"{prefix}_{c}" for c in values]
        left = pd.DataFrame(
            {
                key: ids.astype(object).where(known, None),
                "event_timestamp": when.astype("datetime64[ns, UTC]"),
            },
            index=examples.index,
        )
        merged = left.merge(table, on=[key, "event_timestamp"], how="left")
        for column in renamed:
            out[column] = merged[column].to_numpy()
        out[f"{prefix}_context_missing"] = merged[renamed].isna().all(axis=1).to_numpy() if renamed else True
        log.info(
            "%s context: %d feature(s), %d of %d rows without a snapshot",
            prefix,
            len(renamed),
            int(out[f"{prefix}_context_missing"].sum()),
            len(out),
        )
    return out
