"""Where the production profile keeps the prediction log: object-store segments or a table.

Issue 12 leaves the choice open ("the prediction log as a table or as object-store segments:
pick, measure, say why"). This bench measures both on this machine, side by side in one run,
against the embedded default (parquet segments on the local disk):

- **local**: :class:`~ml_assets.serve.prediction_log.PredictionLog` on a temporary folder;
- **s3**: the same class on ``s3://<bucket>/prediction_log`` of moto's S3 server on loopback
  (the production profile's stand-in): one PUT per segment, read back by
  :func:`~ml_assets.serve.prediction_log.read_served` (listing, concurrent GETs);
- **postgresql**: a table per dataset on the local PostgreSQL, written by the same flusher with
  one ``COPY ... FROM STDIN`` (CSV, encoded by polars) per flush, read with one
  ``COPY (SELECT ... WHERE coalesce(event_time, ts) in range) TO STDOUT`` into polars, with an
  index on that expression. This writer and reader exist only here (:class:`PgTableLog`,
  :func:`read_served_pg`): the profile ships the object store (README, "Production profile").

Measured, for the car-loan log layout (key, event time, the 16 model inputs, outputs: 28
columns), with the car-loan demo's feature types:

1. **flush**: what the background flusher sustains: one ``flush()`` of N queued one-row
   requests (building the frame, which all backends share, then writing it), N = 10 ... 10,000,
   median of ``--repeat`` interleaved rounds; rows/s = N / flush time.
2. **request path**: a request thread doing a fixed ~0.2 ms of Python work (the stand-in for
   validation and scoring) plus building its log entry and ``append()``, paced at
   ``--rate`` requests/s for ``--seconds``, while the backend's flusher writes every second
   (the default): p50/p99/max of the request's time, and of ``append()`` alone, against the
   same loop with no log at all. The flusher competes for the GIL; this is what it costs.
3. **week**: for each ``--shapes`` ``<segments a day>x<rows a segment>``, a week of log
   written segment by segment through each store's writer, then one monitoring read of that
   week's events (``read_served`` / :func:`read_served_pg`); and a read of the same, now older,
   week once ``--later-weeks`` more weeks are logged after it (a backfilled monitoring
   partition): with the segment names' event bounds (the shipped reader) and without (every
   segment since fetched, as a reader that cannot skip would).
4. **store down**: the flusher writing every 0.2 s, 200 one-row requests/s accepted while
   ``refusal()`` is None (as the server does), the store cut off by a TCP forwarder
   (:class:`~ml_assets.testing.Cuttable`: connections refused and reset, the store keeps its
   contents) for ``--outage`` seconds, then restored: seconds until the log refuses, until it
   accepts again with its queue written, and rows answered versus rows in the store.

    .venv/bin/python bench/bench_prediction_log.py --out bench/results/prediction_log.md
    .venv/bin/python bench/bench_prediction_log.py --quick     # smaller, to try it

PostgreSQL must be running locally (``--pg-url``, default the local server with trust auth): a
database ``mlassets_bench_predlog_<random>`` is created and dropped. moto's server is started
and stopped by the script. Everything runs in one process; nothing is left running.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import faulthandler
import io
import logging
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from ml_assets import settings, testing  # noqa: E402
from ml_assets.serve import prediction_log as plog  # noqa: E402
from ml_assets.serve.prediction_log import (  # noqa: E402
    UTC_US,
    LogEntry,
    LogLayout,
    PredictionLog,
    read_served,
)

BACKENDS = ("local", "s3", "postgresql")
T0 = dt.datetime(2024, 3, 4, tzinfo=dt.UTC)  # a Monday: the monitored week starts here
BATCH = {"flush_seconds": 3600, "max_pending_rows": 10_000_000}
"""A log the bench flushes itself (the background writer never wakes on its own)."""


def say(text: str) -> None:
    """Progress, with the time (``kill -USR1 <pid>`` prints every thread's stack)."""
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


# --- the layout and its rows ------------------------------------------------------------------


def car_loan_layout() -> LogLayout:
    """The car-loan log layout: its key, event time and model inputs as the spec types them."""
    from ml_assets.contracts.model import ProblemType
    from ml_assets.features.spec import COLUMN_DTYPES

    _, spec = testing.car_loan()
    ent = spec.contract.entity
    dtypes = spec.dtypes()
    return LogLayout(
        dataset="car_loan",
        key=tuple((k, COLUMN_DTYPES[ent.columns[k].type]) for k in spec.key),
        event_time=spec.event_time,
        features=tuple(dtypes.items()),
        problem_type=ProblemType.BINARY,
        classes=(0, 1),
    )


class Requests:
    """One-row requests with random inputs typed like the layout's features."""

    def __init__(self, layout: LogLayout, seed: int = 0) -> None:
        self.layout = layout
        self.rng = np.random.default_rng(seed)
        self.n = 0

    def row(self) -> list[Any]:
        out: list[Any] = []
        for _, dtype in self.layout.features:
            if dtype == pl.Boolean:
                out.append(bool(self.rng.integers(0, 2)))
            elif dtype.is_integer():
                out.append(int(self.rng.integers(0, 100)))
            else:
                out.append(float(self.rng.random() * 1000))
        return out

    def entry(self, event: dt.datetime, served: dt.datetime | None = None) -> LogEntry:
        """A one-row request for an event at ``event`` served at ``served`` (else just after)."""
        self.n += 1
        served = served or event + dt.timedelta(milliseconds=50)
        score = float(self.rng.random())
        return LogEntry(
            request_id=f"r{self.n:09d}",
            ts_us=int(served.timestamp() * 1_000_000),
            endpoint="predict",
            protocol="http",
            latency_us=900,
            model_version="3",
            rows=[self.row()],
            scores=np.array([score]),
            labels=[int(score >= 0.5)],
            keys=[[self.n]],
            event_times=[event],
        )


# --- the PostgreSQL table (measured here only) -------------------------------------------------

PG_TYPES = {
    pl.String: "text",
    pl.Int32: "integer",
    pl.Int64: "bigint",
    pl.Float64: "double precision",
    pl.Boolean: "boolean",
}


def _pg_type(dtype: pl.DataType) -> str:
    return "timestamptz" if isinstance(dtype, pl.Datetime) else PG_TYPES[dtype.base_type()]


def pg_table(layout: LogLayout) -> str:
    return f"prediction_log_{layout.dataset}"


class PgTableLog(PredictionLog):
    """The same flusher, writing each flush as one COPY into a table of the dataset (columns
    added as model versions add features; an index on the partition time monitoring reads by)."""

    def __init__(self, layout: LogLayout, url: str, **kwargs: Any) -> None:
        self.url = url
        self._conn: Any = None
        super().__init__(layout, tempfile.gettempdir(), **kwargs)  # (the folder is unused)

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            create_pg_table(self._conn, self.layout)
        return self._conn

    def _write(self, day: dt.date, group: list[LogEntry]) -> int:
        frame = self.frame(group)
        conn = self._connection()
        try:
            copy_in(conn, pg_table(self.layout), frame)
        except Exception:
            conn.close()  # reconnect on the next try
            raise
        self.segments_written += 1
        return frame.height


def create_pg_table(conn: Any, layout: LogLayout) -> None:
    table = pg_table(layout)
    cols = ", ".join(f'"{c}" {_pg_type(d)}' for c, d in layout.schema().items())
    conn.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({cols})')
    for c, d in layout.schema().items():
        conn.execute(f'ALTER TABLE "{table}" ADD COLUMN IF NOT EXISTS "{c}" {_pg_type(d)}')
    conn.execute(
        f'CREATE INDEX IF NOT EXISTS "{table}_at" ON "{table}" '
        f'((coalesce("{layout.event_time}", ts)))'
    )


def copy_in(conn: Any, table: str, frame: pl.DataFrame) -> None:
    """COPY a frame in as CSV (polars encodes; strings quoted so only bare ``\\N`` is NULL)."""
    buffer = io.BytesIO()
    frame.write_csv(
        buffer,
        include_header=False,
        null_value="\\N",
        quote_style="non_numeric",
        datetime_format="%Y-%m-%d %H:%M:%S.%6f%:z",
    )
    cols = ", ".join(f'"{c}"' for c in frame.columns)
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY \"{table}\" ({cols}) FROM STDIN WITH (FORMAT csv, NULL '\\N')") as cp,
    ):
        cp.write(buffer.getbuffer())


