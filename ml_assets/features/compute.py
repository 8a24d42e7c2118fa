"""Feature computation: plain polars functions shared by the offline and the online path.

* :func:`transform_rows` evaluates row and request features of a frame of entity rows (offline:
  validated rows; online: the request records, stamped with the request time).
* :func:`compute_features` puts them together with the trailing-window aggregates
  (:func:`~ml_assets.features.windows.window_aggregates`) for entity rows: the feature table.

The window machinery and the online store's snapshot are :mod:`ml_assets.features.windows`;
training sets and fingerprints are :mod:`ml_assets.features.training_set`. Their names are
imported here too, so ``from ml_assets.features.compute import ...`` keeps working for them.
"""

from __future__ import annotations

import polars as pl

from ml_assets.contracts.model import ColumnType
from ml_assets.features.declarations import (
    DatePart,
    DatePartOf,
    Log1p,
    MapValues,
    Passthrough,
    Ratio,
    Source,
)
from ml_assets.features.spec import COLUMN_DTYPES, FeatureSpec
from ml_assets.features.training_set import build_training_set, fingerprint, target_stats
from ml_assets.features.windows import (
    ROW,
    TIME,
    UTC_US,
    aggregate_snapshot,
    entity_events,
    from_group_text,
    group_text,
    label_events,
    to_utc,
    window_aggregates,
)

# --- row and request features ----------------------------------------------------------------


def _date_part(expr: pl.Expr, part: DatePart, tz: str) -> pl.Expr:
    local = expr.dt.convert_time_zone(tz) if tz != "UTC" else expr
    if part is DatePart.IS_WEEKEND:
        return local.dt.weekday() >= 6
    fn = {
        DatePart.HOUR: local.dt.hour,
        DatePart.MINUTE: local.dt.minute,
        DatePart.WEEKDAY: local.dt.weekday,
        DatePart.DAY: local.dt.day,
        DatePart.MONTH: local.dt.month,
        DatePart.YEAR: local.dt.year,
        DatePart.DAY_OF_YEAR: local.dt.ordinal_day,
        DatePart.WEEK: local.dt.week,
    }[part]
    return fn().cast(pl.Int64)


def row_expressions(spec: FeatureSpec) -> list[pl.Expr]:
    """One polars expression per row and request feature, named after it."""
    dtypes = spec.dtypes()
    tz = spec.timezone
    exprs: list[pl.Expr] = []
    for f in spec.row:
        if isinstance(f, Passthrough):
            e = pl.col(f.column)
        elif isinstance(f, MapValues):
            keys = list(f.mapping)
            e = pl.col(f.column).replace_strict(
                keys,
                [f.mapping[k] for k in keys],
                default=f.default,
                return_dtype=dtypes[f.name],
            )
        elif isinstance(f, Ratio):
            num = pl.col(f.numerator).cast(pl.Float64)
            den = pl.col(f.denominator).cast(pl.Float64)
            e = pl.when(den != 0).then(num / den)
        elif isinstance(f, Log1p):
            x = pl.col(f.column).cast(pl.Float64)
            e = pl.when(x > -1).then(x.log1p())
        elif isinstance(f, DatePartOf):
            col = pl.col(f.column or spec.event_time)
            if spec.column_type(f.column or spec.event_time) is ColumnType.DATE:
                col = col.cast(pl.Datetime("us")).dt.replace_time_zone(tz)
            e = _date_part(col, f.part, tz)
        else:  # pragma: no cover - the spec's union is closed
            raise TypeError(f"unknown row feature {f!r}")
        exprs.append(e.cast(dtypes[f.name]).alias(f.name))
    # Request time = event time offline; the online path stamps the event time with it.
    for r in spec.request:
        exprs.append(_date_part(pl.col(spec.event_time), r.part, tz).alias(r.name))
    return exprs


def transform_rows(spec: FeatureSpec, rows: pl.DataFrame) -> pl.DataFrame:
    """Row and request features of typed entity rows, one output row per input row."""
    return rows.select(row_expressions(spec))


# --- offline features ------------------------------------------------------------------------


def compute_features(
    spec: FeatureSpec,
    rows: pl.DataFrame | pl.LazyFrame,
    events: dict[Source, pl.DataFrame | pl.LazyFrame | None] | None = None,
) -> pl.DataFrame:
    """Features of entity rows as of each row's event time: key, event time, every feature.

    ``rows`` are typed entity rows (validated); ``events`` the entity and label events covering
    at least [earliest row time - longest window, latest row time).
    """
    rows = rows.lazy().collect().rechunk()
    base = rows.select(*spec.key, spec.event_time)
    parts = [base, transform_rows(spec, rows)]
    if spec.aggregates:
        queries = rows.select(*spec.group_columns, pl.col(spec.event_time).alias(TIME))
        parts.append(window_aggregates(spec, queries, events or {}))
    out = pl.concat(parts, how="horizontal")
    return out.select(*spec.key, spec.event_time, *spec.names)


def feature_schema(spec: FeatureSpec) -> dict[str, pl.DataType]:
    """Columns of the feature table: key, event time, features."""
    ent = spec.contract.entity
    cols = {k: COLUMN_DTYPES[ent.columns[k].type] for k in (*spec.key, spec.event_time)}
    return {**cols, **spec.dtypes()}


__all__ = [
    "ROW",
    "TIME",
    "UTC_US",
    "aggregate_snapshot",
    "build_training_set",
    "compute_features",
    "entity_events",
    "feature_schema",
    "fingerprint",
    "from_group_text",
    "group_text",
    "label_events",
    "row_expressions",
    "target_stats",
    "to_utc",
    "transform_rows",
    "window_aggregates",
]
