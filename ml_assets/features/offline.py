"""Reading the offline store (the lake) for features, training sets and online snapshots.

Plain functions over a :class:`~ml_assets.dataset.Dataset` and a :class:`~ml_assets.storage.Lake`
that the feature assets wire up: which partitions a computation needs (all of them must be
materialized; a missing one is an error naming it), the inputs of a feature computation, the
training set at a cutoff and its point-in-time verdict, the rows a parity check samples.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import dagster as dg
import polars as pl

from ml_assets.contracts.dtypes import VALIDATED_DTYPES
from ml_assets.dataset import Dataset
from ml_assets.features.declarations import Source
from ml_assets.features.training_set import build_training_set
from ml_assets.features.windows import entity_events, label_events, to_utc
from ml_assets.partitions import Part
from ml_assets.storage import Lake


def scan_all(lake: Lake, key: dg.AssetKey, partitions: list[str], why: str) -> pl.LazyFrame | None:
    """The partitions as one lazy frame (None for none); every one must be materialized."""
    missing = [p for p in partitions if not lake.exists(key, p)]
    if missing:
        raise FileNotFoundError(
            f"{key.to_user_string()} partitions {missing} are not materialized; {why} needs them"
        )
    return lake.scan(key, partitions) if partitions else None


def latest_part(dataset: Dataset, lake: Lake, key: dg.AssetKey) -> Part | None:
    """The newest materialized partition of an asset."""
    for p in reversed(dataset.partitions.parts):
        if lake.exists(key, p.key):
            return p
    return None


def latest_features(dataset: Dataset, lake: Lake) -> Part:
    """The newest materialized feature partition (an error when there is none yet)."""
    latest = latest_part(dataset, lake, dataset.keys.features)
    if latest is None:
        raise FileNotFoundError(f"{dataset.name}: no feature partition is materialized yet")
    return latest


def validated_schema(dataset: Dataset, role: str) -> dict[str, pl.DataType]:
    return {n: VALIDATED_DTYPES[c.type] for n, c in dataset.tables[role].columns.items()}


@dataclass
class Inputs:
    """Entity rows and events for features over [start, end), read from validated partitions."""

    entity: pl.DataFrame
    events: dict[Source, pl.DataFrame | None]
    labels_without_entity: int = 0


def read_inputs(dataset: Dataset, lake: Lake, start: dt.datetime, end: dt.datetime) -> Inputs:
    """Everything features of rows in [start, end) need: entity rows from start - longest
    window on, labels observed in that span, and the group columns of those labels' rows.

    Events come from every partition overlapping [start - window, end), all of which must be
    materialized. A label's entity row may be older than the window: its group is looked up in
    every materialized entity partition before ``end``.
    """
    spec, parts = dataset.spec, dataset.partitions
    lookback = start - spec.max_window
    why = f"{dataset.name} features of [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})"
    ekey, lkey = dataset.keys.validated["entity"], dataset.keys.validated["labels"]
    scanned = scan_all(lake, ekey, parts.overlapping(lookback, end), why)
    t = pl.col(spec.event_time)
    empty = pl.DataFrame(schema=validated_schema(dataset, "entity"))
    entity = scanned.filter(t >= lookback, t < end).collect() if scanned is not None else empty
    events: dict[Source, pl.DataFrame | None] = {Source.ENTITY: None, Source.LABELS: None}
    if any(a.source is Source.ENTITY for a in spec.aggregates):
        events[Source.ENTITY] = entity_events(spec, entity).collect()
    missing = 0
    if any(a.source is Source.LABELS for a in spec.aggregates):
        lab = dataset.contract.labels
        scanned_labels = scan_all(lake, lkey, parts.overlapping(lookback, end), why)
        o = pl.col(lab.observed_at)
        labels = (
            scanned_labels.filter(o >= lookback, o < end).collect()
            if scanned_labels is not None
            else pl.DataFrame(schema=validated_schema(dataset, "labels"))
        )
        history = [p.key for p in parts.parts if p.start < end and lake.exists(ekey, p.key)]
        owners = (
            lake.scan(ekey, history)
            .select(*spec.key, *spec.group_columns)
            .join(
                labels.lazy().select(
                    [pl.col(k).alias(e) for k, e in zip(lab.key_columns, spec.key, strict=True)]
                ),
                on=spec.key,
                how="semi",
            )
            if history
            else empty.lazy()
        )
        events[Source.LABELS] = label_events(spec, labels, owners).collect()
        missing = labels.height - events[Source.LABELS].height
    return Inputs(entity=entity, events=events, labels_without_entity=missing)


def snapshot_inputs(dataset: Dataset, lake: Lake) -> tuple[dt.datetime, Inputs]:
    """The online store's as-of time (end of the latest feature partition) and its events."""
    latest = latest_features(dataset, lake)
    return latest.end, read_inputs(dataset, lake, latest.end, latest.end)


