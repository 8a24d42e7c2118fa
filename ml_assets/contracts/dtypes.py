"""The polars type of each contract column type, in one place.

Validated data (and everything after it) holds datetimes in UTC; sources hand over naive UTC
datetimes (that is how the demo seeds them and how raw keeps them).
"""

import polars as pl

from ml_assets.contracts.model import Column, ColumnType, StoredAs

VALIDATED_DTYPES: dict[ColumnType, pl.DataType] = {
    ColumnType.INT: pl.Int64(),
    ColumnType.FLOAT: pl.Float64(),
    ColumnType.BOOL: pl.Boolean(),
    ColumnType.STRING: pl.String(),
    ColumnType.CATEGORY: pl.String(),
    ColumnType.DATETIME: pl.Datetime("us", "UTC"),
    ColumnType.DATE: pl.Date(),
}

SOURCE_DTYPES: dict[ColumnType, pl.DataType] = {
    **VALIDATED_DTYPES,
    ColumnType.DATETIME: pl.Datetime("us"),
}

STORED_DTYPES: dict[StoredAs, pl.DataType] = {
    StoredAs.DATE: pl.Date(),
    StoredAs.YEAR: pl.Int64(),
    StoredAs.YEAR_MONTH: pl.Int64(),
}
"""What a source hands over for a ``datetime`` column declared ``stored_as``."""


def source_dtype(column: Column) -> pl.DataType:
    """The polars type a column's values have in the source (and in raw)."""
    if column.stored_as is not None:
        return STORED_DTYPES[column.stored_as]
    return SOURCE_DTYPES[column.type]
