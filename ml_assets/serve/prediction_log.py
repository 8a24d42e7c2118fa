"""The prediction log: every served prediction, durable, readable as a partitioned dataset.

Layout: ``<root>/<dataset>/date=YYYY-MM-DD/<segment>.parquet`` (zstd), segments named
``part-<time>-<host>-<pid>-<seq>-at-<first>-<last>.parquet``, one row per predicted record:
request id (the server's, unique), the client's request id (when it sent one), row within the
request, time, model version, endpoint, protocol, request latency, the record's key and event
time (predict by keys), every model input (the features the model saw, typed like the feature
table) and the outputs (``probability`` / ``probability_<class>`` and ``prediction``, as batch
scoring names them). The date folder is the request time's; ``<first>``/``<last>`` bound the
segment's event times (a row without one counts at its request time), to the second, so a
reader of a week of events skips by name, without opening them, the segments that cannot hold
any (what keeps an object store's reads from growing with everything logged since: see
:func:`read_served`).

The root is a local folder (the embedded default) or any fsspec URL (``s3://bucket/prefix``, the
production profile), so serving workers on several hosts write one log that monitoring on
another machine reads. Writing is off the hot path: :meth:`PredictionLog.append` only puts the
request's already validated rows on a deque; a background thread turns what has piled up into
one parquet segment per date every ``flush_seconds`` (or sooner when many rows wait). A reader
never sees half a segment: on a local disk it is written to a temporary name, fsynced and
renamed; on an object store it is one PUT, which is atomic (the object appears whole or not at
all). :meth:`PredictionLog.close` (called on SIGTERM/SIGINT through the service's shutdown hook,
and at exit) drains the deque: a response is sent only after its rows are on the deque, so every
2xx is logged.
"""

from __future__ import annotations

import atexit
import collections
import datetime as dt
import io
import itertools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ml_assets import settings
from ml_assets.contracts.model import ProblemType
from ml_assets.problems import problem_kind

if TYPE_CHECKING:
    from upath import UPath

log = logging.getLogger(__name__)

UTC_US = pl.Datetime("us", "UTC")
BASE_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "client_request_id": pl.String(),
    "row": pl.Int32(),
    "ts": UTC_US,
    "model_version": pl.String(),
    "endpoint": pl.String(),
    "protocol": pl.String(),
    "latency_ms": pl.Float64(),
}


@dataclass(frozen=True)
class LogLayout:
    """The typed columns of a dataset's log rows besides the base columns."""

    dataset: str
    key: tuple[tuple[str, pl.DataType], ...]
    event_time: str
    features: tuple[tuple[str, pl.DataType], ...]
    problem_type: ProblemType
    classes: tuple[Any, ...]

    def output_schema(self) -> dict[str, pl.DataType]:
        """The problem kind's prediction columns, as batch scoring writes them."""
        return problem_kind(self.problem_type).output_schema(self.classes)

    def schema(self) -> dict[str, pl.DataType]:
        return {
            **BASE_SCHEMA,
            **dict(self.key),
            self.event_time: UTC_US,
            **dict(self.features),
            **self.output_schema(),
        }


def layout_for(spec: Any, bundle: Any) -> LogLayout:
    """The log layout of a runtime's spec (keys, event time) and model (features, classes)."""
    from ml_assets.features.spec import COLUMN_DTYPES

    ent = spec.contract.entity
    dtypes = spec.dtypes()
    return LogLayout(
        dataset=spec.dataset,
        key=tuple((k, COLUMN_DTYPES[ent.columns[k].type]) for k in spec.key),
        event_time=spec.event_time,
        features=tuple((f, dtypes[f]) for f in bundle.features),
        problem_type=bundle.problem_type,
        classes=tuple(bundle.classes),
    )