# --- training sets ---------------------------------------------------------------------------


def resolve_cutoff(dataset: Dataset, lake: Lake, cutoff: str | None) -> tuple[dt.datetime, str]:
    """The cutoff of a training set and where it came from."""
    if cutoff:
        try:
            value = dt.datetime.fromisoformat(cutoff)
        except ValueError as exc:
            raise ValueError(f"cutoff {cutoff!r} is not an ISO datetime") from exc
        return to_utc(value), "config"
    latest = latest_features(dataset, lake)
    return latest.end, f"end of feature partition {latest.key}"


@dataclass(frozen=True)
class Window:
    """The rows a training set may hold: event time in [start, cutoff), and why those."""

    start: dt.datetime
    cutoff: dt.datetime
    days: float | None
    """The declared length; None: every labelled row before the cutoff (no declared window)."""
    origin: str
    """Where the length came from (run config, the contract, or the default)."""

    @property
    def length(self) -> dt.timedelta:
        return self.cutoff - self.start

    def describe(self) -> str:
        """``[start, cutoff) (N days, from ...)``: what every message about the window says."""
        days = self.length / dt.timedelta(days=1)
        return f"[{_when(self.start)}, {_when(self.cutoff)}) ({days:g} days, {self.origin})"


def _when(t: dt.datetime) -> str:
    """A time in messages: the date alone at midnight, else minutes too (UTC)."""
    t = to_utc(t)
    return f"{t:%Y-%m-%d}" if t.time() == dt.time(0) else f"{t:%Y-%m-%d %H:%M}"


WINDOW_FIXES = (
    "widen it (--window-days N, run config window_days or the contract's training.window_days; "
    "with none, every labelled row before the cutoff counts) or move the cutoff (--cutoff ISO)"
)


def resolve_window(
    dataset: Dataset, lake: Lake, cutoff: dt.datetime, window_days: float | None
) -> Window:
    """The training window at ``cutoff``: ``window_days`` (run config) if given, else the
    contract's ``training.window_days``, else every row before the cutoff from the earliest
    materialized feature partition on (no row is dropped for being old)."""
    contract = dataset.contract
    declared = contract.training.window_days if contract.training else None
    for days, origin in (
        (window_days, "run config window_days"),
        (declared, "the contract's training.window_days"),
    ):
        if days is None:
            continue
        if not days > 0:
            raise ValueError(
                f"{dataset.name}: {origin} must be a positive number of days, got {days}"
            )
        return Window(cutoff - dt.timedelta(days=days), cutoff, float(days), origin)
    fkey = dataset.keys.features
    for p in dataset.partitions.parts:
        if p.start < cutoff and lake.exists(fkey, p.key):
            origin = f"every row before the cutoff: from feature partition {p.key}, the earliest"
            return Window(p.start, cutoff, None, origin)
    raise FileNotFoundError(
        f"{dataset.name}: no feature partition before the cutoff {_when(cutoff)} is materialized: "
        f"run the pipeline job first (`ml-assets run {dataset.name} --only pipeline`) or move the "
        "cutoff (`--cutoff ISO`)"
    )


