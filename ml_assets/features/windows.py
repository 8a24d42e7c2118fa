"""Trailing-window aggregates: events, the as-of machinery, and the online store's snapshot.

* :func:`entity_events` / :func:`label_events` turn entity rows and labels into events (group
  columns, value columns and the time ``__t`` at which each happened).
* :func:`window_aggregates` computes trailing-window aggregates for query points (group value,
  time) from event frames, with per-group cumulative sums read at two places per point, the
  latest event strictly before t and the latest strictly before t - window: the window of a
  point at time t is [t - window, t), so an event at t or later is never used. The places are
  found by binary searches of each group's event times when the events hold a few groups, by
  strict backward ``join_asof`` lookups by group otherwise; both give the same values, bit for
  bit. Offline the query points are the entity rows; the online store runs the very same
  function for one point per group at its as-of time (:func:`aggregate_snapshot`).
* :func:`group_text` / :func:`from_group_text`: group values as the store keys them;
  :func:`to_utc`: the one way a time becomes an aware UTC datetime.

The machinery that needs the most care (ties at one instant, encoded group values, the order of
the outputs) lives here on its own; :mod:`ml_assets.features.compute` puts it together with the
row transforms. No Dagster here: the serving path imports it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import polars as pl

from ml_assets.contracts.model import ColumnType
from ml_assets.features.spec import COLUMN_DTYPES, Agg, Aggregate, FeatureSpec, Source

TIME = "__t"
CHUNK_ROWS = 1_000_000
"""Points (rows) whose features are computed at a time: the temporaries of the window
arithmetic and of the row transforms stay this many rows long, whatever the table's size."""
ROW = "__row"
UTC_US = pl.Datetime("us", "UTC")
STREAMING = "streaming"
"""The engine that collects lazy inputs (scans, the label join): polars' streaming engine reads,
filters and joins them in batches, so the whole files are not in memory besides the result."""


# --- events ----------------------------------------------------------------------------------


def _needed(spec: FeatureSpec, source: Source) -> list[str]:
    cols: list[str] = []
    for a in spec.aggregates:
        if a.source is source:
            cols.append(a.group_by)
            if a.column is not None and source is Source.ENTITY:
                cols.append(a.column)
    return list(dict.fromkeys(cols))


