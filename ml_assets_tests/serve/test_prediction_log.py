"""The prediction log in-process: many threads append, the writer batches, close loses nothing,
the reader sees a date-partitioned dataset; on a local folder and on an object store (moto's S3
server), cut off and back."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from ml_assets.contracts.model import ProblemType
from ml_assets.serve.prediction_log import (
    HOST,
    LogEntry,
    LogLayout,
    PredictionLog,
    read_prediction_log,
    read_served,
    set_aside,
)
from ml_assets.testing import Cuttable, MotoServer, wait_until

LAYOUT = LogLayout(
    dataset="toy",
    key=(("id", pl.Int64()),),
    event_time="ts_event",
    features=(("x", pl.Float64()), ("flag", pl.Boolean()), ("band", pl.Int64())),
    problem_type=ProblemType.BINARY,
    classes=(0, 1),
)
DAY1 = dt.datetime(2024, 3, 1, 23, 59, 59, tzinfo=dt.UTC)
DAY2 = dt.datetime(2024, 3, 2, 0, 0, 1, tzinfo=dt.UTC)


def us(t: dt.datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def append(log: PredictionLog, request_id: str, when: dt.datetime, n: int, keys: bool) -> None:
    rows = [[float(i), i % 2 == 0, None if i % 3 == 0 else i] for i in range(n)]
    scores = np.linspace(0.0, 1.0, n)
    log.append(
        LogEntry(
            request_id=request_id,
            ts_us=us(when),
            endpoint="predict_by_keys" if keys else "predict",
            protocol="http",
            latency_us=321,
            model_version="7",
            rows=rows,
            scores=scores,
            labels=[int(s >= 0.5) for s in scores],
            keys=[[i] for i in range(n)] if keys else None,
            event_times=[when] * n if keys else None,
        )
    )


def test_threads_append_close_flushes_everything(tmp_path: Path) -> None:
    log = PredictionLog(LAYOUT, tmp_path, flush_seconds=0.05, max_pending_rows=500)

    def worker(w: int) -> None:
        for i in range(200):
            append(log, f"w{w}-{i}", DAY1 if i % 2 else DAY2, 3, keys=i % 4 == 0)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert log.closed and not log.alive
    frame = read_prediction_log("toy", DAY1.date(), DAY2 + dt.timedelta(days=1), root=tmp_path)
    assert frame.height == 4 * 200 * 3 == log.rows_written
    assert frame.select(pl.col("request_id").n_unique()).item() == 800
    # partitioned by UTC date; every segment renamed into place (no temp files left)
    parts = sorted(p.name for p in (tmp_path / "toy").iterdir())
    assert parts == ["date=2024-03-01", "date=2024-03-02"]
    assert not list((tmp_path / "toy").rglob("*.tmp"))
    assert log.segments_written >= 2


def test_columns_types_and_time_filter(tmp_path: Path) -> None:
    log = PredictionLog(LAYOUT, tmp_path, flush_seconds=60)
    append(log, "a", DAY1, 4, keys=True)
    append(log, "b", DAY2, 2, keys=False)
    log.close()
    frame = read_prediction_log("toy", DAY1.date(), DAY2 + dt.timedelta(days=1), root=tmp_path)
    assert frame.schema == LAYOUT.schema()
    assert frame.columns[:8] == [
        "request_id",
        "client_request_id",
        "row",
        "ts",
        "model_version",
        "endpoint",
        "protocol",
        "latency_ms",
    ]
    a = frame.filter(pl.col("request_id") == "a")
    assert a["row"].to_list() == [0, 1, 2, 3]
    assert a["id"].to_list() == [0, 1, 2, 3]
    assert a["band"].to_list() == [None, 1, 2, None]
    assert a["flag"].to_list() == [True, False, True, False]
    assert a["prediction"].to_list() == [0, 0, 1, 1]
    assert a["latency_ms"].unique().to_list() == [0.321]
    b = frame.filter(pl.col("request_id") == "b")
    assert b["id"].null_count() == 2 and b["ts_event"].null_count() == 2
    # [start, end): the second day only
    later = read_prediction_log(
        "toy", DAY2.replace(hour=0, second=0), DAY2.date() + dt.timedelta(1), root=tmp_path
    )
    assert later["request_id"].unique().to_list() == ["b"]
    empty = read_prediction_log("toy", dt.date(2020, 1, 1), dt.date(2020, 1, 2), root=tmp_path)
    assert empty.height == 0 and "request_id" in empty.columns


def test_writer_failure_keeps_entries_queued(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "toy"
    blocker.write_text("a file where the dataset folder should be")
    caplog.set_level(logging.WARNING, logger="ml_assets.serve.prediction_log")
    log = PredictionLog(LAYOUT, tmp_path, flush_seconds=0.05)
    append(log, "kept", DAY1, 2, keys=False)

    def messages(text: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if text in r.getMessage()]

    wait_until(lambda: len(messages("still fails")) >= 2, 30, what="three failed flush attempts")
    with log._flush_lock:  # no flush in flight while we look
        assert log.rows_written == 0 and len(log._pending) == 1  # failed, still queued
    # the first failure with its traceback, the next ones a line each (a store down for an
    # hour must not fill the server's log with tracebacks)
    (first,) = messages("writing a segment failed")
    assert first.exc_info is not None and first.levelno == logging.ERROR
    assert "2 rows queued" in messages("still fails")[0].getMessage()
    blocker.unlink()
    wait_until(lambda: messages("writing works again"), 30, what="the recovery logged")
    log.close()
    assert read_prediction_log("toy", DAY1.date(), DAY2, root=tmp_path).height == 2


def test_bounded_queue_refuses_at_the_bound_and_while_writing_fails(tmp_path: Path) -> None:
    """The queue grew without bound while nothing could be written; now it refuses new
    predictions at its bound and while the last write failed, and a failed write leaves no
    temporary file."""
    log = PredictionLog(LAYOUT, tmp_path, flush_seconds=3600, max_pending_rows=100)
    with log._flush_lock:  # the writer cannot write while we fill the queue
        append(log, "a", DAY1, 60, keys=False)
        assert log.refusal() is None
        append(log, "b", DAY1, 60, keys=False)
        assert log.refusal() == "the prediction log is 120 rows behind (limit 100)"
    wait_until(lambda: log.pending_rows == 0, 30, what="the queue written")
    assert log.refusal() is None
    blocker = tmp_path / "toy" / f"date={DAY2.date().isoformat()}"
    blocker.write_text("a file where the date folder should be")
    append(log, "c", DAY2, 3, keys=False)
    with pytest.raises(OSError):
        log.flush()
    refusal = log.refusal()
    assert refusal is not None and refusal.startswith("the prediction log cannot be written")
    assert log.pending_rows == 3 and not list(tmp_path.rglob("*.tmp"))
    blocker.unlink()
    assert log.close() == 0  # writable again: every answered row is written
    assert (
        read_prediction_log("toy", DAY1.date(), DAY2 + dt.timedelta(days=1), root=tmp_path).height
        == 123
    )


# --- on an object store: moto's S3 server, the production profile's stand-in ------------------


def object_root(moto: MotoServer, endpoint: str | None = None) -> Any:
    """A prefix of its own in the session's bucket (through ``endpoint`` when given)."""
    return moto.path(f"log-{uuid.uuid4().hex[:8]}", endpoint)


