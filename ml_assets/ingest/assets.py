"""Raw assets: one per source table of each contract, time-partitioned, loaded incrementally."""

import time
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg
import polars as pl
import sqlalchemy as sa

from ml_assets import settings
from ml_assets.contracts.model import Contract
from ml_assets.dataset import Dataset
from ml_assets.ingest.sql import engine_for, raw_schema, read_window, to_naive_utc
from ml_assets.storage import LAKE_IO, Chunks, Lake, column_schema, schema_hash

T = TypeVar("T")


class SqlSource(dg.ConfigurableResource):
    """The SQL databases contracts read from.

    By default each contract's ``source.url_env`` environment variable, else the embedded demo
    SQLite file. ``url`` overrides that for every contract (PostgreSQL, say).
    """

    url: str | None = None
    chunk_rows: int = 100_000
    outage_retries: int = 4
    """How often a partition's read is retried when the source is down (unreachable, or the
    connection dropped mid-read): a transient outage does not fail the run."""
    outage_backoff_seconds: float = 2.0
    """The first wait before a retry; each next one doubles (2, 4, 8, 16 s by default)."""

    def engine(self, contract: Contract) -> sa.Engine:
        url = self.url or settings.current().source_url_for(
            contract.source.url_env, contract.source.url
        )
        return engine_for(url)


def reachable(engine: sa.Engine) -> bool:
    """Whether the database answers a trivial query now."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except sa.exc.DBAPIError:
        return False


def with_outage_retries(
    read: Callable[[], T], engine: sa.Engine, source: SqlSource, log: Any, what: str
) -> T:
    """``read()``, retried with doubling waits while the failure is an outage of the source.

    A database error is an outage when the connection was lost or the database does not answer
    ``SELECT 1`` afterwards; any other error (a missing table, a bad query) fails at once, and
    so does an outage that outlasts :attr:`SqlSource.outage_retries` retries. ``read`` must be
    safe to repeat (a partition's write to the lake is atomic)."""
    for attempt in range(source.outage_retries + 1):
        try:
            return read()
        except sa.exc.DBAPIError as exc:
            outage = exc.connection_invalidated or not reachable(engine)
            if not outage or attempt == source.outage_retries:
                raise
            wait = source.outage_backoff_seconds * 2**attempt
            log.warning(
                f"{what}: the source is down ({type(exc.orig).__name__}: "
                f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}); retry "
                f"{attempt + 1} of {source.outage_retries} in {wait:g} s"
            )
            time.sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


class _WindowStats:
    """Row count and time range of a partition as its chunks stream past."""

    def __init__(self, time_column: str) -> None:
        self.time_column = time_column
        self.low: str | None = None
        self.high: str | None = None

    def __call__(self, frame: pl.DataFrame) -> None:
        if self.time_column not in frame.columns or frame.height == 0:
            return
        col = frame.get_column(self.time_column)
        # As text: a dirty chunk may hold strings where others hold datetimes; ISO sorts right.
        lo, hi = (None if v is None else str(v) for v in (col.min(), col.max()))
        self.low = lo if self.low is None or (lo is not None and lo < self.low) else self.low
        self.high = hi if self.high is None or (hi is not None and hi > self.high) else self.high


def build_raw_asset(dataset: Dataset, role: str) -> dg.AssetsDefinition:
    """The raw asset of one source table: the rows of each partition's time window, as-is."""
    contract = dataset.contract
    table = contract.tables[role]
    partitions = dataset.partitions
    source_name = table.table or "query"

    @dg.asset(
        key=dataset.keys.raw[role],
        partitions_def=partitions.definition,
        backfill_policy=dg.BackfillPolicy.single_run(),
        io_manager_key=LAKE_IO,
        **dataset.asset_args("raw"),
        kinds={"sql", "polars", "parquet"},
        description=(
            f"Rows of `{source_name}` ({role}) whose `{table.time_column}` falls in the partition's "
            "time window, copied as the database returns them. A faithful copy of the source: "
            "typing and rules are applied downstream, so a bad value is never lost here."
        ),
        metadata={
            "dagster/column_schema": column_schema(table),
            "contract_version": contract.version,
            "source_table": source_name,
            "time_column": table.time_column,
        },
    )
    def raw(
        context: dg.AssetExecutionContext, source: SqlSource, lake: Lake
    ) -> dg.MaterializeResult:
        engine = source.engine(contract)
        keys = context.partition_keys
        per_partition: dict[str, int] = {}
        low = high = None
        hashes = set()
        # a range is committed together: a run that fails part-way changes no partition
        with lake.batch() as batch:
            for i, pk in enumerate(keys, 1):
                start, end = partitions.window(pk)

                def land(pk: str = pk, start: Any = start, end: Any = end) -> tuple[dict, Any]:
                    stats = _WindowStats(table.time_column)  # afresh on a retry
                    chunks = Chunks(
                        read_window(
                            engine,
                            table,
                            to_naive_utc(start),
                            to_naive_utc(end),
                            source.chunk_rows,
                            timezone=partitions.timezone,
                        ),
                        empty_schema=raw_schema(table),
                        on_chunk=stats,
                    )
                    return lake.write(context.asset_key, pk, chunks, batch=batch), stats

                written, stats = with_outage_retries(
                    land, engine, source, context.log, f"{source_name} {pk}"
                )
                per_partition[pk] = written["rows"]
                hashes.add(written["schema_hash"])
                if stats.low is not None:
                    low = stats.low if low is None or stats.low < low else low
                    high = stats.high if high is None or stats.high > high else high
                context.log.info(f"[{i}/{len(keys)}] {source_name} {pk}: {written['rows']} rows")
        total = sum(per_partition.values())
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": total,
                "partitions": len(keys),
                "time_range": f"{low} .. {high}" if low is not None else "empty",
                "schema_hash": ", ".join(sorted(hashes)),
                "rows_per_partition": dg.MetadataValue.json(per_partition),
                "expected_schema_hash": schema_hash(raw_schema(table)),
                "lake_path": dg.MetadataValue.path(str(lake.path(context.asset_key, None).parent)),
            }
        )

    return raw