@dataclass(frozen=True)
class TrainingSetFacts:
    """What a training set was drawn from: enough to say why it holds the rows it holds."""

    window: Window
    rows_in_window: int
    """Entity (feature-table) rows with event time in the window."""
    labelled: int
    """Rows of the training set: rows in the window with a label observed before the cutoff."""
    rows_before_window: int
    """Materialized feature rows older than the window (left out by it)."""
    event_range: tuple[dt.datetime, dt.datetime] | None
    """Event times of the materialized feature rows before the cutoff."""
    labels: int
    """Materialized labels with a target value (every partition)."""
    labels_before_cutoff: int
    observed_range: tuple[dt.datetime, dt.datetime] | None
    """Observed-at times of the materialized labels."""
    partitions: list[str]

    @property
    def rows_without_label_by_cutoff(self) -> int:
        return self.rows_in_window - self.labelled

    def why_empty(self, dataset: str) -> str | None:
        """Why no row made it into the training set, with the numbers and what to change
        (None when it is not empty)."""
        if self.labelled:
            return None
        head = (
            f"window {self.window.describe()}, cutoff {_when(self.window.cutoff)}: "
            f"{self.rows_in_window} rows in the window, 0 labelled"
        )
        details = []
        if self.observed_range is not None:
            lo, hi = self.observed_range
            details.append(
                f"labels observed {lo:%Y-%m-%d} .. {hi:%Y-%m-%d} "
                f"({self.labels}, {self.labels_before_cutoff} before the cutoff)"
            )
        if self.event_range is not None:
            lo, hi = self.event_range
            details.append(
                f"rows before the cutoff: events {lo:%Y-%m-%d} .. {hi:%Y-%m-%d}, "
                f"{self.rows_before_window} older than the window"
            )
        if self.labels == 0:
            fix = (
                "No label is materialized: run the pipeline job over the labels' partitions "
                f"(ml-assets run {dataset} --only pipeline)"
            )
        elif self.rows_in_window == 0 and self.rows_before_window:
            fix = "No row's event time falls in the window: " + WINDOW_FIXES
        elif self.rows_in_window == 0:
            fix = (
                "No feature row lies before the cutoff: move the cutoff later (--cutoff ISO) "
                f"or materialize earlier partitions (ml-assets run {dataset} --only pipeline)"
            )
        elif self.labels_before_cutoff == 0:
            fix = (
                "Every label is observed at or after the cutoff: move the cutoff later "
                "(--cutoff ISO, run config cutoff)"
            )
        else:
            fix = "The labels observed before the cutoff belong to no row in the window: " + (
                WINDOW_FIXES
            )
        # The fix before the details: a console line shortens the end of a long message.
        tail = "; ".join(details)
        return f"{head}. {fix}." + (f" {tail[0].upper()}{tail[1:]}." if tail else "")


def training_set_frame(
    dataset: Dataset, lake: Lake, window: Window
) -> tuple[pl.DataFrame, TrainingSetFacts]:
    """The training set of ``window`` read from the lake, and facts about it."""
    spec, keys = dataset.spec, dataset.keys
    start, cutoff = window.start, window.cutoff
    parts = dataset.partitions.overlapping(start, cutoff)
    why = f"the {dataset.name} training set of [{start:%Y-%m-%d}, {cutoff:%Y-%m-%d %H:%M})"
    feats = scan_all(lake, keys.features, parts, why)
    labels = scan_all(lake, keys.validated["labels"], parts, why)
    if feats is None or labels is None:
        raise ValueError(f"{why}: no partition of {dataset.name} overlaps it")
    t = pl.col(spec.event_time)
    in_window = feats.filter(t >= start, t < cutoff).select(pl.len()).collect().item()
    frame = build_training_set(spec, feats, labels, cutoff, window.length)
    before, event_range = _rows_before(dataset, lake, window)
    n_labels, n_before, observed = _label_facts(dataset, lake, cutoff)
    facts = TrainingSetFacts(
        window=window,
        rows_in_window=in_window,
        labelled=frame.height,
        rows_before_window=before,
        event_range=event_range,
        labels=n_labels,
        labels_before_cutoff=n_before,
        observed_range=observed,
        partitions=parts,
    )
    return frame, facts


def _materialized(dataset: Dataset, lake: Lake, key: dg.AssetKey, before: dt.datetime | None):
    return [
        p.key
        for p in dataset.partitions.parts
        if (before is None or p.start < before) and lake.exists(key, p.key)
    ]


