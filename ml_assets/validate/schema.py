"""From a contract table to typed polars columns and a pandera (polars backend) schema."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pandera.polars as pa
import polars as pl

from ml_assets.contracts.dtypes import VALIDATED_DTYPES
from ml_assets.contracts.model import Column, ColumnType, StoredAs, Table

TYPED = VALIDATED_DTYPES

# Timestamp text the sources hand us: ISO 8601 with a space or a T, with or without fractions,
# with or without an offset. Aware values convert to UTC; naive ones are read in the contract's
# timezone.
_AWARE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%:z", "%Y-%m-%d %H:%M%:z")
_NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def _stored_time(col: pl.Expr, unit: StoredAs, source: pl.DataType, tz: str) -> pl.Expr:
    """The first instant (in ``tz``, as UTC) of the period a stored date, year or ``yyyymm``
    names; null where the value names none (the caller quarantines it as wrong-typed)."""
    if unit is StoredAs.DATE:
        day = (
            col.dt.date()
            if isinstance(source, pl.Datetime | pl.Date)
            else col.cast(pl.String).str.strip_chars().str.to_date("%Y-%m-%d", strict=False)
        )
        local = day.cast(pl.Datetime("us"))
    else:
        number = col if source.is_integer() else col.cast(pl.String).str.strip_chars()
        number = number.cast(pl.Int64, strict=False)
        if unit is StoredAs.YEAR:
            year, month = number, pl.lit(1, pl.Int64)
        else:
            year, month = number // 100, number % 100
        ok = year.is_between(1, 9999) & month.is_between(1, 12)
        local = pl.when(ok).then(pl.datetime(year, month, 1, time_unit="us"))
    return local.dt.replace_time_zone(
        tz, ambiguous="earliest", non_existent="null"
    ).dt.convert_time_zone("UTC")


def expected_text(column: Column) -> str:
    """What a column's values must be, for a wrong-typed row's reason."""
    if column.stored_as is StoredAs.YEAR:
        return "datetime stored as an integer year"
    if column.stored_as is StoredAs.YEAR_MONTH:
        return "datetime stored as an integer yyyymm"
    if column.stored_as is StoredAs.DATE:
        return "datetime stored as a date"
    return column.type.value


def typed_dtype(column: Column) -> pl.DataType:
    return TYPED[column.type]


def _parse_datetime_text(expr: pl.Expr, tz: str) -> pl.Expr:
    text = expr.str.strip_chars().str.replace("T", " ", literal=True).str.replace(r"Z$", "+00:00")
    aware = [
        text.str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC")
        for f in _AWARE_FORMATS
    ]
    naive = [
        text.str.to_datetime(f, strict=False, time_unit="us")
        .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        for f in _NAIVE_FORMATS
    ]
    return pl.coalesce(*aware, *naive)


def parse_datetimes(values: pl.Series, tz: str) -> pl.Series:
    """Parse timestamp text to UTC; the common ISO shape first, every other shape only if needed."""
    fast = values.str.to_datetime(_NAIVE_FORMATS[0], strict=False, time_unit="us")
    if fast.null_count() == values.null_count():
        return fast.dt.replace_time_zone(
            tz, ambiguous="earliest", non_existent="null"
        ).dt.convert_time_zone("UTC")
    return pl.select(_parse_datetime_text(pl.lit(values), tz).alias(values.name)).to_series()


def cast_expr(name: str, column: Column, source: pl.DataType, tz: str) -> pl.Expr:
    """An expression turning a raw column of dtype ``source`` into the contract's type.

    Values that cannot be converted become null; the caller compares with the raw nulls to tell
    a wrong-typed value from a missing one.
    """
    col = pl.col(name)
    target = TYPED[column.type]
    if source == target:
        return col
    kind = column.type
    if kind is ColumnType.DATETIME and column.stored_as is not None:
        return _stored_time(col, column.stored_as, source, tz)
    if kind is ColumnType.DATETIME:
        if isinstance(source, pl.Datetime):
            if source.time_zone is None:
                col = col.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
            return col.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        if isinstance(source, pl.Date):
            return col.cast(pl.Datetime("us")).dt.replace_time_zone(tz).dt.convert_time_zone("UTC")
        return _parse_datetime_text(col.cast(pl.String), tz)
    if kind is ColumnType.DATE:
        if isinstance(source, pl.Datetime):
            return col.dt.date()
        return col.cast(pl.String).str.strip_chars().str.to_date("%Y-%m-%d", strict=False)
    if kind is ColumnType.BOOL:
        if source.is_integer() or source.is_float():
            return pl.when(col == 1).then(True).when(col == 0).then(False).otherwise(None)
        text = col.cast(pl.String).str.strip_chars().str.to_lowercase()
        return (
            pl.when(text.is_in(["true", "t", "1", "yes"]))
            .then(True)
            .when(text.is_in(["false", "f", "0", "no"]))
            .then(False)
            .otherwise(None)
        )
    if kind is ColumnType.INT:
        if source.is_float():
            # 3.0 is an int; 3.5 is not.
            return (
                pl.when(col == col.round(0)).then(col.cast(pl.Int64, strict=False)).otherwise(None)
            )
        if source == pl.String:
            text = col.str.strip_chars()
            as_int = text.cast(pl.Int64, strict=False)
            as_float = text.cast(pl.Float64, strict=False)
            whole = pl.when(as_float == as_float.round(0)).then(
                as_float.cast(pl.Int64, strict=False)
            )
            return pl.coalesce(as_int, whole)
        return col.cast(pl.Int64, strict=False)
    if kind is ColumnType.FLOAT:
        if source == pl.String:
            return col.str.strip_chars().cast(pl.Float64, strict=False)
        return col.cast(pl.Float64, strict=False)
    # string / category: anything has a text form.
    return col.cast(pl.String)


def pandera_schema(table: Table, name: str = "") -> pa.DataFrameSchema:
    """The pandera schema of a table's validated rows, generated from its contract."""
    columns = {}
    for col_name, col in table.columns.items():
        checks = []
        if col.min is not None:
            checks.append(pa.Check.ge(col.min))
        if col.max is not None:
            checks.append(pa.Check.le(col.max))
        if col.allowed is not None:
            checks.append(pa.Check.isin(col.allowed))
        if col.type is ColumnType.FLOAT:
            checks.append(
                pa.Check(
                    lambda data: data.lazyframe.select(pl.col(data.key).is_finite()),
                    name="finite",
                    error="not a finite number",
                )
            )
        columns[col_name] = pa.Column(
            TYPED[col.type], checks=checks, nullable=col.nullable, description=col.description
        )
    unique = list(table.key) if _is_keyed(table) else None
    return pa.DataFrameSchema(columns, strict=True, unique=unique, name=name or None)


def _is_keyed(table: Table) -> bool:
    # Entity rows are unique per primary key; a label table is keyed the same way (one outcome
    # per entity), so both get the uniqueness rule.
    return bool(table.key)


def timezone_of(tz: str) -> str:
    """Validate a timezone name early (a bad one would otherwise fail deep in polars)."""
    ZoneInfo(tz)
    return tz
