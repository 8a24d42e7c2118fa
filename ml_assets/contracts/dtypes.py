"""The polars type of each contract column type, in one place.

Validated data (and everything after it) holds datetimes in UTC; sources hand over naive UTC
datetimes (that is how the demo seeds them and how raw keeps them).
"""

import polars as pl

from ml_assets.contracts.model import ColumnType

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