def read_served_pg(
    url: str, layout: LogLayout, start: dt.datetime, end: dt.datetime
) -> pl.DataFrame:
    """The rows whose event (else request) time is in [start, end): one COPY out, into polars
    typed like the layout, sorted as :func:`read_served` sorts."""
    import psycopg
    from psycopg import sql

    schema = layout.schema()
    select = []
    wire: dict[str, pl.DataType] = {}
    for c, d in schema.items():
        if isinstance(d, pl.Datetime):
            select.append(f'(extract(epoch from "{c}") * 1000000)::bigint')
            wire[c] = pl.Int64()
        elif d == pl.Boolean:
            select.append(f'"{c}"::int')
            wire[c] = pl.Int8()
        else:
            select.append(f'"{c}"')
            wire[c] = d
    at = f'coalesce("{layout.event_time}", ts)'
    query = sql.SQL(
        f'COPY (SELECT {", ".join(select)} FROM "{pg_table(layout)}" '
        f"WHERE {at} >= {{lo}} AND {at} < {{hi}}) TO STDOUT WITH (FORMAT csv, NULL '\\N')"
    ).format(lo=sql.Literal(start), hi=sql.Literal(end))
    buffer = io.BytesIO()
    with (
        psycopg.connect(url, autocommit=True) as conn,
        conn.cursor() as cur,
        cur.copy(query) as cp,
    ):
        for block in cp:
            buffer.write(block)
    buffer.seek(0)
    if not buffer.getbuffer().nbytes:
        return pl.DataFrame(schema=schema)
    frame = pl.read_csv(buffer, schema=wire, has_header=False, null_values="\\N")
    frame = frame.with_columns(
        pl.col(c).cast(UTC_US) if isinstance(d, pl.Datetime) else pl.col(c).cast(d)
        for c, d in schema.items()
        if isinstance(d, pl.Datetime) or d == pl.Boolean
    )
    return frame.sort([layout.event_time, "ts", "request_id", "row"], nulls_last=True)


