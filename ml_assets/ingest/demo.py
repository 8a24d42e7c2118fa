"""Seed a source database with NannyML's bundled synthetic data, shaped by a contract.

A contract's ``demo:`` block names the nannyml loader returning ``(reference, analysis,
analysis_targets)`` and how its columns map onto the contract (``rename``). From it we build
the contract's two tables: the entity rows (reference + analysis, features and event time)
and the late-arriving labels (key, target, and an ``observed_at`` some random days after the
event). Nothing here names a dataset's columns: every name comes from the contract.

``rows=N`` resamples the demo rows with replacement to any size (new keys ``0..N-1``, in event
time order), generated chunk by chunk so ten million rows stay within bounded memory.
"""

from __future__ import annotations

import functools
import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import sqlalchemy as sa

from ml_assets.contracts.dtypes import SOURCE_DTYPES
from ml_assets.contracts.model import ColumnType, Contract, Table

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 500_000
# Python tuples cost ~10x the columnar bytes: convert and insert this many at a time.
SQLITE_BATCH_ROWS = 50_000

# SQLAlchemy's own text format for DateTime/Date on SQLite: always six fractional digits, so
# stored values compare lexicographically like the bound parameters SQLAlchemy renders.
SQLITE_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S.%6f"
SQLITE_DATE_FORMAT = "%Y-%m-%d"
PG_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S%.6f"

_SQL_TYPES: dict[ColumnType, Any] = {
    ColumnType.INT: sa.BigInteger,
    ColumnType.FLOAT: lambda: sa.Float(precision=53),
    ColumnType.BOOL: sa.Boolean,
    ColumnType.STRING: sa.Text,
    ColumnType.CATEGORY: sa.Text,
    ColumnType.DATETIME: lambda: sa.DateTime(timezone=False),
    ColumnType.DATE: sa.Date,
}

_POLARS_TYPES = SOURCE_DTYPES


class DemoError(ValueError):
    """A contract whose demo data cannot be built or seeded; the message says why."""


# --- SQL tables ----------------------------------------------------------------------------


def sql_table(contract_table: Table, name: str, metadata: sa.MetaData) -> sa.Table:
    """SQLAlchemy Core table for a contract table: typed columns, key, index on its time column.

    ``name`` may be ``schema.table``. The primary key is the entity's ``primary_key`` (the
    labels' ``key`` columns for a label table). Datetimes are naive (stored as UTC).
    """
    schema, _, bare = name.rpartition(".")
    key = list(contract_table.key)
    columns = [
        sa.Column(
            col_name,
            _SQL_TYPES[col.type](),
            primary_key=col_name in key,
            nullable=col.nullable and col_name not in key,
        )
        for col_name, col in contract_table.columns.items()
    ]
    time_col = contract_table.time_column
    return sa.Table(
        bare,
        metadata,
        *columns,
        sa.Index(f"ix_{bare}_{time_col}", time_col),
        schema=schema or None,
    )


# --- frames from nannyml -------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _nannyml_frames(loader: str) -> tuple[Any, Any, Any]:
    """The (reference, analysis, analysis_targets) pandas frames of one nannyml loader."""
    import ml_assets.settings  # noqa: F401  (telemetry off before nannyml is imported)

    started = time.perf_counter()
    import nannyml

    fn = getattr(nannyml, loader, None)
    if not callable(fn):
        raise DemoError(f"nannyml has no loader function {loader!r}")
    frames = fn()
    if not (isinstance(frames, tuple) and len(frames) == 3):
        raise DemoError(f"nannyml.{loader}() did not return (reference, analysis, targets)")
    log.debug("loaded nannyml.%s in %.1fs", loader, time.perf_counter() - started)
    return frames


def _loader_name(contract: Contract, quality: bool) -> str:
    demo = contract.demo
    if demo is None:
        raise DemoError(f"contract {contract.name!r} has no demo block: no demo data to build")
    if quality:
        if demo.quality_loader is None:
            raise DemoError(
                f"contract {contract.name!r} has no demo.quality_loader: "
                "no data-quality variant of its demo data"
            )
        return demo.quality_loader
    return demo.loader