def put(moto: MotoServer, root: Any, relative: str, body: bytes) -> None:
    """Write an object under ``root`` behind the log's back."""
    (root / relative).write_bytes(body)


def test_two_workers_write_one_log_on_an_object_store_that_a_reader_elsewhere_reads(
    moto: MotoServer,
) -> None:
    """Two writers (two serving workers, as on two hosts) and one reader share a prefix: each
    segment is one object (no temporary object, no rename), named by host, pid and sequence
    with its event-time bounds; the reader sees segments written after its first read."""
    root = object_root(moto)
    first, second = (PredictionLog(LAYOUT, root, flush_seconds=3600) for _ in range(2))
    append(first, "a", DAY1, 4, keys=True)
    append(second, "b", DAY2, 2, keys=False)
    assert first.flush() == 4 and second.flush() == 2
    frame = read_prediction_log("toy", DAY1.date(), DAY2 + dt.timedelta(days=1), root=root)
    assert frame.schema == LAYOUT.schema()
    assert frame.group_by("request_id").len().sort("request_id").rows() == [("a", 4), ("b", 2)]
    names = sorted(p.name for day in (root / "toy").iterdir() for p in day.iterdir())
    assert len(names) == 2 and all(HOST in n and str(os.getpid()) in n for n in names)
    assert [n.split("-at-")[1] for n in names] == [
        "20240301T235959Z-20240301T235959Z.parquet",
        "20240302T000001Z-20240302T000001Z.parquet",
    ]
    # written since the last read: seen (listings are not served from a stale cache)
    append(second, "c", DAY2, 3, keys=True)
    first.close(), second.close()
    served = read_served("toy", DAY2.date(), DAY2 + dt.timedelta(days=1), "ts_event", root)
    assert served.unreadable == []
    assert served.rows.group_by("request_id").len().sort("request_id").rows() == [
        ("b", 2),
        ("c", 3),
    ]


