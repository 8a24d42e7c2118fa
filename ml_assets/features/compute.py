"""Feature computation: plain polars functions shared by the offline and the online path.

* :func:`transform_rows` evaluates row and request features of a frame of entity rows (offline:
  validated rows; online: the request records, stamped with the request time).
* :func:`compute_features` puts them together with the trailing-window aggregates
  (:func:`~ml_assets.features.windows.window_aggregates`) for entity rows: the feature table.
* :func:`compute_training_set`: the training set straight from entity rows and labels (what
  :func:`build_training_set` gives from the feature table), computing features only for the
  labelled rows of the window, a chunk of rows at a time, so it needs little memory besides
  the training set itself (no feature table).

The window machinery and the online store's snapshot are :mod:`ml_assets.features.windows`;
training sets and fingerprints are :mod:`ml_assets.features.training_set`. Their names are
imported here too, so ``from ml_assets.features.compute import ...`` keeps working for them.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml_assets.contracts.model import ColumnType
from ml_assets.features.declarations import (
    DatePart,
    DatePartOf,
    Log1p,
    MapValues,
    Passthrough,
    Ratio,
    RequestDatePart,
    Source,
)
from ml_assets.features.spec import COLUMN_DTYPES, FeatureSpec
from ml_assets.features.training_set import (
    assemble,
    build_training_set,
    fingerprint,
    gather_chunks,
    labelled_rows,
    target_stats,
)
from ml_assets.features.windows import (
    CHUNK_ROWS,
    ROW,
    TIME,
    UTC_US,
    aggregate_snapshot,
    code_groups,
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


def _inputs(
    spec: FeatureSpec, f: Passthrough | MapValues | Ratio | Log1p | DatePartOf | RequestDatePart
) -> list[str]:
    """Entity columns one row or request feature reads."""
    if isinstance(f, Ratio):
        return [f.numerator, f.denominator]
    if isinstance(f, DatePartOf | RequestDatePart):
        return [getattr(f, "column", None) or spec.event_time]
    return [f.column]


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


def compute_training_set(
    spec: FeatureSpec,
    rows: pl.DataFrame | pl.LazyFrame,
    labels: pl.DataFrame | pl.LazyFrame,
    events: dict[Source, pl.DataFrame | pl.LazyFrame | None] | None,
    cutoff: dt.datetime,
    window: dt.timedelta,
    chunk_rows: int = CHUNK_ROWS,
) -> pl.DataFrame:
    """The training set straight from entity rows: exactly
    ``build_training_set(spec, compute_features(spec, rows, events), labels, cutoff, window)``,
    without the feature table.

    Features are computed only for the rows that make it into the training set (in the window,
    labelled at the cutoff): the labelled rows are found from the rows' key and event time,
    then the aggregates are computed at those rows' points (while the output is still small:
    they need the most memory), then the row and request features, ``chunk_rows`` rows at a
    time, each chunk with one read of just the input columns of its range of rows and one pass
    of every row expression (lazy ``rows``, scans, are read a range at a time; their row order
    must not change between reads, as a scan's does not). Nothing as wide as the feature table
    or the entity rows is built besides the output; lazy ``rows`` of at most ``chunk_rows`` rows
    are read once, their needed columns only. Any chunk size gives exactly the same frame.

    ``events`` None: the events of the rows and labels given (:func:`entity_events` of
    ``rows``, :func:`label_events` of ``labels`` and ``rows``), which then need hold every row
    and label the aggregates' windows reach; labels that fit in one chunk are read once too,
    for the labelled rows and the label events both.
    """
    base = [*spec.key, spec.event_time]
    features = [*spec.row, *spec.request]
    inputs = list(dict.fromkeys([*base, *(c for f in features for c in _inputs(spec, f))]))
    derive = events is None and bool(spec.aggregates)
    # A table that fits in one chunk is read once (just the columns needed), not once per step.
    if _fits(rows, chunk_rows):
        values = [a.column for a in spec.aggregates if a.source is Source.ENTITY and a.column]
        rows = rows.select(*dict.fromkeys([*inputs, *spec.group_columns, *values])).collect()
    if derive and _fits(labels, chunk_rows):
        lab = spec.contract.labels
        values = [a.column for a in spec.aggregates if a.source is Source.LABELS and a.column]
        columns = [*lab.key_columns, lab.observed_at, spec.contract.target, *values]
        labels = labels.select(*dict.fromkeys(columns)).collect()
    # In memory, text groups are coded once for the events and the points (the row features
    # read the text itself).
    coded = code_groups(spec, rows) if isinstance(rows, pl.DataFrame) else rows
    if derive:
        sources = {a.source for a in spec.aggregates}
        events = {
            Source.ENTITY: entity_events(spec, coded) if Source.ENTITY in sources else None,
            Source.LABELS: label_events(spec, labels, coded) if Source.LABELS in sources else None,
        }
    picked = labelled_rows(spec, rows, labels, cutoff, window)
    position = picked.get_column(ROW)
    out: dict[str, pl.Series] = {}
    if spec.aggregates:
        columns = [*spec.group_columns, spec.event_time]
        queries = assemble(gather_chunks(coded, position, columns, chunk_rows))
        queries = queries.rename({spec.event_time: TIME})
        out.update(window_aggregates(spec, queries, events or {}, chunk_rows=chunk_rows).to_dict())
        del queries
    exprs = row_expressions(spec)
    parts = assemble(
        pl.concat([chunk.select(base), chunk.select(exprs)], how="horizontal")
        for chunk in gather_chunks(rows, position, inputs, chunk_rows)
    )
    out.update(parts.drop(base).to_dict())
    target = picked.get_column(spec.contract.target)
    return pl.DataFrame([*parts.select(base).get_columns(), *(out[n] for n in spec.names), target])


def _fits(frame: pl.DataFrame | pl.LazyFrame, chunk_rows: int) -> bool:
    """A lazy frame of at most ``chunk_rows`` rows (a scan counts them from its metadata)."""
    return isinstance(frame, pl.LazyFrame) and frame.select(pl.len()).collect().item() <= chunk_rows


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
    "compute_training_set",
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