def _to_contract_type(series: pl.Series, ctype: ColumnType, where: str) -> pl.Series:
    """Cast one source column to its contract type (datetimes to naive UTC microseconds)."""
    target = _POLARS_TYPES[ctype]
    if ctype in (ColumnType.DATETIME, ColumnType.DATE):
        if series.dtype == pl.String:
            series = series.str.to_datetime(time_unit="us", time_zone="UTC", strict=True)
        if isinstance(series.dtype, pl.Datetime):
            if series.dtype.time_zone is not None:
                series = series.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            series = series.dt.cast_time_unit("us")
        return series.cast(target)
    if ctype is ColumnType.INT and series.dtype.is_float():
        finite = series.drop_nulls().drop_nans()
        if (finite != finite.floor()).any():
            raise DemoError(f"{where}: holds non-whole numbers but the contract says int")
    if ctype in (ColumnType.STRING, ColumnType.CATEGORY) and series.dtype != pl.String:
        series = series.cast(pl.String)
    return series.cast(target, strict=True)


def _base_frame(contract: Contract, quality: bool) -> pl.DataFrame:
    """All demo rows: the entity columns plus the target, in contract types.

    Reference rows carry the target; analysis rows get it from analysis_targets on the key.
    """
    import pandas as pd

    loader = _loader_name(contract, quality)
    reference, analysis, targets = _nannyml_frames(loader)
    rename = dict(contract.demo.rename) if contract.demo else {}
    reference = reference.rename(columns=rename)
    analysis = analysis.rename(columns=rename)
    targets = targets.rename(columns=rename)

    entity = contract.entity
    key, target = list(entity.primary_key), contract.target
    wanted = [*entity.columns, target]
    for frame_name, frame, need in (
        ("reference", reference, wanted),
        ("analysis", analysis, list(entity.columns)),
        ("analysis_targets", targets, [*key, target]),
    ):
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise DemoError(
                f"contract {contract.name!r}: nannyml.{loader}() {frame_name} lacks columns "
                f"{missing} (after demo.rename {rename}); found {list(frame.columns)}"
            )
    if targets[key].duplicated().any():
        raise DemoError(f"nannyml.{loader}() analysis_targets repeats key values")
    analysis = analysis[list(entity.columns)].merge(
        targets[[*key, target]], on=key, how="left", validate="one_to_one"
    )
    combined = pd.concat([reference[wanted], analysis[wanted]], ignore_index=True)
    raw = pl.from_pandas(combined, nan_to_null=True)

    types = {c: col.type for c, col in entity.columns.items()}
    types[target] = contract.labels.columns[target].type
    frame = pl.DataFrame(
        [
            _to_contract_type(raw[c], types[c], f"{contract.name}: column {c!r}").alias(c)
            for c in wanted
        ]
    )
    dupes = frame.select(key).is_duplicated().sum()
    if dupes:
        raise DemoError(f"contract {contract.name!r}: demo data repeats primary key values")
    log.info("demo %s (%s): %d source rows", contract.name, loader, frame.height)
    return frame


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for (resampling, label delays), both from ``seed``."""
    sample_ss, delay_ss = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(sample_ss), np.random.default_rng(delay_ss)


def _split(contract: Contract, rows: pl.DataFrame, delay_rng: np.random.Generator) -> dict:
    """Entity and label frames for a chunk of base rows (entity columns + target)."""
    entity, labels = contract.entity, contract.labels
    demo = contract.demo
    assert demo is not None
    lo, hi = demo.label_delay_days
    # Drawn for every row before dropping unknown outcomes, so the stream does not depend on
    # where the nulls are (and consecutive chunks continue one reproducible sequence).
    delay_us = np.maximum((delay_rng.uniform(lo, hi, rows.height) * 86_400e6).astype(np.int64), 1)
    delay = pl.Series("delay", delay_us).cast(pl.Duration("us"))
    label_exprs: list[pl.Expr] = []
    key_map = dict(zip(labels.key_columns, entity.primary_key, strict=True))
    for col_name, col in labels.columns.items():
        if col_name in key_map:
            expr = pl.col(key_map[col_name])
        elif col_name == labels.observed_at:
            expr = pl.col(entity.event_time) + pl.lit(delay)
        elif col_name == contract.target:
            expr = pl.col(contract.target)
        else:
            raise DemoError(
                f"contract {contract.name!r}: labels column {col_name!r} is not the key, the "
                "target or observed_at, and the demo data has nothing to fill it with"
            )
        label_exprs.append(expr.cast(_POLARS_TYPES[col.type]).alias(col_name))
    label_frame = rows.select(label_exprs).filter(pl.col(contract.target).is_not_null())
    return {"entity": rows.select(list(entity.columns)), "labels": label_frame}


def iter_demo_frames(
    contract: Contract,
    quality: bool = False,
    rows: int | None = None,
    seed: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[dict[str, pl.DataFrame]]:
    """Yield ``{"entity", "labels"}`` polars frames chunk by chunk (at most ``chunk_rows``).

    ``rows=None`` gives nannyml's rows as they are. ``rows=N`` resamples them with replacement
    to N entity rows keyed ``0..N-1`` in event-time order, each keeping its sampled event time.
    Labels drop rows with no known outcome. The result for a ``seed`` does not depend on
    ``chunk_rows``.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be positive")
    if rows is not None and rows < 0:
        raise ValueError("rows must be zero or more")
    base = _base_frame(contract, quality)
    demo = contract.demo
    assert demo is not None
    lo, hi = demo.label_delay_days
    if not 0 <= lo <= hi:
        raise DemoError(f"contract {contract.name!r}: demo.label_delay_days needs 0 <= lo <= hi")
    sample_rng, delay_rng = _rngs(seed)

    if rows is None:
        for start in range(0, base.height, chunk_rows):
            yield _split(contract, base.slice(start, chunk_rows), delay_rng)
        return

    key = contract.entity.primary_key
    if len(key) != 1 or contract.entity.columns[key[0]].type is not ColumnType.INT:
        raise DemoError(
            f"contract {contract.name!r}: rows= resampling makes new keys for a single int "
            f"primary key; this one is {key}"
        )
    if base.height == 0:
        raise DemoError(f"contract {contract.name!r}: the demo data has no rows to resample")
    # Sampling N rows with replacement = how often each row is drawn (a multinomial); laying
    # the copies out in source order keeps event times (and so the new keys) ordered in time.
    base = base.sort(contract.entity.event_time, maintain_order=True)
    counts = sample_rng.multinomial(rows, np.full(base.height, 1.0 / base.height))
    ends = np.cumsum(counts)
    for start in range(0, rows, chunk_rows):
        stop = min(start + chunk_rows, rows)
        source_rows = np.searchsorted(ends, np.arange(start, stop), side="right")
        chunk = base[source_rows].with_columns(
            pl.arange(start, stop, dtype=pl.Int64, eager=True).alias(key[0])
        )
        yield _split(contract, chunk, delay_rng)


