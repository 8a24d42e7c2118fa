"""The lake: atomic partition writes, streaming chunks, lazy reads."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from ml_assets.storage import Chunks, Lake

KEY = dg.AssetKey(["ds", "raw", "entity"])


def _frames(n: int, fail_after: int | None = None):
    for i in range(n):
        if fail_after is not None and i == fail_after:
            raise ConnectionError("source went away mid-partition")
        yield pl.DataFrame(
            {"id": [i * 10 + j for j in range(10)], "x": [float(j) for j in range(10)]}
        )


def test_chunks_stream_into_one_partition(tmp_path):
    lake = Lake(base_path=str(tmp_path))
    seen = []
    written = lake.write(
        KEY, "2024-01-01", Chunks(_frames(5), {"id": pl.Int64}, on_chunk=seen.append)
    )
    assert written["rows"] == 50 and len(seen) == 5
    back = lake.scan(KEY, ["2024-01-01"]).collect()
    assert back["id"].to_list() == list(range(50))


def test_failure_mid_write_keeps_the_previous_partition(tmp_path):
    lake = Lake(base_path=str(tmp_path))
    lake.write(KEY, "2024-01-01", Chunks(_frames(3), {}))
    before = lake.path(KEY, "2024-01-01").read_bytes()
    with pytest.raises(ConnectionError):
        lake.write(KEY, "2024-01-01", Chunks(_frames(6, fail_after=4), {}))
    assert lake.path(KEY, "2024-01-01").read_bytes() == before
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["2024-01-01.parquet"]


def test_empty_stream_writes_the_declared_schema(tmp_path):
    lake = Lake(base_path=str(tmp_path))
    lake.write(KEY, "p", Chunks(iter(()), {"id": pl.Int64(), "ts": pl.Datetime("us")}))
    empty = lake.scan(KEY, ["p"]).collect()
    assert empty.height == 0 and empty.schema == pl.Schema(
        {"id": pl.Int64(), "ts": pl.Datetime("us")}
    )


def test_a_chunk_with_another_type_widens_the_column_to_text(tmp_path):
    lake = Lake(base_path=str(tmp_path))
    chunks = [
        pl.DataFrame({"id": [1, 2], "v": [1, 2]}),
        pl.DataFrame({"id": [3], "v": ["three"]}),
        pl.DataFrame({"id": [4], "v": [4]}),
        pl.DataFrame({"id": ["5"], "v": [5]}),
    ]
    written = lake.write(KEY, "p", Chunks(iter(chunks), {}))
    back = lake.scan(KEY, ["p"]).collect()
    assert written["rows"] == 5
    assert back["v"].to_list() == ["1", "2", "three", "4", "5"]
    assert back["id"].to_list() == ["1", "2", "3", "4", "5"]


def test_missing_partition_is_named(tmp_path):
    lake = Lake(base_path=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ds/raw/entity partition '2024-02-02'"):
        lake.scan(KEY, ["2024-02-02"])


def test_parquet_stats_read_from_the_footer(tmp_path):
    lake = Lake(base_path=str(tmp_path))
    lake.write(KEY, "p", pl.DataFrame({"a": [1, None, 3], "b": [None, None, "x"]}))
    assert lake.parquet_stats(KEY, "p") == {"rows": 3, "nulls": {"a": 1, "b": 2}}
    assert lake.parquet_stats(KEY, "absent") is None
