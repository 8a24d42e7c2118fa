"""Reading a contract's source tables from any SQLAlchemy database, one time window at a time.

Rows are fetched with bound parameters (never string-built SQL) and streamed in chunks, so a
large partition never has to fit in memory. Values are kept as the database returns them: raw
is a faithful copy of the source, and typing them is the validation stage's job.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from functools import cache
from operator import itemgetter

import polars as pl
import sqlalchemy as sa

from ml_assets.contracts.model import ColumnType, Table

log = logging.getLogger(__name__)

# What a column is expected to hold in raw; a chunk whose values don't fit falls back to text.
RAW_TYPES: dict[ColumnType, pl.DataType] = {
    ColumnType.INT: pl.Int64(),
    ColumnType.FLOAT: pl.Float64(),
    ColumnType.BOOL: pl.Boolean(),
    ColumnType.STRING: pl.String(),
    ColumnType.CATEGORY: pl.String(),
    ColumnType.DATETIME: pl.Datetime("us"),
    ColumnType.DATE: pl.Date(),
}


@cache
def engine_for(url: str) -> sa.Engine:
    """One pooled engine per URL for the life of the process."""
    return sa.create_engine(url, pool_pre_ping=True)


def raw_schema(table: Table) -> dict[str, pl.DataType]:
    """The schema of an empty raw partition: the contract's columns at their expected types."""
    return {name: RAW_TYPES[col.type] for name, col in table.columns.items()}


def window_query(table: Table) -> sa.TextClause:
    """SELECT every column of a table (or the contract's query) within [start, end).

    The time bounds are bound parameters typed as DateTime, so each driver formats them the
    way it stores timestamps (SQLite: ISO text, PostgreSQL: timestamp).
    """
    quote = sa.sql.quoted_name
    time_col = sa.column(quote(table.time_column, quote=True))
    if table.table is not None:
        schema, _, name = table.table.rpartition(".")
        source = sa.table(name, schema=schema or None)
        select = sa.select(sa.text("*")).select_from(source)
    else:
        select = sa.select(sa.text("*")).select_from(sa.text(f"({table.query}) AS contract_query"))
    stmt = select.where(
        time_col >= sa.bindparam("start", type_=sa.DateTime()),
        time_col < sa.bindparam("end", type_=sa.DateTime()),
    )
    return stmt  # type: ignore[return-value]


def _column(name: str, values: list, expected: pl.DataType) -> pl.Series:
    try:
        return pl.Series(name, values, dtype=expected, strict=True)
    except (TypeError, OverflowError, pl.exceptions.PolarsError):
        pass
    try:
        return pl.Series(name, values, strict=True)
    except (TypeError, OverflowError, pl.exceptions.PolarsError):
        # Mixed types in one column (SQLite allows it): keep every value, as text.
        return pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String)


def rows_to_frame(
    names: list[str], rows: Sequence[Sequence], expected: dict[str, pl.DataType]
) -> pl.DataFrame:
    """Build a chunk column by column, at the expected type where every value fits it.

    ``rows`` are tuples or SQLAlchemy ``Row`` objects, all ``len(names)`` wide.
    """
    # One pass per column (itemgetter in C) is ~3x faster than zip(*rows) for wide chunks,
    # which walks all the rows' iterators in lockstep.
    return pl.DataFrame(
        [
            _column(n, list(map(itemgetter(i), rows)), expected.get(n, pl.String()))
            for i, n in enumerate(names)
        ]
        if rows
        else [_column(n, [], expected.get(n, pl.String())) for n in names]
    )


# How many converted chunks may wait for the consumer while the next one is fetched.
PREFETCH_CHUNKS = 1


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def read_window(
    engine: sa.Engine,
    table: Table,
    start: dt.datetime,
    end: dt.datetime,
    chunk_rows: int = 100_000,
) -> Iterator[pl.DataFrame]:
    """Stream the rows of ``table`` whose time column is in [start, end), ``chunk_rows`` at a time.

    ``start`` and ``end`` are naive UTC datetimes, the way the sources store event times.

    A worker thread fetches and converts the next chunk while the caller handles this one
    (writes it, say), so the database, the driver and the parquet writer overlap. At most
    ``PREFETCH_CHUNKS`` converted chunks wait for the caller: memory stays bounded. Closing the
    iterator early stops the worker and releases its connection.
    """
    expected = raw_schema(table)
    stmt = window_query(table)
    handoff: queue.Queue = queue.Queue(maxsize=PREFETCH_CHUNKS)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
                    stmt, {"start": start, "end": end}
                )
                names = list(result.keys())
                for part in result.partitions(chunk_rows):
                    frame = rows_to_frame(names, part, expected)
                    del part
                    if not put(frame):
                        return
        except BaseException as exc:
            put(_Failed(exc))
            return
        put(_DONE)

    worker = threading.Thread(target=produce, name=f"read_window {table.table}", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


def to_naive_utc(ts: dt.datetime) -> dt.datetime:
    """Partition bounds come tz-aware from Dagster; sources hold naive UTC."""
    if ts.tzinfo is None:
        return ts
    return ts.astimezone(dt.UTC).replace(tzinfo=None)