def test_a_corrupt_object_is_reported_and_one_outside_the_window_is_not_even_opened(
    moto: MotoServer,
) -> None:
    root = object_root(moto)
    log = PredictionLog(LAYOUT, root, flush_seconds=3600)
    append(log, "a", DAY1, 3, keys=True)
    log.close()
    # a replay served in March predictions of February's events: their segment is in March's
    # folder, its name bounds its events in February
    put(
        moto,
        root,
        "toy/date=2024-03-01/part-1-h-1-000001-at-20240301T000000Z-20240301T235959Z.parquet",
        b"x",
    )
    put(
        moto,
        root,
        "toy/date=2024-03-02/part-2-h-1-000002-at-20240201T000000Z-20240201T000001Z.parquet",
        b"y",
    )
    put(moto, root, "toy/date=2024-03-02/part-legacy.parquet", b"PAR1 cut short")
    served = read_served("toy", DAY1.date(), DAY2.date(), "ts_event", root)
    assert served.rows["request_id"].to_list() == ["a"] * 3  # the readable rows, all of them
    reported = sorted(p.name for p, _ in served.unreadable)
    # the object whose name puts its events in February was skipped unopened; the one with no
    # bounds in its name (an older writer's) was read, and both corrupt ones are reported
    assert reported == [
        "part-1-h-1-000001-at-20240301T000000Z-20240301T235959Z.parquet",
        "part-legacy.parquet",
    ]
    assert all("parquet" in reason.lower() for _, reason in served.unreadable)
    february = read_served("toy", dt.date(2024, 2, 1), dt.date(2024, 2, 2), "ts_event", root)
    assert sorted(p.name for p, _ in february.unreadable) == [
        "part-2-h-1-000002-at-20240201T000000Z-20240201T000001Z.parquet",
        "part-legacy.parquet",
    ]
    with pytest.raises(OSError, match="part-1-h-1"):  # this reader raises instead
        read_prediction_log("toy", DAY1.date(), DAY2.date(), root=root)


def test_an_object_store_cut_off_refuses_then_writes_every_queued_row_once_back(
    moto: MotoServer,
) -> None:
    """The store unreachable (connections refused and reset; its contents kept): the writer
    fails, the log refuses new predictions with the reason (the server's 503 and /readyz) and
    keeps what it had answered; back, it writes the backlog and accepts again: no row lost."""
    link = Cuttable(("127.0.0.1", moto.port))
    root = object_root(moto)
    through = moto.path(root.path.split("/", 1)[1], f"http://127.0.0.1:{link.port}")
    log = PredictionLog(LAYOUT, through, flush_seconds=0.05, max_pending_rows=1000)
    try:
        append(log, "before", DAY1, 3, keys=True)
        wait_until(lambda: log.pending_rows == 0, 60, what="the first rows written")
        link.cut()
        append(log, "during", DAY1, 4, keys=True)
        refusal = wait_until(log.refusal, 120, what="the log refusing")
        assert refusal.startswith("the prediction log cannot be written"), refusal
        assert log.pending_rows == 4  # answered, kept
        link.restore()
        wait_until(lambda: log.refusal() is None and log.pending_rows == 0, 120, what="the backlog")
        append(log, "after", DAY1, 2, keys=True)
        assert log.close() == 0
    finally:
        link.close()
        log.close()
    frame = read_prediction_log("toy", DAY1.date(), DAY2.date(), root=root)
    assert frame.group_by("request_id").len().sort("request_id").rows() == [
        ("after", 2),
        ("before", 3),
        ("during", 4),
    ]


@pytest.mark.parametrize("store", ["folder", "object store"])
def test_a_log_set_aside_is_kept_beside_and_later_reads_start_empty(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """What a second replay needs (``ml_assets.replay`` moves the log aside): on an object
    store ``Path.rename`` of the UPath prefix moved nothing, so this moves every object."""
    root = tmp_path if store == "folder" else object_root(request.getfixturevalue("moto"))
    log = PredictionLog(LAYOUT, root, flush_seconds=3600)
    append(log, "a", DAY1, 3, keys=True)
    append(log, "b", DAY2, 2, keys=True)
    log.close()
    aside = set_aside("toy", "before-replay-1", root)
    assert aside is not None and aside.name == "toy.before-replay-1"
    assert read_prediction_log("toy", DAY1.date(), DAY2.date() + dt.timedelta(1), root).height == 0
    kept = read_prediction_log(
        "toy.before-replay-1", DAY1.date(), DAY2.date() + dt.timedelta(1), root
    )
    assert sorted(kept["request_id"].unique()) == ["a", "b"] and kept.height == 5
    assert set_aside("toy", "before-replay-2", root) is None  # nothing left to move