def _rows_before(
    dataset: Dataset, lake: Lake, window: Window
) -> tuple[int, tuple[dt.datetime, dt.datetime] | None]:
    """Feature rows older than the window, and the event-time range of those before the cutoff
    (over every materialized feature partition)."""
    parts = _materialized(dataset, lake, dataset.keys.features, window.cutoff)
    if not parts:
        return 0, None
    t = pl.col(dataset.spec.event_time)
    row = (
        lake.scan(dataset.keys.features, parts)
        .select(t)
        .filter(t < window.cutoff)
        .select((t < window.start).sum().alias("before"), t.min().alias("lo"), t.max().alias("hi"))
        .collect()
        .row(0, named=True)
    )
    span = (row["lo"], row["hi"]) if row["lo"] is not None else None
    return int(row["before"] or 0), span


def _label_facts(
    dataset: Dataset, lake: Lake, cutoff: dt.datetime
) -> tuple[int, int, tuple[dt.datetime, dt.datetime] | None]:
    """Materialized labels with a target: how many, how many observed before the cutoff, and
    their observed-at range (over every materialized labels partition)."""
    key = dataset.keys.validated["labels"]
    parts = _materialized(dataset, lake, key, None)
    if not parts:
        return 0, 0, None
    o = pl.col(dataset.contract.labels.observed_at)
    row = (
        lake.scan(key, parts)
        .filter(pl.col(dataset.contract.target).is_not_null())
        .select(
            pl.len().alias("n"),
            (o < cutoff).sum().alias("before"),
            o.min().alias("lo"),
            o.max().alias("hi"),
        )
        .collect()
        .row(0, named=True)
    )
    span = (row["lo"], row["hi"]) if row["lo"] is not None else None
    return int(row["n"]), int(row["before"] or 0), span


@dataclass(frozen=True)
class PointInTimeVerdict:
    """Whether a training set holds only rows of its window, each with its label."""

    in_bounds: bool
    unlabelled: int
    rows: int
    why_empty: str | None = None
    """Why the set is empty (the window, cutoff and counts), from :class:`TrainingSetFacts`."""

    @property
    def broken(self) -> bool:
        """An error: rows outside the window or without a label (blocks training)."""
        return not self.in_bounds or self.unlabelled > 0

    @property
    def passed(self) -> bool:
        return not self.broken and self.rows > 0

    @property
    def description(self) -> str | None:
        if self.broken:
            return (
                f"rows outside the window: {not self.in_bounds}, unlabelled rows: {self.unlabelled}"
            )
        if not self.rows:
            return "the training set is empty: " + (
                self.why_empty or "no row has a label observed before the cutoff"
            )
        return None


def point_in_time_verdict(
    frame: pl.DataFrame,
    event_time: str,
    target: str,
    cutoff: dt.datetime,
    window: dt.timedelta,
    why_empty: str | None = None,
) -> PointInTimeVerdict:
    """Check a training set against its window [cutoff - window, cutoff) and its labels;
    ``why_empty`` is what an empty set's description says (see :class:`TrainingSetFacts`)."""
    t = frame.get_column(event_time)
    in_bounds = frame.height == 0 or (t.min() >= cutoff - window and t.max() < cutoff)
    return PointInTimeVerdict(
        in_bounds, frame.get_column(target).null_count(), frame.height, why_empty
    )


# --- parity samples --------------------------------------------------------------------------


def parity_sample(
    dataset: Dataset, lake: Lake, as_of: dt.datetime, n: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Up to n entity rows from the newest non-empty feature partitions before as_of, and their
    stored feature-table rows."""
    ekey, fkey = dataset.keys.validated["entity"], dataset.keys.features
    for p in reversed([p for p in dataset.partitions.parts if p.end <= as_of]):
        if not (lake.exists(fkey, p.key) and lake.exists(ekey, p.key)):
            continue
        rows = lake.scan(ekey, [p.key]).collect()
        if rows.height:
            sample = rows.sample(min(n, rows.height), seed=0).sort(dataset.spec.key)
            stored = lake.scan(fkey, [p.key]).collect()
            return sample, stored
    raise LookupError(f"{dataset.name}: no materialized entity rows before {as_of}")