def entity_events(spec: FeatureSpec, entity: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Entity rows as events at their event time: key, time, group and value columns."""
    cols = [c for c in _needed(spec, Source.ENTITY) if c not in spec.key]
    return entity.lazy().select(*spec.key, pl.col(spec.event_time).alias(TIME), *cols)


def label_events(
    spec: FeatureSpec,
    labels: pl.DataFrame | pl.LazyFrame,
    entity: pl.DataFrame | pl.LazyFrame,
) -> pl.LazyFrame:
    """Labels as events at their ``observed_at``, each with the group columns of its entity row.

    A label whose entity row is not in ``entity`` has no group and is left out. Entity keys are
    unique (validated rows: duplicates are quarantined).
    """
    lab = spec.contract.labels
    values = [a.column for a in spec.aggregates if a.source is Source.LABELS and a.column]
    groups = [c for c in _needed(spec, Source.LABELS) if c not in spec.key]
    renamed = dict(zip(lab.key_columns, spec.key, strict=True))
    left = labels.lazy().select(
        *[pl.col(k).alias(renamed[k]) for k in lab.key_columns],
        pl.col(lab.observed_at).alias(TIME),
        *dict.fromkeys(values),
    )
    right = entity.lazy().select(*spec.key, *groups)
    if len(spec.key) == 1 and spec.column_type(spec.key[0]) is ColumnType.INT:
        # One integer key: both sides sorted by it and merged by an as-of join (the equal key,
        # if there is one). This takes about two thirds of the time and three quarters of the
        # memory of a hash join of ten million labels with ten million rows, and is no slower
        # on shuffled keys. A side already in key order (the usual case: both are written in
        # key order) is not sorted again: a lazy sort costs a few times the look at the keys.
        k = spec.key[0]
        match = "__match"
        if not _in_key_order(labels, lab.key_columns[0]):
            left = left.sort(k)
        if not _in_key_order(entity, k):
            right = right.sort(k)
        return (
            left.join_asof(
                right.with_columns(pl.col(k).alias(match)),
                on=k,
                strategy="backward",
                check_sortedness=False,
            )
            .filter(pl.col(match) == pl.col(k))
            .drop(match)
        )
    return left.join(right, on=spec.key, how="inner")


def _in_key_order(frame: pl.DataFrame | pl.LazyFrame, key: str) -> bool:
    """Whether ``key`` has no null and never decreases down the frame (a lazy frame's key
    column is read)."""
    k = pl.col(key)
    unsorted = frame.lazy().select(k.is_null().any() | (k.diff() < 0).any()).collect().item()
    return not unsorted


# --- window aggregates -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Bucket:
    """Aggregates that share their events: same source and grouping column."""

    source: Source
    group_by: str
    aggregates: tuple[Aggregate, ...]


def _buckets(aggregates: Iterable[Aggregate]) -> list[_Bucket]:
    by: dict[tuple[Source, str], list[Aggregate]] = {}
    for a in aggregates:
        by.setdefault((a.source, a.group_by), []).append(a)
    return [_Bucket(s, g, tuple(aggs)) for (s, g), aggs in by.items()]


def _contributions(a: Aggregate, i: int) -> list[pl.Expr]:
    """Per-event columns of one aggregate, to be accumulated."""
    p = f"__a{i}"
    if a.agg is Agg.COUNT:
        return [pl.lit(1, pl.Int64).alias(f"{p}_n")]
    assert a.column is not None
    col = pl.col(a.column)
    if a.agg is Agg.LAST:
        return [col.alias(f"{p}_v"), pl.when(col.is_not_null()).then(pl.col(TIME)).alias(f"{p}_lt")]
    if a.agg is Agg.RATE:
        value = (col == pl.lit(a.equals)).cast(pl.Float64)
    else:
        value = col.cast(pl.Float64)
    return [value.fill_null(0.0).alias(f"{p}_s"), col.is_not_null().cast(pl.Int64).alias(f"{p}_n")]


def _cumulative(
    spec: FeatureSpec, bucket: _Bucket, events: pl.DataFrame, index: dict[str, int]
) -> pl.DataFrame:
    """Running totals per group of the bucket's aggregates, one row per event, sorted by time.

    Several events of a group may share a time: the as-of join takes the last row of such a
    run (polars' backward search picks the last row with a smaller key), whose running totals
    include every event of that instant.
    """
    g = bucket.group_by
    per_event = [e for a in bucket.aggregates for e in _contributions(a, index[a.name])]
    # Events at one instant are ordered by key, so "last" never depends on file order.
    has_last = any(a.agg is Agg.LAST for a in bucket.aggregates)
    order = [TIME, *spec.key] if has_last else [TIME]
    running: list[pl.Expr] = []
    for a in bucket.aggregates:
        p = f"__a{index[a.name]}"
        if a.agg is Agg.LAST:
            running += [
                pl.col(f"{p}_v").forward_fill().over(g),
                pl.col(f"{p}_lt").forward_fill().over(g),
            ]
        elif a.agg is Agg.COUNT:
            running.append(pl.col(f"{p}_n").cum_sum().over(g))
        else:
            running += [pl.col(f"{p}_s").cum_sum().over(g), pl.col(f"{p}_n").cum_sum().over(g)]
    ordered = events.lazy().filter(pl.col(g).is_not_null())
    # Entity events usually arrive in time order already: skip the sort then.
    if has_last or not events.get_column(TIME).is_sorted():
        ordered = ordered.sort(order, maintain_order=True)
    return (
        ordered.select(g, TIME, *per_event)
        .with_columns(running)  # cum_sum / forward_fill over g follow the time order
        .collect()
        .rechunk()  # gathers from one buffer are several times faster than from many chunks
    )


def _event_columns(spec: FeatureSpec, buckets: list[_Bucket], source: Source, g: str) -> list[str]:
    """Columns of ``source`` events that the buckets grouping by ``g`` read (besides g, time)."""
    cols: list[str] = []
    for b in buckets:
        if b.source is source and b.group_by == g:
            if any(a.agg is Agg.LAST for a in b.aggregates):
                cols += spec.key  # ties at one instant are ordered by key
            cols += [a.column for a in b.aggregates if a.column is not None]
    return [c for c in dict.fromkeys(cols) if c not in (g, TIME)]


def _running_cols(a: Aggregate, i: int) -> list[str]:
    p = f"__a{i}"
    if a.agg is Agg.COUNT:
        return [f"{p}_n"]
    if a.agg is Agg.LAST:
        return [f"{p}_v", f"{p}_lt"]
    return [f"{p}_s", f"{p}_n"]


def _latest_before(points: pl.DataFrame, keys: pl.DataFrame, g: str, at: pl.Expr) -> pl.Series:
    """Row number in ``keys`` (group, time; sorted by time) of the latest event of each point's
    group strictly before ``at``; null when there is none. One value per point, in order.

    Only the row number comes back from the as-of join (not the running totals themselves):
    the join's output stays one narrow column whatever the number of aggregates.
    """
    left = points.select(g, at.alias(TIME))
    joined = left.join_asof(
        keys,
        on=TIME,
        by=g,
        strategy="backward",
        allow_exact_matches=False,  # strictly before: an event at the point's time is not used
        check_sortedness=False,  # both sides are sorted by time by the caller
    )
    return joined.get_column(ROW)


def _encode(g: str, frames: list[pl.DataFrame]) -> list[pl.DataFrame]:
    """``frames`` with text column ``g`` turned into integer codes that agree across them: the
    codes of the values present (a category's allowed values are coded as the events are read,
    in :func:`window_aggregates`)."""
    seen = pl.concat([f.get_column(g).unique() for f in frames]).unique().drop_nulls().sort()
    expr = pl.col(g).cast(pl.Enum(seen.to_list())).to_physical()
    return [f.with_columns(expr) for f in frames]


def _bucket_features(
    spec: FeatureSpec,
    bucket: _Bucket,
    points: pl.DataFrame,
    events: pl.DataFrame,
    index: dict[str, int],
    chunk_rows: int,
    by_group: dict[int, _PointGroups] | None = None,
) -> dict[str, pl.Series]:
    """The bucket's aggregates at ``points`` (group, time; sorted by time), one Series each;
    ``by_group``: where the points' chunks by group are kept for the next bucket of the same
    group column, if they are to be (see :func:`_few_group_features`).

    One as-of lookup at t and one per distinct window at t - window give row numbers of the
    running totals; each aggregate then gathers just its own totals at those rows,
    ``chunk_rows`` points at a time, so no frame holds every running column at every point.
    """
    few = _few_group_features(spec, bucket, points, events, index, chunk_rows, by_group)
    if few is not None:
        return few
    g = bucket.group_by
    dtypes = spec.dtypes()
    running = _cumulative(spec, bucket, events, index)
    keys = running.select(g, TIME).with_row_index(ROW)
    hi = _latest_before(points, keys, g, pl.col(TIME))
    lows = {
        w: _latest_before(points, keys, g, pl.col(TIME) - w)
        for w in dict.fromkeys(a.window_delta for a in bucket.aggregates)
    }
    del keys
    out: dict[str, pl.Series] = {}
    for a in bucket.aggregates:
        p, lo = f"__a{index[a.name]}", lows[a.window_delta]
        cols = _running_cols(a, index[a.name])
        if a.agg is Agg.LAST:
            fresh = pl.col(f"{p}_lt_hi") >= pl.col(TIME) - a.window_delta
            e = pl.when(fresh).then(pl.col(f"{p}_v_hi"))
        else:
            n = pl.col(f"{p}_n_hi").fill_null(0) - pl.col(f"{p}_n_lo").fill_null(0)
            if a.agg is Agg.COUNT:
                e = n
            else:
                s = pl.col(f"{p}_s_hi").fill_null(0.0) - pl.col(f"{p}_s_lo").fill_null(0.0)
                e = s if a.agg is Agg.SUM else pl.when(n > 0).then(s / n)
        # A point without a group has no aggregate (not a zero count).
        e = pl.when(pl.col(g).is_not_null()).then(e).cast(dtypes[a.name]).alias(a.name)
        parts = []
        for i in range(0, points.height, chunk_rows):  # the temporaries stay chunk-sized
            rows = slice(i, i + chunk_rows)
            at = {f"{c}_hi": running.get_column(c).gather(hi[rows]) for c in cols}
            if a.agg is not Agg.LAST:
                at |= {f"{c}_lo": running.get_column(c).gather(lo[rows]) for c in cols}
            parts.append(points[rows].select(g, TIME).with_columns(**at).select(e).to_series())
        out[a.name] = (
            pl.concat(parts, rechunk=True) if parts else pl.Series(a.name, [], dtypes[a.name])
        )
        del parts
    return out


FEW_GROUPS = 64
"""Distinct group values up to which a bucket's aggregates are computed one group at a time by
binary searches (:func:`_few_group_features`); also up to one per ``ROWS_PER_GROUP`` events.
Beyond that (a group per customer, say), as-of joins by group (:func:`_bucket_features`)."""
ROWS_PER_GROUP = 4096


def _segments(codes: np.ndarray) -> tuple[np.ndarray, dict[object, slice]]:
    """A stable order of ``codes`` by value, and each value's slice of that order."""
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    cuts = [0, *(np.flatnonzero(ordered[1:] != ordered[:-1]) + 1).tolist(), len(ordered)]
    return order, {ordered[a].item(): slice(a, b) for a, b in pairwise(cuts) if b > a}


def _numbers(column: pl.Series) -> np.ndarray:
    """A column as a numpy array of numbers (times as their integer ticks; nulls as zeros)."""
    physical = column.to_physical()
    if physical.dtype == pl.Boolean:
        physical = physical.cast(pl.UInt8)
    return physical.fill_null(0).to_numpy()


def _ticks(window: dt.timedelta, dtype: pl.Datetime) -> int:
    """A window in the integer ticks of a datetime type."""
    return pl.Series([window]).cast(pl.Duration(dtype.time_unit or "us")).to_physical().item()


@dataclass(frozen=True)
class _Layout:
    """A bucket's events laid out group after group, each group in time order, behind a zero.

    Group k's places are [start + k, stop + k] (``start``, ``stop``: its slice of ``order``): a
    zero, then one place per event; so a running total after the group's first n events is at
    the group's ``base`` + n. The last place is a zero for points without a group.
    """

    order: np.ndarray
    """Rows of the time-ordered events, group after group (a stable sort by group)."""
    groups: dict[object, slice]
    bases: dict[object, int]
    times: np.ndarray
    """Event times in ``order`` (not padded): what a group's binary searches run over."""

    @classmethod
    def of(cls, codes: np.ndarray, times: np.ndarray) -> _Layout:
        order, groups = _segments(codes)
        bases = {value: seg.start + k for k, (value, seg) in enumerate(groups.items())}
        return cls(order, groups, bases, times[order])

    @property
    def size(self) -> int:
        return len(self.order) + len(self.groups) + 1

    def places(self) -> Iterator[tuple[slice, slice]]:
        """Each group's slice of ``order`` and its events' places."""
        for value, seg in self.groups.items():
            base = self.bases[value]
            yield seg, slice(base + 1, base + 1 + seg.stop - seg.start)

    def padded(self, values: np.ndarray, fill: object = 0) -> np.ndarray:
        """``values`` (one per event, in time order) in their places, ``fill`` elsewhere."""
        out = np.full(self.size, fill, dtype=values.dtype)
        for seg, place in self.places():
            np.take(values, self.order[seg], out=out[place])
        return out

    def running(self, values: np.ndarray) -> np.ndarray:
        """Running totals per group, in time order (a sequential cumulative sum, the very
        floats of the as-of path's ``cum_sum``), zero before each group's first event."""
        totals = self.padded(values)
        for _, place in self.places():
            np.cumsum(totals[place], out=totals[place])
        return totals

    def latest(self, present: np.ndarray) -> np.ndarray:
        """For each place, the place of the latest event so far in its group for which
        ``present`` holds; -1 for none."""
        where = np.where(self.padded(present, False), np.arange(self.size), -1)
        for _, place in self.places():
            mine = where[place.start - 1 : place.stop]  # from the group's zero on
            np.maximum.accumulate(mine, out=mine)
        return where


@dataclass(frozen=True)
class _PointGroups:
    """A chunk of points by group: what the binary searches of every bucket grouping by the
    same column start from (worked out once for all of them)."""

    times: np.ndarray
    """The points' times (ticks), in the chunk's order."""
    has_group: np.ndarray
    rows: dict[object, tuple[np.ndarray, np.ndarray]]
    """Per group value: its points (rows of the chunk, in time order) and their times."""

    @classmethod
    def of(cls, chunk: pl.DataFrame, g: str) -> _PointGroups:
        has_group = _numbers(chunk.get_column(g).is_not_null()).astype(bool)
        times = _numbers(chunk.get_column(TIME))
        local, groups = _segments(_numbers(chunk.get_column(g)))  # nulls: zeros, left out
        rows = {}
        for value, seg in groups.items():
            mine = local[seg]
            mine = mine[has_group[mine]]
            if len(mine):
                rows[value] = mine, times[mine]
        return cls(times, has_group, rows)


def _few_group_features(
    spec: FeatureSpec,
    bucket: _Bucket,
    points: pl.DataFrame,
    events: pl.DataFrame,
    index: dict[str, int],
    chunk_rows: int,
    by_group: dict[int, _PointGroups] | None = None,
) -> dict[str, pl.Series] | None:
    """:func:`_bucket_features` when the events hold a few groups, with exactly the same values
    (None when there are too many groups, group values that are not plain numbers or times that
    are not datetimes).

    The events are laid out group after group (:class:`_Layout`), with the running totals of
    each contribution per group. A point's window is then two binary searches of its group's
    event times, for the events strictly before t and those strictly before t - window, and
    its aggregate the difference of the running totals there, ``chunk_rows`` points at a time:
    no hash table, and every step a pass over contiguous arrays (car_loan's four aggregates at
    a million points: half the CPU time of the as-of joins by group). A count needs no running
    total at all (it is the number of events between the two), nor does the count behind a
    mean or a rate when its column has no null.
    """
    g = bucket.group_by
    gtype, ttype = points.schema[g], points.schema[TIME]
    if not (gtype.is_integer() or gtype == pl.Boolean or gtype.is_temporal()):
        return None
    if not isinstance(ttype, pl.Datetime) or events.schema[TIME] != ttype:
        return None
    ordered = events.filter(pl.col(g).is_not_null()) if events.get_column(g).has_nulls() else events
    if ordered.get_column(g).n_unique() > max(FEW_GROUPS, ordered.height // ROWS_PER_GROUP):
        return None
    has_last = any(a.agg is Agg.LAST for a in bucket.aggregates)
    # Events at one instant are ordered by key, so "last" never depends on file order.
    if has_last or not ordered.get_column(TIME).is_sorted():
        # One thread: a third less CPU time than polars' parallel sort, and no more wall time
        # on a machine busy with other work.
        ordered = ordered.sort(
            [TIME, *spec.key] if has_last else TIME, maintain_order=True, multithreaded=False
        )
    layout = _Layout.of(_numbers(ordered.get_column(g)), _numbers(ordered.get_column(TIME)))
    # What each aggregate reads at a point's two places: running sums (and counts when the
    # column has nulls); for ``last``, the latest event with a value, its time and its row.
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    latest: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, pl.Series]] = {}
    for a in bucket.aggregates:
        if a.agg is Agg.COUNT:
            continue
        assert a.column is not None
        column = ordered.get_column(a.column)
        if a.agg is Agg.LAST:
            latest[a.name] = (
                layout.latest(_numbers(column.is_not_null()).astype(bool)),
                layout.padded(_numbers(ordered.get_column(TIME))),
                layout.padded(np.arange(ordered.height)),
                column,
            )
            continue
        value = (column == a.equals) if a.agg is Agg.RATE else column
        sums[a.name] = layout.running(_numbers(value.cast(pl.Float64).fill_null(0.0)))
        if column.null_count():
            counts[a.name] = layout.running(_numbers(column.is_not_null().cast(pl.Int64)))
    del ordered

    windows = {
        w: _ticks(w, ttype) for w in dict.fromkeys(a.window_delta for a in bucket.aggregates)
    }
    dtypes = spec.dtypes()

    def finish(a: Aggregate, values: np.ndarray, ok: np.ndarray) -> pl.Series:
        """A chunk's values of an aggregate as a polars Series, null where ``ok`` is false (a
        point without a group, or without a value in the window: none, not a zero). Made at
        once, so the numpy temporaries stay one chunk's, reused chunk after chunk."""
        if a.agg is Agg.LAST:  # ``values``: rows of the events' column
            column = latest[a.name][3]
            series = (
                column.gather(pl.Series(values))
                if column.len()
                else pl.repeat(None, len(values), dtype=column.dtype, eager=True)
            )
        else:
            series = pl.Series(a.name, values)
        if not ok.all():
            series = pl.select(pl.when(pl.lit(pl.Series(ok))).then(pl.lit(series))).to_series()
        return series.cast(dtypes[a.name]).alias(a.name)

    parts: dict[str, list[pl.Series]] = {a.name: [] for a in bucket.aggregates}
    for i in range(0, points.height, chunk_rows):  # the temporaries stay chunk-sized
        mine = by_group.get(i) if by_group is not None else None
        if mine is None:
            mine = _PointGroups.of(points.slice(i, chunk_rows), g)
            if by_group is not None:
                by_group[i] = mine
        t, has_group = mine.times, mine.has_group
        # Per point: its group's base, and how many of the group's events lie strictly before
        # t (``before``) and strictly before t - window (``after``). A point without a group,
        # or of a group without events, has none: the last place, a zero.
        base = np.full(len(t), layout.size - 1, dtype=np.int64)
        before = np.zeros(len(t), dtype=np.int64)
        after = {w: np.zeros(len(t), dtype=np.int64) for w in windows}
        for value, seg in layout.groups.items():
            if value not in mine.rows:
                continue
            rows, at = mine.rows[value]
            theirs = layout.times[seg]
            base[rows] = layout.bases[value]
            before[rows] = np.searchsorted(theirs, at, side="left")
            for w, ticks in windows.items():
                after[w][rows] = np.searchsorted(theirs, at - ticks, side="left")
        hi = base + before
        lo = {w: base + n for w, n in after.items()}
        for a in bucket.aggregates:
            w = a.window_delta
            if a.agg is Agg.LAST:
                # The latest value before t, if it came at t - window or later: its row.
                place, when, row, _ = latest[a.name]
                found = place[hi]
                fresh = (found >= 0) & (when[found] >= t - windows[w])
                parts[a.name].append(finish(a, np.where(fresh, row[found], 0), fresh))
                continue
            # Without nulls every event counts: the number of events between the two places.
            n = (
                counts[a.name][hi] - counts[a.name][lo[w]]
                if a.name in counts
                else before - after[w]
            )
            if a.agg is Agg.COUNT:
                parts[a.name].append(finish(a, n, has_group))
                continue
            s = sums[a.name][hi] - sums[a.name][lo[w]]
            if a.agg is Agg.SUM:
                parts[a.name].append(finish(a, s, has_group))
            else:
                good = n > 0
                mean = np.divide(s, n, out=np.zeros(len(s)), where=good)
                parts[a.name].append(finish(a, mean, has_group & good))
    return {
        a.name: pl.concat(parts[a.name], rechunk=False)
        if parts[a.name]
        else pl.Series(a.name, [], dtypes[a.name])
        for a in bucket.aggregates
    }


def _events(
    spec: FeatureSpec,
    events: dict[Source, pl.DataFrame | pl.LazyFrame | None],
    source: Source,
    columns: list[str | pl.Expr],
) -> pl.DataFrame:
    """Just ``columns`` of a source's events (a lazy source computes only those), in one chunk:
    frames scanned from many partition files come in many, and sorts, window sums and as-of
    joins are several times slower over those."""
    frame = events.get(source)
    if frame is None:
        raise ValueError(f"{spec.dataset}: aggregates need {source.value} events")
    return frame.lazy().select(columns).collect(engine=STREAMING).rechunk()


def _group_features(
    spec: FeatureSpec,
    buckets: list[_Bucket],
    points: pl.DataFrame,
    events: dict[Source, pl.DataFrame | pl.LazyFrame | None],
    code: pl.Expr | None,
    chunk_rows: int,
) -> dict[str, pl.Series]:
    """The aggregates of ``buckets`` (one group column, one bucket per source) at ``points``.

    With ``code`` (the group's text as integer codes, already applied to ``points``), each
    bucket's events are read and coded only when its turn comes, so one source's events are in
    memory at a time; without, the events of every source are read first, as text groups are
    coded from the values present in all of them.
    """
    g = buckets[0].group_by
    index = {a.name: i for i, a in enumerate(spec.aggregates)}

    def columns(b: _Bucket) -> list[str | pl.Expr]:
        return [g if code is None else code, TIME, *_event_columns(spec, [b], b.source, g)]

    frames: dict[Source, pl.DataFrame] = {}
    if code is None:
        frames = {b.source: _events(spec, events, b.source, columns(b)) for b in buckets}
        if points.schema[g] == pl.String:
            points, *coded = _encode(g, [points, *frames.values()])
            frames = dict(zip(frames, coded, strict=True))
    out: dict[str, pl.Series] = {}
    # The points by group, worked out once for every bucket when they are one chunk (more
    # would be kept in memory the whole time: then once per bucket).
    by_group: dict[int, _PointGroups] | None = {} if points.height <= chunk_rows else None
    for b in buckets:
        ev = frames.pop(b.source) if code is None else _events(spec, events, b.source, columns(b))
        out.update(_bucket_features(spec, b, points, ev, index, chunk_rows, by_group))
        del ev
    return out


def window_aggregates(
    spec: FeatureSpec,
    queries: pl.DataFrame,
    events: dict[Source, pl.DataFrame | pl.LazyFrame | None],
    aggregates: Iterable[Aggregate] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> pl.DataFrame:
    """Aggregates for query points over events strictly before each point's time.

    ``queries`` holds the group columns and ``__t`` (UTC datetime); ``events`` the event frames by
    source (from :func:`entity_events` / :func:`label_events`). Returns one row per query, in
    order, with one column per aggregate. A point with a null group gets nulls; a group with no
    events in the window gets count 0, sum 0, and null mean, rate and last.

    Memory: one group column at a time, only the event columns its buckets read are collected
    (a lazy source computes just those), one bucket's running totals are alive at a time, and
    the window arithmetic runs ``chunk_rows`` points at a time (any chunk size gives exactly
    the same values: each point's aggregates depend on the events alone).
    """
    aggregates = list(spec.aggregates if aggregates is None else aggregates)
    dtypes = spec.dtypes()
    in_order = queries.get_column(TIME).is_sorted()
    points = queries if in_order else queries.with_row_index(ROW).sort(TIME, maintain_order=True)
    buckets = _buckets(aggregates)
    columns: dict[str, pl.Series] = {}
    for g in dict.fromkeys(b.group_by for b in buckets):
        mine = [b for b in buckets if b.group_by == g]
        at = points.select(g, TIME)
        enum = group_enum(spec, g) if at.schema[g] in (pl.String, pl.Enum) else None
        if enum is not None:
            # Text group values become small integer codes (the as-of joins hash those), in the
            # same pass that reads the events: the text column is never collected. (Already
            # coded, as :func:`group_enum` codes them: the cast costs nothing.)
            code = pl.col(g).cast(enum).to_physical()
            try:
                columns.update(
                    _group_features(spec, mine, at.with_columns(code), events, code, chunk_rows)
                )
                continue
            except pl.exceptions.InvalidOperationError:
                pass  # a value outside them: the codes of the values present, below
        columns.update(_group_features(spec, mine, at, events, None, chunk_rows))
    names = [a.name for a in aggregates]
    if not columns:
        return pl.DataFrame(schema={n: dtypes[n] for n in names})
    out = pl.DataFrame([columns[n] for n in names])
    if not in_order:
        out = out.with_columns(points.get_column(ROW)).sort(ROW).drop(ROW)
    return out


def group_enum(spec: FeatureSpec, g: str) -> pl.Enum | None:
    """The codes of a group column of allowed values (an Enum of them, in sorted order); None
    for a column without. Text groups are coded so before their aggregates are computed."""
    allowed = spec.contract.entity.columns[g].allowed
    return pl.Enum(sorted(map(str, allowed))) if allowed else None


def code_groups(spec: FeatureSpec, rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` with each text group column of allowed values cast to its :func:`group_enum`,
    where every value is an allowed one (otherwise left as text): events and points made from
    them carry the codes, so the text is hashed once rather than by each step."""
    for g in spec.group_columns:
        enum = group_enum(spec, g)
        if enum is not None and rows.schema[g] == pl.String:
            # A value outside them: left as text, window_aggregates codes the values present.
            with suppress(pl.exceptions.InvalidOperationError):
                rows = rows.with_columns(pl.col(g).cast(enum))
    return rows


# --- the online store's snapshot -------------------------------------------------------------


def aggregate_snapshot(
    spec: FeatureSpec,
    events: dict[Source, pl.DataFrame | pl.LazyFrame | None],
    as_of: dt.datetime,
    known_groups: dict[str, list[str]] | None = None,
) -> pl.DataFrame:
    """Every aggregate as of ``as_of`` for every group: what the online store holds.

    One row per (group column, group value): every non-null value in the events, every allowed
    value of a category column and every value in ``known_groups`` (already in the store, so a
    group whose events left the window is brought back to zero). Values are keyed as text
    (:func:`group_text`); features of other group columns are null. Computed by
    :func:`window_aggregates` at query points (group, as_of): the offline computation itself.
    """
    as_of = to_utc(as_of)
    dtypes = spec.dtypes()
    schema = {"group_column": pl.String(), "group_value": pl.String()}
    schema |= {a.name: dtypes[a.name] for a in spec.aggregates}
    collected = {s: f.lazy().collect() for s, f in events.items() if f is not None}
    frames = [pl.DataFrame(schema=schema)]
    for g in spec.group_columns:
        aggs = [a for a in spec.aggregates if a.group_by == g]
        gtype = COLUMN_DTYPES[spec.column_type(g)]
        values = [
            collected[a.source].get_column(g).drop_nulls() for a in aggs if a.source in collected
        ]
        allowed = spec.contract.entity.columns[g].allowed
        if allowed:
            values.append(pl.Series(g, allowed, dtype=gtype))
        if known_groups and known_groups.get(g):
            values.append(from_group_text(pl.Series(g, known_groups[g]), gtype))
        if not values:
            continue
        groups = pl.concat([v.cast(gtype).alias(g) for v in values]).unique().sort()
        queries = pl.DataFrame({g: groups}).with_columns(pl.lit(as_of, UTC_US).alias(TIME))
        feats = window_aggregates(spec, queries, dict(collected), aggs)
        keys = pl.DataFrame({"group_column": [g] * groups.len(), "group_value": group_text(groups)})
        frames.append(pl.concat([keys, feats], how="horizontal"))
    return pl.concat(frames, how="diagonal_relaxed").select(
        [pl.col(c).cast(t) for c, t in schema.items()]
    )


def group_text(values: pl.Series) -> pl.Series:
    """Group values as the text the online store keys them by (bools as true/false)."""
    return values.cast(pl.String)


def from_group_text(values: pl.Series, dtype: pl.DataType) -> pl.Series:
    if dtype == pl.Boolean:
        return values.replace_strict({"true": True, "false": False}, return_dtype=pl.Boolean)
    return values.cast(dtype)


def to_utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime (naive values are taken to be UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)