def pg_rows(url: str, layout: LogLayout) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(f'SELECT count(*) FROM "{pg_table(layout)}"').fetchone()[0]


# --- the stores ----------------------------------------------------------------------------------


class Stores:
    """moto's S3 server, a PostgreSQL database and a temporary folder, private to this run."""

    def __init__(self, work: Path, pg_admin: str) -> None:
        import psycopg

        self.work = work
        self.moto = testing.start_moto(f"bench-{uuid.uuid4().hex[:8]}", work / "moto.log")
        self.db = f"mlassets_bench_predlog_{uuid.uuid4().hex[:8]}"
        self.pg_admin = pg_admin
        with psycopg.connect(f"{pg_admin}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        self.pg_url = f"{pg_admin}/{self.db}"
        self.n = 0

    def close(self) -> None:
        import psycopg

        self.moto.stop()
        with psycopg.connect(f"{self.pg_admin}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')

    def fresh(self, backend: str) -> tuple[Any, str | None]:
        """A new, empty log location of ``backend``: (root for PredictionLog, pg url)."""
        self.n += 1
        if backend == "local":
            root = self.work / f"log{self.n}"
            root.mkdir()
            return root, None
        if backend == "s3":
            return self.moto.path(f"log{self.n}"), None
        import psycopg

        db = f"{self.db}_{self.n}"
        with psycopg.connect(f"{self.pg_admin}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        self.dropped = getattr(self, "dropped", [])
        self.dropped.append(db)
        return None, f"{self.pg_admin}/{db}"

    def drop_extra(self) -> None:
        import psycopg

        with psycopg.connect(f"{self.pg_admin}/postgres", autocommit=True) as conn:
            for db in getattr(self, "dropped", []):
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def open_log(
    backend: str, layout: LogLayout, root: Any, url: str | None, **kwargs: Any
) -> PredictionLog:
    if backend == "postgresql":
        assert url is not None
        return PgTableLog(layout, url, **kwargs)
    return PredictionLog(layout, root, **kwargs)


def via(stores: Stores, backend: str, root: Any, url: str | None, port: int) -> tuple[Any, Any]:
    """The same location reached through a forwarder on ``port``."""
    if backend == "s3":
        return stores.moto.path(root.path.split("/", 1)[1], f"http://127.0.0.1:{port}"), None
    assert url is not None
    return None, url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")


# --- 1. flush throughput ----------------------------------------------------------------------


def bench_flush(stores: Stores, layout: LogLayout, sizes: list[int], repeat: int) -> list[dict]:
    logs = {}
    for backend in BACKENDS:
        root, url = stores.fresh(backend)
        logs[backend] = open_log(backend, layout, root, url, **BATCH)
    gen = Requests(layout, seed=1)
    out = []
    try:
        for log in logs.values():  # connections made, table created, before anything is timed
            log.append(gen.entry(T0 - dt.timedelta(days=1)))
            log.flush()
        for n in sizes:
            times: dict[str, list[float]] = {b: [] for b in BACKENDS}
            frame_times: list[float] = []
            for r in range(repeat):
                for backend in BACKENDS:
                    log = logs[backend]
                    base = T0 + dt.timedelta(hours=r)
                    entries = [gen.entry(base + dt.timedelta(seconds=i)) for i in range(n)]
                    if backend == "local":
                        t = time.perf_counter()
                        log.frame(entries)
                        frame_times.append(time.perf_counter() - t)
                    with log._flush_lock:  # no background flush in between
                        for e in entries:
                            log.append(e)
                    t = time.perf_counter()
                    written = log.flush()
                    times[backend].append(time.perf_counter() - t)
                    assert written == n, (backend, written, n)
            row = {"rows": n, "frame_ms": statistics.median(frame_times) * 1000}
            for backend in BACKENDS:
                sec = statistics.median(times[backend])
                row[f"{backend}_ms"] = sec * 1000
                row[f"{backend}_rows_s"] = n / sec
            out.append(row)
            say(f"flush {n}: {row}")
    finally:
        for log in logs.values():
            log.close()
    return out


# --- 2. the request path ------------------------------------------------------------------------


def _work(units: int) -> float:
    """~0.2 ms of Python work (validation and scoring's stand-in): holds the GIL."""
    acc = 0.0
    for i in range(units):
        acc += i * 0.5
    return acc


def _calibrate() -> int:
    units = 1000
    t = time.perf_counter()
    for _ in range(20):
        _work(units)
    per = (time.perf_counter() - t) / 20
    return max(100, int(units * 0.0002 / per))


def bench_request_path(
    stores: Stores, layout: LogLayout, rate: float, seconds: float, rounds: int
) -> list[dict]:
    """Rounds interleaved over the backends; per backend the round with the median p99."""
    from ml_assets.serve.service import SWITCH_INTERVAL

    units = _calibrate()
    saved = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)  # as a serving worker runs (Serving.start)
    runs: dict[str, list[dict]] = {}
    try:
        for r in range(rounds):
            for backend in ("none", *BACKENDS):
                row = request_round(stores, layout, backend, rate, seconds, units)
                runs.setdefault(backend, []).append(row)
                say(f"request path, round {r + 1}: {row}")
    finally:
        sys.setswitchinterval(saved)
    out = []
    for backend, rows in runs.items():
        rows = sorted(rows, key=lambda x: x["p99_us"])
        out.append({**rows[len(rows) // 2], "p99_rounds": [x["p99_us"] for x in runs[backend]]})
    return out


def request_round(
    stores: Stores, layout: LogLayout, backend: str, rate: float, seconds: float, units: int
) -> dict:
    """One paced run of requests with ``backend``'s flusher writing every second."""
    log = None
    gen = Requests(layout, seed=2)
    if backend != "none":
        root, url = stores.fresh(backend)
        log = open_log(backend, layout, root, url, flush_seconds=1.0)
        log.append(gen.entry(T0))  # connected, table made, before anything is timed
        log.flush()
    total, appends = [], []
    period = 1.0 / rate
    start = time.perf_counter()
    next_at = start
    try:
        while time.perf_counter() - start < seconds:
            now = time.perf_counter()
            if now < next_at:
                time.sleep(next_at - now)
            next_at += period
            t0 = time.perf_counter_ns()
            _work(units)
            entry = gen.entry(dt.datetime.now(dt.UTC))
            t1 = time.perf_counter_ns()
            if log is not None:
                log.append(entry)
            t2 = time.perf_counter_ns()
            total.append((t2 - t0) / 1000)
            appends.append((t2 - t1) / 1000)
    finally:
        written = 0
        if log is not None:
            log.close()
            written = log.rows_written
    return {
        "backend": backend,
        "requests": len(total),
        "written": written,
        "p50_us": float(np.percentile(total, 50)),
        "p99_us": float(np.percentile(total, 99)),
        "max_us": float(np.max(total)),
        "append_p50_us": float(np.percentile(appends, 50)),
        "append_p99_us": float(np.percentile(appends, 99)),
    }


# --- 3. a week --------------------------------------------------------------------------------


def write_weeks(
    log: PredictionLog,
    gen: Requests,
    weeks: range,
    segments_per_day: int,
    rows: int,
) -> int:
    """The weeks ``weeks`` (0: the one starting at T0) as ``segments_per_day`` segments a day
    of ``rows`` rows each, written one by one through the log's own segment writer. The rows of
    a segment are one typed frame built once, its ids and times moved to the segment's minute
    (building millions of entries one by one would measure the generator, not the store)."""
    base = log.frame([gen.entry(T0 + dt.timedelta(microseconds=i)) for i in range(rows)])
    offsets = pl.Series(np.arange(rows), dtype=pl.Int64)
    step = dt.timedelta(days=1) / segments_per_day
    frames: list[pl.DataFrame] = []
    log.frame = lambda group: frames.pop()  # type: ignore[method-assign]
    n = 0
    for w in weeks:
        for d in range(7):
            for s in range(segments_per_day):
                at = T0 + dt.timedelta(weeks=w, days=d) + s * step
                at_us = int(at.timestamp() * 1_000_000)
                segment = base.with_columns(
                    pl.lit(f"w{w}d{d}s{s}-").add(offsets.cast(pl.String)).alias("request_id"),
                    (offsets + at_us).cast(UTC_US).alias(layout_event_time(log)),
                    (offsets + at_us + 50_000).cast(UTC_US).alias("ts"),
                )
                frames.append(segment)
                n += log._write(at.date(), [])
    return n


def layout_event_time(log: PredictionLog) -> str:
    return log.layout.event_time


def stored_bytes(layout: LogLayout, root: Any, url: str | None) -> int:
    """What the dataset's log takes in the store: files, objects, or the table with its index."""
    if url is not None:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                f"SELECT pg_total_relation_size('\"{pg_table(layout)}\"')"
            ).fetchone()
            return int(row[0])
    base = root / layout.dataset
    if isinstance(base, Path):
        return sum(p.stat().st_size for p in base.rglob("*.parquet"))
    return int(base.fs.du(base.path))


@contextlib.contextmanager
def name_skipping(enabled: bool) -> Iterator[None]:
    """The shipped reader (skips by the names' event bounds), or one that fetches every
    segment listed since the start date."""
    saved = plog._may_hold
    if not enabled:
        plog._may_hold = lambda path, lo, hi: True  # type: ignore[assignment]
    try:
        yield
    finally:
        plog._may_hold = saved


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    value = fn()
    return time.perf_counter() - t, value


def bench_week(
    stores: Stores, layout: LogLayout, segments_per_day: int, rows: int, later_weeks: int
) -> list[dict]:
    out = []
    for backend in BACKENDS:
        row = week_of(stores, layout, backend, segments_per_day, rows, later_weeks)
        out.append(row)
        say(f"week: {row}")
    return out


def week_of(
    stores: Stores,
    layout: LogLayout,
    backend: str,
    segments_per_day: int,
    rows: int,
    later_weeks: int,
) -> dict:
    """Write a week to a fresh ``backend`` location, read it; write more weeks, read it again."""
    week = (T0, T0 + dt.timedelta(weeks=1))
    root, url = stores.fresh(backend)

    def read() -> pl.DataFrame:
        if url is not None:
            return read_served_pg(url, layout, *week)
        served = read_served("car_loan", *week, layout.event_time, root)
        assert not served.unreadable, served.unreadable
        return served.rows

    gen = Requests(layout, seed=3)
    log = open_log(backend, layout, root, url, **BATCH)
    try:
        write_s, written = timed(lambda: write_weeks(log, gen, range(1), segments_per_day, rows))
    finally:
        log.close()
    read_s, frame = timed(read)
    assert frame.height == written, (backend, frame.height, written)
    stored = stored_bytes(layout, root, url)
    # more weeks logged after it: a backfilled monitoring partition reads the first
    log = open_log(backend, layout, root, url, **BATCH)
    try:
        write_weeks(log, gen, range(1, later_weeks + 1), segments_per_day, rows)
    finally:
        log.close()
    old_s, old = timed(read)
    assert old.height == written, (backend, old.height, written)
    with name_skipping(False):
        noskip_s, again = timed(read)
    assert again.height == written
    return {
        "backend": backend,
        "segments": 7 * segments_per_day,
        "rows": written,
        "write_s": write_s,
        "read_s": read_s,
        "bytes_per_row": stored / written,
        "old_read_s": old_s,
        "old_read_noskip_s": noskip_s if url is None else old_s,
    }


# --- 4. the store down ---------------------------------------------------------------------


def bench_outage(stores: Stores, layout: LogLayout, outage: float) -> list[dict]:
    out = []
    for backend in ("s3", "postgresql"):
        row = outage_of(stores, layout, backend, outage)
        out.append(row)
        say(f"outage: {row}")
    return out


def outage_of(stores: Stores, layout: LogLayout, backend: str, outage: float) -> dict:
    """A log writing through a forwarder that is cut for ``outage`` seconds, then restored."""
    root, url = stores.fresh(backend)
    target = ("127.0.0.1", stores.moto.port if backend == "s3" else 5432)
    proxy = testing.Cuttable(target)
    proxied_root, proxied_url = via(stores, backend, root, url, proxy.port)
    log = open_log(
        backend, layout, proxied_root, proxied_url, flush_seconds=0.2, max_pending_rows=5000
    )
    gen = Requests(layout, seed=4)
    counts = {"answered": 0, "refused": 0}
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            if log.refusal() is None:
                log.append(gen.entry(dt.datetime.now(dt.UTC)))
                counts["answered"] += 1
            else:
                counts["refused"] += 1
            time.sleep(1 / 200)

    def recovered() -> bool:
        return log.refusal() is None and log.pending_rows < 200

    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(2)
        proxy.cut()
        t_cut = time.perf_counter()
        testing.wait_until(log.refusal, 300, interval=0.05, what="a refusal")
        detect = time.perf_counter() - t_cut
        queued_at_refusal = log.pending_rows
        time.sleep(max(0.0, outage - detect))
        proxy.restore()
        t_back = time.perf_counter()
        testing.wait_until(recovered, 300, interval=0.05, what="recovery")
        recover = time.perf_counter() - t_back
        time.sleep(1)
    finally:
        stop.set()
        thread.join()
        unwritten = log.close()
        proxy.close()
    if url is not None:
        stored = pg_rows(url, layout)
    else:
        now = dt.datetime.now(dt.UTC)
        day = dt.timedelta(days=1)
        stored = read_served("car_loan", now - day, now + day, layout.event_time, root).rows.height
    return {
        "backend": backend,
        "detect_s": detect,
        "queued_at_refusal": queued_at_refusal,
        "recover_s": recover,
        "answered": counts["answered"],
        "refused_polls": counts["refused"],
        "stored": stored,
        "unwritten_at_close": unwritten,
    }


# --- the report --------------------------------------------------------------------------


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def report(args: argparse.Namespace, results: dict[str, Any], started: str, before: str) -> str:
    from ml_assets.serve.service import SWITCH_INTERVAL

    lines = [
        f"{started}, {os.cpu_count()} cores, load average before {before}, after {load()}; "
        f"polars {pl.__version__}, Python {platform.python_version()}",
        "",
        "**1. Flush: one flush of N queued one-row requests (median of "
        f"{args.repeat} interleaved rounds).** ms per flush (rows/s); `frame` is building the "
        "typed frame, shared by all three, included in each.",
        "",
        "| rows per flush | frame ms | local ms (rows/s) | s3 ms (rows/s) | "
        "postgresql ms (rows/s) | postgresql / s3 time |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["flush"]:
        cells = [f"{r[f'{b}_ms']:.1f} ({r[f'{b}_rows_s']:,.0f})" for b in BACKENDS]
        lines.append(
            f"| {r['rows']:,} | {r['frame_ms']:.1f} | {' | '.join(cells)} | "
            f"{r['postgresql_ms'] / r['s3_ms']:.2f}x |"
        )
    lines += [
        "",
        f"**2. Request path: {args.rate:g} requests/s for {args.seconds:g} s, the flusher "
        f"writing every second, GIL switch interval {1000 * SWITCH_INTERVAL:g} ms as in a "
        f"serving worker; {args.rounds} interleaved rounds, the round with the median p99 shown (all "
        "rounds' p99 in the last column).** Per request (µs): ~0.2 ms of work + entry + "
        "append; `append` alone.",
        "",
        "| log | requests | rows written | p50 µs | p99 µs | max µs | append p50 µs | "
        "append p99 µs | p99 / no log | p99 of each round µs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    base = next(r for r in results["request"] if r["backend"] == "none")["p99_us"]
    for r in results["request"]:
        lines.append(
            f"| {r['backend']} | {r['requests']:,} | {r['written']:,} | {r['p50_us']:.0f} | "
            f"{r['p99_us']:.0f} | {r['max_us']:.0f} | {r['append_p50_us']:.1f} | "
            f"{r['append_p99_us']:.1f} | {r['p99_us'] / base:.2f}x | "
            f"{', '.join(f'{x:.0f}' for x in r['p99_rounds'])} |"
        )
    for shape in results["week"]:
        rows0 = shape[0]
        lines += [
            "",
            f"**3. A week: {rows0['segments']:,} segments ({rows0['segments'] // 7:,} a day) "
            f"of {rows0['rows'] // rows0['segments']:,} rows = {rows0['rows']:,} rows.** What "
            "the week takes in the store (files, objects, or the table with its index), the "
            "write time (all flushes), one monitoring read of the week's events, and the same "
            f"read once {args.later_weeks} more weeks are logged after it.",
            "",
            "| store | bytes per row stored | write s | read week s | read / postgresql | "
            "older week, skip by name s | older week, no skip s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        pg = next(r for r in shape if r["backend"] == "postgresql")
        for r in shape:
            lines.append(
                f"| {r['backend']} | {r['bytes_per_row']:.0f} | {r['write_s']:.1f} | "
                f"{r['read_s']:.2f} | "
                f"{r['read_s'] / pg['read_s']:.2f}x | {r['old_read_s']:.2f} | "
                f"{r['old_read_noskip_s']:.2f} |"
            )
    lines += [
        "",
        f"**4. The store cut off for {args.outage:g} s** (flush every 0.2 s, queue bound 5,000 "
        "rows, 200 requests/s accepted while the log accepts).",
        "",
        "| store | s until refused | rows queued then | s until accepting, queue written "
        "| rows answered | rows in the store | lost |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["outage"]:
        lines.append(
            f"| {r['backend']} | {r['detect_s']:.1f} | {r['queued_at_refusal']:,} | "
            f"{r['recover_s']:.1f} | {r['answered']:,} | {r['stored']:,} | "
            f"{r['answered'] - r['stored']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3, help="request-path rounds")
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=["288x10", "288x500"],
        help="week shapes: <segments per day>x<rows per segment>",
    )
    parser.add_argument("--later-weeks", type=int, default=2)
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the script")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeat, args.seconds, args.rounds = [10, 1000], 2, 2.0, 1
        args.shapes, args.later_weeks, args.outage = ["24x100"], 1, 3.0
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    settings.disable_telemetry()
    # the outage's failing writes, one line each, would bury the results
    logging.getLogger("ml_assets.serve.prediction_log").setLevel(logging.ERROR)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    before = load()
    layout = car_loan_layout()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_predlog_") as tmp:
        stores = Stores(Path(tmp), args.pg_url)
        try:
            results["flush"] = bench_flush(stores, layout, args.sizes, args.repeat)
            results["request"] = bench_request_path(
                stores, layout, args.rate, args.seconds, args.rounds
            )
            results["week"] = []
            for shape in args.shapes:
                per_day, rows = (int(x) for x in shape.split("x"))
                results["week"].append(bench_week(stores, layout, per_day, rows, args.later_weeks))
            results["outage"] = bench_outage(stores, layout, args.outage)
        finally:
            stores.close()
            stores.drop_extra()
    text = report(args, results, started, before)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
