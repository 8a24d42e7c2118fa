"""Reading the offline store (the lake) for features, training sets and online snapshots.

Plain functions over a :class:`~ml_assets.dataset.Dataset` and a :class:`~ml_assets.storage.Lake`
that the feature assets wire up: which partitions a computation needs (all of them must be
materialized; a missing one is an error naming it), the inputs of a feature computation, the
training set at a cutoff and its point-in-time verdict, the rows a parity check samples.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

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


def training_set_frame(
    dataset: Dataset, lake: Lake, cutoff: dt.datetime, window: dt.timedelta
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The training set at ``cutoff`` read from the lake, and facts about it."""
    spec = dataset.spec
    start = cutoff - window
    parts = dataset.partitions.overlapping(start, cutoff)
    why = f"the {dataset.name} training set of [{start:%Y-%m-%d}, {cutoff:%Y-%m-%d %H:%M})"
    feats = scan_all(lake, dataset.keys.features, parts, why)
    labels = scan_all(lake, dataset.keys.validated["labels"], parts, why)
    if feats is None or labels is None:
        raise ValueError(f"{why}: no partition of {dataset.name} overlaps it")
    t = pl.col(spec.event_time)
    in_window = feats.filter(t >= start, t < cutoff).select(pl.len()).collect().item()
    frame = build_training_set(spec, feats, labels, cutoff, window)
    facts = {
        "rows_in_window": in_window,
        "rows_without_label_by_cutoff": in_window - frame.height,
        "partitions": parts,
    }
    return frame, facts


@dataclass(frozen=True)
class PointInTimeVerdict:
    """Whether a training set holds only rows of its window, each with its label."""

    in_bounds: bool
    unlabelled: int
    rows: int

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
            return "no row has a label observed before the cutoff"
        return None


def point_in_time_verdict(
    frame: pl.DataFrame, event_time: str, target: str, cutoff: dt.datetime, window: dt.timedelta
) -> PointInTimeVerdict:
    """Check a training set against its window [cutoff - window, cutoff) and its labels."""
    t = frame.get_column(event_time)
    in_bounds = frame.height == 0 or (t.min() >= cutoff - window and t.max() < cutoff)
    return PointInTimeVerdict(in_bounds, frame.get_column(target).null_count(), frame.height)


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
