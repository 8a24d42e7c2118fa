"""The lake: partitioned parquet files under one base path, local or any fsspec URL.

Each asset partition is one parquet file at ``<base>/<asset key path>/<partition>.parquet``.
Writes go to a temporary name beside the target and are renamed into place, so a run that dies
mid-write leaves the previous version of the partition intact and readers never see half a file.
"""

import hashlib
import itertools
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

log = logging.getLogger(__name__)

PARQUET_COMPRESSION = "zstd"
LAKE_IO = "lake_io_manager"
"""Resource key of the :class:`LakeIOManager` (assets name it as their ``io_manager_key``)."""


def column_schema(table: Any, types: Mapping[str, pl.DataType] | None = None) -> dg.TableSchema:
    """A contract table's columns as Dagster shows them in the UI (type, nullability,
    description, PII tag); ``types`` gives the stored polars types when known."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=name,
                type=str(types[name]) if types else col.type.value,
                description=col.description + (" [PII]" if col.pii else ""),
                constraints=dg.TableColumnConstraints(nullable=col.nullable),
                tags={"pii": ""} if col.pii else {},
            )
            for name, col in table.columns.items()
        ]
    )


def frame_schema(schema: Mapping[str, pl.DataType]) -> dg.TableSchema:
    """A polars schema as a Dagster column schema."""
    return dg.TableSchema(columns=[dg.TableColumn(name=n, type=str(t)) for n, t in schema.items()])


def schema_hash(schema: Mapping[str, pl.DataType] | pl.Schema) -> str:
    """A short, stable hash of column names and types, to spot schema changes at a glance."""
    text = ";".join(f"{name}:{dtype}" for name, dtype in schema.items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Chunks:
    """A stream of same-shaped DataFrames to be written as one partition without collecting it.

    ``on_chunk`` sees each chunk as it passes (to gather statistics); ``empty_schema`` is the
    schema written when the stream yields nothing, so an empty partition is still a valid file.
    """

    frames: Iterable[pl.DataFrame]
    empty_schema: Mapping[str, pl.DataType]
    on_chunk: Callable[[pl.DataFrame], None] | None = None
    rows: int = field(default=0, init=False)

    def __iter__(self) -> Iterator[pl.DataFrame]:
        for frame in self.frames:
            self.rows += frame.height
            if self.on_chunk is not None:
                self.on_chunk(frame)
            yield frame


TEMP_OWNER = f"{socket.gethostname()}-{os.getpid()}"
"""Who writes a temporary lake file (host and pid, in its name), so a later write can tell a
killed writer's leftovers from a live writer's file."""
STALE_TEMP_SECONDS = 24 * 3600
"""A temporary file of another host (or on object storage) this old is a leftover."""


def owner_gone(owner: str) -> bool:
    """Whether the process an owner string (``<host>-<pid>``, :data:`TEMP_OWNER`'s form) names
    ran on this host and no longer runs; False for another host's or an unreadable owner."""
    host, _, pid = owner.rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_stale_temps(target: UPath) -> list[str]:
    """Delete the temporary files of ``target`` whose writer is gone: a process of this host
    that no longer runs, or (another host's, or one without an owner) older than
    :data:`STALE_TEMP_SECONDS`. Returns the names removed."""
    import time

    removed = []
    prefix = f".{target.name}."
    host = socket.gethostname()
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except (FileNotFoundError, NotADirectoryError):  # an object store has no empty folders
        return removed
    for path in candidates:
        if not path.name.endswith(".tmp"):
            continue
        owner = path.name[len(prefix) :].split(".", 1)[0]
        if owner.rpartition("-")[0] == host:
            stale = owner_gone(owner)
        else:
            try:
                mtime = path.stat().st_mtime
            except (FileNotFoundError, AttributeError):
                continue
            stale = time.time() - mtime > STALE_TEMP_SECONDS
        if stale:
            try:
                path.unlink()
                removed.append(path.name)
                log.info("removed %s, left by a writer that is gone", path)
            except FileNotFoundError:
                pass
    return removed


@dataclass
class LakeBatch:
    """Partition files staged by :meth:`Lake.write` and renamed into place together."""

    staged: list[tuple[UPath, UPath]] = field(default_factory=list)

    def staged_file(self, target: UPath) -> UPath | None:
        """The staged (not yet committed) file of ``target``, if this batch wrote it: what a
        later partition of the same run reads its predecessors' statistics from."""
        for tmp, staged_target in reversed(self.staged):
            if staged_target == target:
                return tmp
        return None

    def commit(self) -> None:
        for tmp, target in self.staged:
            tmp.rename(target)
        self.staged.clear()

    def discard(self) -> None:
        for tmp, _ in self.staged:
            if tmp.exists():
                tmp.unlink()
        self.staged.clear()

    def __enter__(self) -> "LakeBatch":
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


class Lake(dg.ConfigurableResource):
    """Where assets' partitions live: a local folder by default, any fsspec URL (``s3://...``)."""

    base_path: str = ".ml_assets/lake"

    def root(self) -> UPath:
        return UPath(self.base_path)

    def path(self, asset_key: dg.AssetKey, partition: str | None) -> UPath:
        """The file of one partition (or of the whole asset when unpartitioned)."""
        folder = self.root().joinpath(*asset_key.path)
        return folder / f"{partition or '__all__'}.parquet"

    def exists(self, asset_key: dg.AssetKey, partition: str | None) -> bool:
        return self.path(asset_key, partition).exists()

    def write(
        self,
        asset_key: dg.AssetKey,
        partition: str | None,
        data: Any,
        batch: LakeBatch | None = None,
    ) -> dict[str, Any]:
        """Write a DataFrame, LazyFrame or Chunks atomically; return rows and schema hash.

        With ``batch`` the file is only staged: :meth:`LakeBatch.commit` renames every staged
        file of a run into place at the end, so a run over a range of partitions that fails
        part-way changes no partition (the lake keeps agreeing with the catalog). Temporary
        files a killed writer left behind for this partition are removed first."""
        target = self.path(asset_key, partition)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        tmp = target.with_name(f".{target.name}.{TEMP_OWNER}.{uuid.uuid4().hex}.tmp")
        try:
            if isinstance(data, pl.LazyFrame):
                data = data.collect(engine="streaming")
            if isinstance(data, pl.DataFrame):
                with tmp.open("wb") as fh:
                    data.write_parquet(fh, compression=PARQUET_COMPRESSION)
                rows, schema = data.height, data.schema
            elif isinstance(data, Chunks):
                rows, schema = self._write_chunks(tmp, data)
            else:
                raise TypeError(
                    f"the lake stores polars frames or Chunks, not {type(data).__name__}"
                )
            # The rename is the commit point: until here the old partition is untouched.
            if batch is None:
                tmp.rename(target)
            else:
                batch.staged.append((tmp, target))
        except BaseException:
            if tmp.exists():
                tmp.unlink()
            raise
        return {"rows": rows, "schema_hash": schema_hash(schema), "path": str(target)}

    def batch(self) -> LakeBatch:
        """A batch of partition writes committed together (``with lake.batch() as b:`` then
        ``lake.write(..., batch=b)``): all renamed into place when the block ends cleanly,
        none when it raises."""
        return LakeBatch()

    def _write_chunks(self, tmp: UPath, chunks: Chunks) -> tuple[int, pl.Schema]:
        writer: pq.ParquetWriter | None = None
        schema: pa.Schema | None = None
        stream = iter(chunks)
        conflict: pl.DataFrame | None = None
        with tmp.open("wb") as fh:
            try:
                for frame in stream:
                    table = frame.to_arrow()
                    if writer is None:
                        schema = table.schema
                        writer = pq.ParquetWriter(fh, schema, compression=PARQUET_COMPRESSION)
                    elif table.schema != schema:
                        conflict = frame
                        break
                    writer.write_table(table)
            except BaseException:
                if writer is not None:
                    writer.close()  # into the temporary file, which the caller then removes
                raise
            if writer is None:
                empty = pl.DataFrame(schema=dict(chunks.empty_schema))
                empty.write_parquet(fh, compression=PARQUET_COMPRESSION)
                return 0, empty.schema
            writer.close()
        if conflict is not None:
            # A later chunk disagrees on a column's type (dirty source data): restart the file
            # with a schema wide enough for both. Rare, so rewriting what was written is fine.
            return self._rewrite_wider(tmp, chunks, stream, conflict)
        return chunks.rows, pl.from_arrow(schema.empty_table()).schema  # type: ignore[union-attr]

    def _rewrite_wider(
        self, tmp: UPath, chunks: Chunks, rest: Iterator[pl.DataFrame], current: pl.DataFrame
    ) -> tuple[int, pl.Schema]:
        with tmp.open("rb") as fh:
            written = pl.read_parquet(fh)
        differ = [
            c for c, t in current.schema.items() if c in written.schema and written.schema[c] != t
        ]

        def widen(frame: pl.DataFrame) -> pl.DataFrame:
            bad = differ + [c for c, t in frame.schema.items() if c in target and target[c] != t]
            return frame.with_columns(pl.col(c).cast(pl.String) for c in set(bad))

        target: dict[str, pl.DataType] = {}
        first = widen(written)
        target = dict(first.schema)
        conflict: pl.DataFrame | None = None
        with tmp.open("wb") as fh:
            writer = pq.ParquetWriter(fh, first.to_arrow().schema, compression=PARQUET_COMPRESSION)
            writer.write_table(first.to_arrow())
            for frame in itertools.chain([current], rest):
                wide = widen(frame).select(list(target))
                if dict(wide.schema) != target:
                    conflict = frame  # yet another column changed type further on
                    break
                writer.write_table(wide.to_arrow())
            writer.close()
        if conflict is not None:
            return self._rewrite_wider(tmp, chunks, rest, conflict)
        return chunks.rows, pl.Schema(target)

    def scan(self, asset_key: dg.AssetKey, partitions: Iterable[str | None]) -> pl.LazyFrame:
        """A lazy view over some partitions; a missing partition is an error naming it."""
        paths = []
        for p in partitions:
            path = self.path(asset_key, p)
            if not path.exists():
                raise FileNotFoundError(
                    f"{asset_key.to_user_string()} partition {p!r} is not materialized ({path})"
                )
            paths.append(str(path))
        if not paths:
            raise ValueError(f"no partitions of {asset_key.to_user_string()} requested")
        return pl.scan_parquet(paths, storage_options=self._storage_options())

    def _storage_options(self) -> dict[str, Any] | None:
        opts = dict(getattr(self.root(), "storage_options", {}) or {})
        return opts or None

    def parquet_stats(
        self, asset_key: dg.AssetKey, partition: str, batch: LakeBatch | None = None
    ) -> dict[str, Any] | None:
        """Row count and per-column null counts from a partition's parquet footer (no data read);
        with ``batch``, of the file it staged for the partition if it did."""
        path = self.path(asset_key, partition)
        staged = batch.staged_file(path) if batch is not None else None
        path = staged or path
        if not path.exists():
            return None
        with path.open("rb") as fh:
            meta = pq.ParquetFile(fh).metadata
            nulls: dict[str, int] = {}
            for rg in range(meta.num_row_groups):
                group = meta.row_group(rg)
                for ci in range(group.num_columns):
                    col = group.column(ci)
                    stats = col.statistics
                    name = col.path_in_schema
                    if stats is not None and stats.has_null_count:
                        nulls[name] = nulls.get(name, 0) + stats.null_count
        return {"rows": meta.num_rows, "nulls": nulls}


class LakeIOManager(dg.ConfigurableIOManager):
    """Stores asset outputs in the :class:`Lake`; loads inputs as polars LazyFrames.

    An output may be a DataFrame, a LazyFrame, :class:`Chunks`, or, for a run over a range of
    partitions, a dict of those by partition key. Inputs load lazily, so a downstream asset reads
    only what it uses; an input whose definition metadata sets ``by_partition`` loads as a dict.
    """

    lake: Lake

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        key = context.asset_key
        if context.has_asset_partitions:
            keys = list(context.asset_partition_keys)
            items = obj if isinstance(obj, dict) else {keys[0]: obj}
            missing = set(keys) - set(items)
            if missing:
                raise ValueError(
                    f"{key.to_user_string()}: no output for partitions {sorted(missing)}"
                )
        else:
            items = {None: obj}
        total = 0
        hashes = set()
        # a range is committed together: an output that fails part-way changes no partition
        with self.lake.batch() as batch:
            for partition, data in items.items():
                written = self.lake.write(key, partition, data, batch=batch)
                total += written["rows"]
                hashes.add(written["schema_hash"])
                context.log.debug(f"wrote {written['rows']} rows to {written['path']}")
        context.add_output_metadata(
            {
                "dagster/row_count": total,
                "lake_path": dg.MetadataValue.path(str(self.lake.path(key, None).parent)),
                "stored_schema_hash": ", ".join(sorted(hashes)),
            }
        )

    def load_input(self, context: dg.InputContext) -> pl.LazyFrame | dict[str, pl.LazyFrame]:
        key = context.asset_key
        partitions: list[str | None] = (
            list(context.asset_partition_keys) if context.has_asset_partitions else [None]
        )
        if (context.definition_metadata or {}).get("by_partition"):
            return {p: self.lake.scan(key, [p]) for p in partitions if p is not None}
        return self.lake.scan(key, partitions)