@dataclass(slots=True)
class LogEntry:
    """One answered request's predictions, as queued for the log."""

    request_id: str
    ts_us: int
    endpoint: str
    protocol: str
    latency_us: int
    model_version: str
    rows: Sequence[Sequence[Any]]
    scores: np.ndarray = field(default_factory=lambda: np.empty(0))
    labels: list[Any] | None = None
    keys: list[list[Any]] | None = None
    event_times: list[dt.datetime] | None = None
    client_request_id: str | None = None
    """The client's own id (``X-Request-Id``), when it sent one; ``request_id`` is always the
    server's, unique per request."""


HOST = re.sub(r"[^A-Za-z0-9]+", "_", socket.gethostname()) or "host"
"""This host, in segment names: workers on several hosts write one log, and pids repeat."""
STAMP = "%Y%m%dT%H%M%SZ"
EVENTS = re.compile(r"-at-(\d{8}T\d{6}Z)-(\d{8}T\d{6}Z)\.parquet$")
"""The event-time bounds in a segment's name (a name without them is read, whatever it holds)."""
_SEQUENCE = itertools.count(1)
"""Segment numbers of this process, shared by its logs (two logs of one dataset in one process
must not write the same name)."""
FETCH_BATCH = 256
"""Segments an object-store reader fetches at once (concurrently), then parses and filters."""


def dataset_dir(root: str | Path | UPath, dataset: str) -> Path | UPath:
    """A dataset's folder of the log under ``root`` (a folder, or an fsspec URL)."""
    return settings.location(root) / dataset


def _on_disk(path: Path | UPath) -> bool:
    """Whether ``path`` is a local file (temp + fsync + rename) or an object (one PUT)."""
    return isinstance(path, Path) and not settings.is_url(path)


def _stamp(when: dt.datetime, up: bool) -> str:
    """``when`` to the second, rounded down (``up``: up), as named in a segment."""
    second = when.replace(microsecond=0)
    if up and second != when:
        second += dt.timedelta(seconds=1)
    return second.strftime(STAMP)


