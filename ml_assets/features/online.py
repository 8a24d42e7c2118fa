"""The online feature path: request records -> the features the model sees, as offline.

:func:`online_features` is the serving path: request records typed like validated entity rows
(:func:`request_frame`), the same row transforms as offline, the aggregates looked up in the
online store (:func:`lookup_aggregates`) and the request-time features. No Dagster here, so the
service imports it cheaply.

The store's layout and writer are :mod:`ml_assets.features.online_store`, its client
:mod:`ml_assets.features.online_client`; their names are imported here too, so
``from ml_assets.features.online import ...`` keeps working for them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from ml_assets.features.compute import transform_rows
from ml_assets.features.online_client import OnlineClient, OnlineLookup
from ml_assets.features.online_store import (
    META_TABLE,
    known_groups,
    read_table,
    store_columns,
    table_name,
    write_snapshot,
)
from ml_assets.features.spec import COLUMN_DTYPES, FeatureSpec
from ml_assets.features.windows import group_text, to_utc


def request_frame(
    spec: FeatureSpec,
    records: Sequence[Mapping[str, Any]] | pl.DataFrame,
    request_time: dt.datetime | None = None,
) -> pl.DataFrame:
    """Request records typed like validated entity rows, the event time set to the request time.

    The request time is ``request_time`` when given, else each record's event-time field, else
    now. Columns the features need must be present; key columns are kept when given.
    """
    frame = (
        records
        if isinstance(records, pl.DataFrame)
        else pl.DataFrame(list(records), infer_schema_length=None)
    )
    ent = spec.contract.entity
    need = spec.request_inputs()
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise ValueError(f"{spec.dataset}: request records lack {missing} that features need")
    cols: list[pl.Expr] = []
    for c in [*spec.key, *need]:
        if c not in frame.columns or c == spec.event_time:
            continue
        cols.append(_typed(frame, c, COLUMN_DTYPES[ent.columns[c].type]))
    if request_time is not None:
        when = pl.lit(to_utc(request_time), COLUMN_DTYPES[ent.columns[spec.event_time].type])
    elif spec.event_time in frame.columns:
        when = _typed(frame, spec.event_time, pl.Datetime("us", "UTC"))
    else:
        when = pl.lit(dt.datetime.now(dt.UTC), pl.Datetime("us", "UTC"))
    return frame.select(*cols, when.alias(spec.event_time))


def _typed(frame: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Expr:
    col, have = pl.col(name), frame.schema[name]
    if isinstance(dtype, pl.Datetime):
        if have == pl.String:
            col = col.str.to_datetime(time_unit="us", time_zone="UTC")
        elif isinstance(have, pl.Datetime) and have.time_zone is None:
            col = col.dt.replace_time_zone("UTC")
        elif isinstance(have, pl.Datetime):
            col = col.dt.convert_time_zone("UTC")
        return col.dt.cast_time_unit("us").alias(name)
    if have == pl.Null:
        return pl.lit(None, dtype).alias(name)
    return col.cast(dtype, strict=True).alias(name)


def lookup_aggregates(spec: FeatureSpec, frame: pl.DataFrame, store: OnlineLookup) -> pl.DataFrame:
    """The aggregates of each request row from the store, one query for the batch."""
    groups = spec.group_columns
    keys = frame.select([group_text(frame.get_column(g)).alias(g) for g in groups]).to_dicts()
    got = store.get(spec.dataset, keys)
    dtypes = spec.dtypes()
    return got.select([pl.col(a.name).cast(dtypes[a.name]) for a in spec.aggregates])


def online_features(
    spec: FeatureSpec,
    records: Sequence[Mapping[str, Any]] | pl.DataFrame,
    store: OnlineLookup | None,
    request_time: dt.datetime | None = None,
) -> pl.DataFrame:
    """Features of a batch of serving requests: what the model sees online.

    The same row transforms as offline (:func:`~ml_assets.features.compute.transform_rows`) on
    the records typed like validated rows with the event time set to the request time, the
    aggregates from the online store (as of its last snapshot), and the request-time features.
    Returns key columns (when the records carry them), the event (request) time and every
    feature in the order of the offline feature table.
    """
    frame = request_frame(spec, records, request_time)
    parts = [frame.select([k for k in spec.key if k in frame.columns] + [spec.event_time])]
    parts.append(transform_rows(spec, frame))
    if spec.aggregates:
        if store is None:
            raise ValueError(f"{spec.dataset} has aggregate features: an online store is needed")
        parts.append(lookup_aggregates(spec, frame, store))
    out = pl.concat(parts, how="horizontal")
    return out.select([c for c in out.columns if c not in spec.names] + spec.names)


__all__ = [
    "META_TABLE",
    "OnlineClient",
    "OnlineLookup",
    "known_groups",
    "lookup_aggregates",
    "online_features",
    "read_table",
    "request_frame",
    "store_columns",
    "table_name",
    "write_snapshot",
]
