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


_KILLED_WRITER = """
import sys, time
import polars as pl
import dagster as dg
from ml_assets.storage import Chunks, Lake

def frames():
    for i in range(10_000):
        yield pl.DataFrame({"id": list(range(i * 100, i * 100 + 100)), "x": [0.5] * 100})
        if i == 2:
            print("writing", flush=True)
            time.sleep(60)

Lake(base_path=sys.argv[1]).write(
    dg.AssetKey(["ds", "raw", "entity"]), "2024-01-01", Chunks(frames(), {"id": pl.Int64})
)
"""


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    """A writer SIGKILLed mid-partition leaves its temporary file; the next write of that
    partition removes it (its owner, by pid, is gone), and a live writer's is left alone."""
    import os
    import signal
    import subprocess
    import sys

    from ml_assets.storage import TEMP_OWNER

    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    folder = tmp_path / "ds" / "raw" / "entity"
    left = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and f"-{proc.pid}." in left[0]
    live = folder / f".2024-01-01.parquet.{TEMP_OWNER}.feedface.tmp"  # this process: alive
    live.write_bytes(b"in progress")
    lake = Lake(base_path=str(tmp_path))
    lake.write(KEY, "2024-01-01", pl.DataFrame({"id": [1]}))
    names = sorted(p.name for p in folder.iterdir())
    assert names == [live.name, "2024-01-01.parquet"]


def test_a_batch_commits_every_partition_or_none(tmp_path):
    """Partitions written in a batch appear together when it ends; when it fails part-way the
    earlier partitions keep their old content and no temporary file is left."""
    lake = Lake(base_path=str(tmp_path))
    old = pl.DataFrame({"id": [0]})
    for p in ("2024-01-01", "2024-01-02"):
        lake.write(KEY, p, old)
    before = {p: lake.path(KEY, p).read_bytes() for p in ("2024-01-01", "2024-01-02")}
    with pytest.raises(ConnectionError), lake.batch() as batch:
        lake.write(KEY, "2024-01-01", pl.DataFrame({"id": [1, 2]}), batch=batch)
        assert lake.path(KEY, "2024-01-01").read_bytes() == before["2024-01-01"]  # staged only
        lake.write(
            KEY, "2024-01-02", Chunks(_frames(5, fail_after=2), {"id": pl.Int64}), batch=batch
        )
    assert {p: lake.path(KEY, p).read_bytes() for p in before} == before
    assert not [
        p for p in (tmp_path / "ds" / "raw" / "entity").iterdir() if p.name.endswith(".tmp")
    ]
    with lake.batch() as batch:
        for p in before:
            lake.write(KEY, p, pl.DataFrame({"id": [7, 8, 9]}), batch=batch)
    assert all(lake.scan(KEY, [p]).collect().height == 3 for p in before)