class PredictionLog:
    """Appends predictions from any thread; a background thread writes parquet segments.

    The queue is bounded: :meth:`refusal` says why a new prediction must be refused (the
    runtime answers it 503 before scoring it, and readiness goes 503) while the queue holds
    ``max_pending_rows`` or more, or while the last write failed (a full or read-only disk),
    until a write succeeds again. Rows already answered stay queued and are retried every
    ``flush_seconds``; a failed write leaves no temporary file behind.
    """

    def __init__(
        self,
        layout: LogLayout,
        root: str | Path,
        *,
        flush_seconds: float = 1.0,
        max_pending_rows: int = 50_000,
    ) -> None:
        self.layout = layout
        self.root = settings.location(root)
        self.directory = dataset_dir(self.root, layout.dataset)
        self.flush_seconds = flush_seconds
        self.max_pending_rows = max_pending_rows
        # write early once a tenth of the bound waits, not only every flush_seconds
        self._wake_rows = max(1, max_pending_rows // 10)
        self._pending: collections.deque[LogEntry] = collections.deque()
        self._pending_rows = 0
        self._count_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self.rows_written = 0
        self.segments_written = 0
        self.failing: str | None = None
        """The error of the last write, while writing fails (None once one succeeds)."""
        self.unwritten_rows = 0
        """Rows not written when :meth:`close` returned (reported, never silently dropped)."""
        self.closed = False
        self._thread = threading.Thread(
            target=self._run, name=f"prediction-log-{layout.dataset}", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    # --- the hot path ---------------------------------------------------------------------

    def append(self, entry: LogEntry) -> None:
        """Queue one request's predictions (O(1), no I/O). Never refuses: the request was
        admitted (:meth:`refusal`) before it was scored."""
        self._pending.append(entry)
        with self._count_lock:
            self._pending_rows += len(entry.rows)
            wake = self._pending_rows >= self._wake_rows
        if wake:
            self._wake.set()

    @property
    def pending_rows(self) -> int:
        """Rows answered and not written yet."""
        return self._pending_rows

    def refusal(self) -> str | None:
        """Why a new prediction must be refused now, or None to accept it (O(1))."""
        if self.failing is not None:
            return f"the prediction log cannot be written ({self.failing})"
        if self._pending_rows >= self.max_pending_rows:
            return (
                f"the prediction log is {self._pending_rows} rows behind (limit "
                f"{self.max_pending_rows})"
            )
        if self._stop.is_set():
            return "the prediction log is closing"
        return None

    # --- the writer -----------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            was_failing = self.failing
            try:
                self.flush()
            except Exception as exc:  # keep the writer alive; entries stay queued for the next try
                if was_failing is None:  # the first failure with its traceback, then one line
                    log.exception("prediction log: writing a segment failed; retrying")
                else:
                    log.warning(
                        "prediction log: writing still fails (%s: %s); %d rows queued",
                        type(exc).__name__,
                        exc,
                        self._pending_rows,
                    )
            else:
                if was_failing is not None:
                    log.warning("prediction log: writing works again (%s)", self.directory)
        try:
            self.flush()
        except Exception as exc:  # close() reports what is left
            log.error("prediction log: the final write failed: %s: %s", type(exc).__name__, exc)

    def flush(self) -> int:
        """Write everything queued so far; return the number of rows written. On a failure
        the entries not written go back to the front of the queue and the error is raised."""
        with self._flush_lock:
            entries: list[LogEntry] = []
            pop = self._pending.popleft
            while True:
                try:
                    entries.append(pop())
                except IndexError:
                    break
            if not entries:
                return 0
            groups = self._by_date(entries)
            written_rows = 0
            try:
                while groups:
                    day, group = groups[0]
                    written_rows += self._write(day, group)
                    groups.pop(0)
                    with self._count_lock:
                        self._pending_rows -= sum(len(e.rows) for e in group)
            except Exception as exc:
                self._pending.extendleft(reversed([e for _, g in groups for e in g]))
                self.failing = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                self.rows_written += written_rows
            self.failing = None
            return written_rows

    @staticmethod
    def _by_date(entries: list[LogEntry]) -> list[tuple[dt.date, list[LogEntry]]]:
        by_date: dict[dt.date, list[LogEntry]] = {}
        for e in entries:
            day = dt.datetime.fromtimestamp(e.ts_us / 1e6, dt.UTC).date()
            by_date.setdefault(day, []).append(e)
        return sorted(by_date.items(), key=lambda item: item[0])

    def segment_name(self, frame: pl.DataFrame) -> str:
        """A new segment's name: unique across hosts, workers and the logs of a worker, in write
        order within a worker, with the bounds of its rows' event times (:data:`EVENTS`)."""
        seq = next(_SEQUENCE)
        when = frame.select(
            pl.coalesce(pl.col(self.layout.event_time), pl.col("ts")).alias("t")
        ).get_column("t")
        first, last = when.min(), when.max()
        if not isinstance(first, dt.datetime) or not isinstance(last, dt.datetime):
            first = last = dt.datetime.now(dt.UTC)  # an empty segment: any bounds, it holds no row
        return (
            f"part-{time.time_ns() // 1000}-{HOST}-{os.getpid()}-{seq:06d}"
            f"-at-{_stamp(first, up=False)}-{_stamp(last, up=True)}.parquet"
        )

    def _write(self, day: dt.date, group: list[LogEntry]) -> int:
        """One segment of one date. On a local disk: written to a temporary name, synced,
        renamed (a reader never sees half a file), the folder synced; a failed write removes
        its temp file. On an object store: one PUT, atomic by itself (no temporary object)."""
        frame = self.frame(group)
        folder = self.directory / f"date={day.isoformat()}"
        name = self.segment_name(frame)
        if not _on_disk(folder):
            body = io.BytesIO()
            frame.write_parquet(body, compression="zstd")
            target = folder / name
            target.fs.pipe_file(target.path, body.getvalue())  # one PUT below 100 MB
            self.segments_written += 1
            return frame.height
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        try:
            with open(tmp, "wb") as out:
                frame.write_parquet(out, compression="zstd")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, folder / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(folder)
        self.segments_written += 1
        return frame.height

    def frame(self, entries: list[LogEntry]) -> pl.DataFrame:
        """The log rows of some queued requests, typed by the layout."""
        lay = self.layout
        counts = [len(e.rows) for e in entries]
        n = sum(counts)

        def repeat(values: list[Any]) -> list[Any]:
            out: list[Any] = []
            for v, c in zip(values, counts, strict=True):
                out.extend([v] * c)
            return out

        cols: dict[str, pl.Series] = {
            "request_id": pl.Series(repeat([e.request_id for e in entries]), dtype=pl.String),
            "client_request_id": pl.Series(
                repeat([e.client_request_id for e in entries]), dtype=pl.String
            ),
            "row": pl.Series([i for c in counts for i in range(c)], dtype=pl.Int32),
            "ts": pl.Series(repeat([e.ts_us for e in entries]), dtype=pl.Int64).cast(UTC_US),
            "model_version": pl.Series(repeat([e.model_version for e in entries]), dtype=pl.String),
            "endpoint": pl.Series(repeat([e.endpoint for e in entries]), dtype=pl.String),
            "protocol": pl.Series(repeat([e.protocol for e in entries]), dtype=pl.String),
            "latency_ms": pl.Series(
                repeat([e.latency_us / 1000 for e in entries]), dtype=pl.Float64
            ),
        }
        for j, (name, dtype) in enumerate(lay.key):
            values: list[Any] = []
            for e in entries:
                if e.keys:
                    values.extend(k[j] for k in e.keys)
                else:
                    values.extend([None] * len(e.rows))
            cols[name] = pl.Series(values, dtype=dtype, strict=False)
        times: list[Any] = []
        for e in entries:
            times.extend(e.event_times if e.event_times else [None] * len(e.rows))
        cols[lay.event_time] = pl.Series(times, dtype=UTC_US, strict=False)
        rows = [r for e in entries for r in e.rows]
        for j, (name, dtype) in enumerate(lay.features):
            cols[name] = pl.Series([r[j] for r in rows], dtype=dtype, strict=False)
        scores = np.concatenate([np.asarray(e.scores, dtype=np.float64) for e in entries])
        labels = [v for e in entries for v in (e.labels or [])]
        kind = problem_kind(lay.problem_type)
        cols.update(kind.output_columns(scores, labels, lay.classes))
        frame = pl.DataFrame(cols)
        assert frame.height == n
        return frame

    def close(self, timeout: float = 30.0) -> int:
        """Stop the writer after it has written everything queued (idempotent); return the
        number of rows that could not be written (0 when all are), each such row reported
        in the log with the count and the error."""
        if self.closed:
            return self.unwritten_rows
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self._pending:  # the writer died, timed out or failed: try the rest here
            try:
                self.flush()
            except Exception as exc:
                log.error(
                    "prediction log: writing at close failed: %s: %s", type(exc).__name__, exc
                )
        self.closed = True
        atexit.unregister(self.close)
        left = list(self._pending)
        self.unwritten_rows = sum(len(e.rows) for e in left)
        if self.unwritten_rows:
            log.error(
                "prediction log %s closed with %d answered rows of %d requests NOT written to "
                "%s (%s); %d rows in %d segments were written",
                self.layout.dataset,
                self.unwritten_rows,
                len(left),
                self.directory,
                self.failing or "writer stopped",
                self.rows_written,
                self.segments_written,
            )
        else:
            log.info(
                "prediction log %s closed: %d rows in %d segments",
                self.layout.dataset,
                self.rows_written,
                self.segments_written,
            )
        return self.unwritten_rows


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - not on Linux
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def set_aside(
    dataset: str, suffix: str, root: str | Path | UPath | None = None
) -> Path | UPath | None:
    """Move a dataset's log to ``<dataset>.<suffix>`` beside it (kept, not deleted), so later
    reads start from an empty log; return where it went (None: there was no log). On an object
    store every object is copied, then the originals deleted (``Path.rename`` of a UPath prefix
    moves nothing there, and fsspec's recursive ``mv`` fails on the prefix itself)."""
    base = dataset_dir(
        root if root is not None else settings.current().prediction_log_path, dataset
    )
    _fresh(base)
    if not base.exists():
        return None
    aside = base.with_name(f"{base.name}.{suffix}")
    if _on_disk(base):
        base.rename(aside)
    else:
        fs = base.fs
        objects = fs.find(base.path)
        fs.copy(objects, [aside.path + o[len(base.path) :] for o in objects])
        fs.rm(objects)
        fs.invalidate_cache()
    return aside


# --- reading -----------------------------------------------------------------------------------


def _as_utc(value: dt.datetime | dt.date) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _fresh(base: Path | UPath) -> None:
    """Forget the object store's cached listings, so a reader sees the segments written since
    its last read (fsspec caches listings per filesystem instance)."""
    if not _on_disk(base):
        base.fs.invalidate_cache()


def _date_folders(base: Path | UPath, first: dt.date, last: dt.date | None) -> list[Path | UPath]:
    """The ``date=`` folders of ``base`` from ``first`` to ``last`` (None: all later), sorted."""
    try:
        children = list(base.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    lo, hi = first.isoformat(), last.isoformat() if last else None
    folders = [
        f
        for f in children
        if f.name.startswith("date=") and f.name[5:] >= lo and (hi is None or f.name[5:] <= hi)
    ]
    if _on_disk(base):  # (on an object store a listed prefix is a folder: no request more)
        folders = [f for f in folders if f.is_dir()]
    return sorted(folders, key=lambda f: f.name)


def _segments(folder: Path | UPath) -> list[Path | UPath]:
    """A date folder's segments in name order (write order within a worker)."""
    return sorted(folder.glob("*.parquet"), key=lambda p: p.name)


def _may_hold(path: Path | UPath, lo: dt.datetime, hi: dt.datetime) -> bool:
    """Whether a segment's name allows rows with (event) times in [lo, hi)."""
    found = EVENTS.search(path.name)
    if found is None:
        return True
    first, last = (dt.datetime.strptime(g, STAMP).replace(tzinfo=dt.UTC) for g in found.groups())
    return first < hi and last >= lo


def _scans(paths: list[Path | UPath]) -> Iterator[tuple[Path | UPath, pl.LazyFrame | Exception]]:
    """Each segment as a lazy frame, or the error that stopped reading it. Local files are
    scanned in place (parquet statistics skip what a filter excludes); objects are fetched
    :data:`FETCH_BATCH` at a time, concurrently (one GET each), and parsed from memory."""
    remote = [p for p in paths if not _on_disk(p)]
    for path in paths:
        if _on_disk(path):
            yield path, pl.scan_parquet(path)
    for start in range(0, len(remote), FETCH_BATCH):
        batch = remote[start : start + FETCH_BATCH]
        fs = batch[0].fs
        blobs = fs.cat([p.path for p in batch], on_error="return")
        for path in batch:
            blob = blobs.get(fs._strip_protocol(path.path))
            if isinstance(blob, Exception):
                yield path, blob
            elif not isinstance(blob, bytes):
                yield path, FileNotFoundError(f"{path} was listed but not returned")
            else:
                yield path, pl.scan_parquet(io.BytesIO(blob))


def log_files(
    dataset: str,
    start: dt.datetime | dt.date,
    end: dt.datetime | dt.date,
    root: str | Path | UPath | None = None,
) -> list[Path | UPath]:
    """The segments of the date partitions overlapping [start, end)."""
    base = dataset_dir(
        root if root is not None else settings.current().prediction_log_path, dataset
    )
    lo, hi = _as_utc(start), _as_utc(end)
    _fresh(base)
    return [p for f in _date_folders(base, lo.date(), hi.date()) for p in _segments(f)]


def read_prediction_log(
    dataset: str,
    start: dt.datetime | dt.date,
    end: dt.datetime | dt.date,
    root: str | Path | UPath | None = None,
) -> pl.DataFrame:
    """Logged predictions of a dataset with time in [start, end) (naive = UTC), oldest first.

    Segments written by different model versions may differ in their feature columns; they are
    stacked with the union of the columns (missing ones null). A segment that cannot be read
    is an error here (:func:`read_served` reports it instead).
    """
    lo, hi = _as_utc(start), _as_utc(end)
    files = log_files(dataset, lo, hi, root)
    frames = []
    for path, scan in _scans(files):
        try:
            if isinstance(scan, Exception):
                raise scan
            frames.append(scan.collect())
        except Exception as exc:
            raise OSError(f"prediction log segment {path}: {exc}") from exc
    if not frames:
        return pl.DataFrame(schema=BASE_SCHEMA)
    frame = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    return frame.filter(
        (pl.col("ts") >= pl.lit(lo, UTC_US)) & (pl.col("ts") < pl.lit(hi, UTC_US))
    ).sort(["ts", "request_id", "row"], maintain_order=True)


@dataclass(frozen=True)
class ServedRows:
    """The logged predictions of a partition's events, and the segments that could not be read."""

    rows: pl.DataFrame
    unreadable: list[tuple[Path | UPath, str]]


def read_served(
    dataset: str,
    start: dt.datetime | dt.date,
    end: dt.datetime | dt.date,
    event_time: str,
    root: str | Path | UPath | None = None,
) -> ServedRows:
    """Logged predictions of the events in [start, end) (naive = UTC), oldest event first.

    A served prediction belongs to the partition of the event it predicts: its ``event_time``
    when the request carried one, else its request time ``ts``. Predictions are served at or
    after their event (live within seconds; a replay or a backlog much later), so every date
    folder from ``start`` on is listed; a segment whose name bounds its event times outside
    [start, end) is skipped unopened, and parquet statistics skip more in the rest. A segment
    that cannot be read (corrupt, cut short, or its object gone) is skipped and returned in
    ``unreadable`` with the reason, never silently: the caller reports it. Segments of an older
    model version with fewer columns are stacked with the union of the columns (missing ones
    null).
    """
    lo, hi = _as_utc(start), _as_utc(end)
    base = dataset_dir(
        root if root is not None else settings.current().prediction_log_path, dataset
    )
    _fresh(base)
    paths = [
        p
        for folder in _date_folders(base, lo.date(), None)
        for p in _segments(folder)
        if not event_time or _may_hold(p, lo, hi)
    ]
    when = pl.col(event_time) if event_time else pl.lit(None, UTC_US)
    frames: list[pl.DataFrame] = []
    unreadable: list[tuple[Path | UPath, str]] = []
    for path, scan in _scans(paths):
        try:
            if isinstance(scan, Exception):
                raise scan
            names = scan.collect_schema().names()
            at = pl.coalesce(when, "ts") if event_time in names else pl.col("ts")
            frames.append(
                scan.filter((at >= pl.lit(lo, UTC_US)) & (at < pl.lit(hi, UTC_US))).collect()
            )
        except Exception as exc:  # a corrupt segment must not hide the others
            unreadable.append((path, f"{type(exc).__name__}: {exc}"))
    frames = [f for f in frames if f.height]
    if not frames:
        return ServedRows(pl.DataFrame(schema=BASE_SCHEMA), unreadable)
    frame = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    order = [event_time] if event_time in frame.columns else []
    return ServedRows(
        frame.sort([*order, "ts", "request_id", "row"], maintain_order=True, nulls_last=True),
        unreadable,
    )