def demo_frames(
    contract: Contract,
    quality: bool = False,
    rows: int | None = None,
    seed: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> dict[str, pl.DataFrame]:
    """The demo ``{"entity", "labels"}`` frames in full (see ``iter_demo_frames``)."""
    chunks = list(
        iter_demo_frames(contract, quality=quality, rows=rows, seed=seed, chunk_rows=chunk_rows)
    )
    if not chunks:
        return {
            role: pl.DataFrame(
                schema={c: _POLARS_TYPES[col.type] for c, col in table.columns.items()}
            )
            for role, table in contract.tables.items()
        }
    return {role: pl.concat([c[role] for c in chunks], rechunk=True) for role in chunks[0]}


# --- writing to a database -----------------------------------------------------------------


def _sqlite_rows(frame: pl.DataFrame, table: Table) -> list[tuple]:
    """Row tuples whose datetimes are already SQLAlchemy's SQLite text format."""
    exprs = []
    for name, col in table.columns.items():
        if col.type is ColumnType.DATETIME:
            exprs.append(pl.col(name).dt.strftime(SQLITE_DATETIME_FORMAT))
        elif col.type is ColumnType.DATE:
            exprs.append(pl.col(name).dt.strftime(SQLITE_DATE_FORMAT))
        elif col.type is ColumnType.BOOL:
            exprs.append(pl.col(name).cast(pl.Int8))
        else:
            exprs.append(pl.col(name))
    return frame.select(exprs).rows()


def _insert_sqlite(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame, spec: Table) -> None:
    """executemany; rows become Python tuples a slice at a time (the caller's transaction)."""
    sql = str(table.insert().compile(dialect=conn.dialect))
    for start in range(0, frame.height, SQLITE_BATCH_ROWS):
        conn.exec_driver_sql(sql, _sqlite_rows(frame.slice(start, SQLITE_BATCH_ROWS), spec))


def _copy_postgres(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame) -> None:
    """COPY a frame in as CSV (psycopg 3); strings quoted so only bare ``\\N`` is NULL.

    Runs on the DBAPI connection inside the caller's SQLAlchemy transaction (which commits it).
    """
    preparer = conn.dialect.identifier_preparer
    target = preparer.format_table(table)
    cols = ", ".join(preparer.quote(c.name) for c in table.columns)
    buffer = io.BytesIO()
    frame.select([c.name for c in table.columns]).write_csv(
        buffer,
        include_header=False,
        null_value="\\N",
        quote_style="non_numeric",
        datetime_format=PG_DATETIME_FORMAT,
        date_format="%Y-%m-%d",
    )
    dbapi = conn.connection.driver_connection
    with (
        dbapi.cursor() as cursor,
        cursor.copy(f"COPY {target} ({cols}) FROM STDIN WITH (FORMAT csv, NULL '\\N')") as copy,
    ):
        view = buffer.getbuffer()
        step = 8 << 20
        for offset in range(0, len(view), step):
            copy.write(view[offset : offset + step])
        del view


def _insert_generic(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame) -> None:
    conn.execute(table.insert(), frame.to_dicts())


def seed_demo(
    url: str,
    contract: Contract,
    *,
    quality: bool = False,
    rows: int | None = None,
    seed: int = 0,
    replace: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> dict[str, int]:
    """Create the contract's entity and labels tables at ``url`` and fill them with demo rows.

    With ``replace`` the tables are dropped and recreated first; otherwise missing tables are
    created and rows appended. PostgreSQL loads with COPY, SQLite with one executemany
    transaction per chunk. Returns the number of rows written per table name.
    """
    _loader_name(contract, quality)  # fail early on a contract with no (quality) demo data
    names: dict[str, str] = {}
    for role, spec in contract.tables.items():
        if spec.table is None:
            raise DemoError(
                f"contract {contract.name!r}: {role} is a query, not a table; only tables can "
                "be seeded with demo data"
            )
        names[role] = spec.table

    metadata = sa.MetaData()
    tables = {role: sql_table(contract.tables[role], names[role], metadata) for role in names}
    counts = dict.fromkeys(names.values(), 0)
    engine = sa.create_engine(url)
    dialect = engine.dialect.name
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            if dialect == "postgresql":
                for schema in {t.schema for t in tables.values() if t.schema}:
                    conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
            if replace:
                metadata.drop_all(conn, checkfirst=True)
            metadata.create_all(conn, checkfirst=True)
            conn.commit()
            if dialect == "sqlite":
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
                conn.commit()
            for chunk in iter_demo_frames(
                contract, quality=quality, rows=rows, seed=seed, chunk_rows=chunk_rows
            ):
                with conn.begin():  # one transaction per chunk
                    for role, frame in chunk.items():
                        if frame.height == 0:
                            continue
                        if dialect == "sqlite":
                            _insert_sqlite(conn, tables[role], frame, contract.tables[role])
                        elif dialect == "postgresql" and engine.driver == "psycopg":
                            _copy_postgres(conn, tables[role], frame)
                        else:
                            _insert_generic(conn, tables[role], frame)
                        counts[names[role]] += frame.height
                log.debug("seeded %s: %s", contract.name, counts)
    finally:
        engine.dispose()
    log.info(
        "seeded %s into %s in %.1fs: %s",
        contract.name,
        engine.url.render_as_string(hide_password=True),
        time.perf_counter() - started,
        counts,
    )
    return counts


def seed_all(url: str, contracts: dict[str, Contract], **kw: Any) -> dict[str, dict[str, int]]:
    """Seed every contract that has a demo block; row counts by contract, then table."""
    seeded: dict[str, dict[str, int]] = {}
    for name, contract in contracts.items():
        if contract.demo is None:
            log.info("contract %s has no demo block: not seeded", name)
            continue
        seeded[name] = seed_demo(url, contract, **kw)
    return seeded
