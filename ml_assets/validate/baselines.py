"""Recent-partition baselines and the anomalies measured against them (pure functions).

A validated partition is compared with the partitions just before it: a row count far from
their median, or a column's null rate well above theirs, is an anomaly worth a warning. The
baseline comes from the earlier partitions' parquet footers, so no data is read for it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl


@dataclass
class Anomalies:
    """What the anomaly checks found over a run's partitions."""

    rows: list[str] = field(default_factory=list)
    nulls: list[str] = field(default_factory=list)
    expected_empty: list[str] = field(default_factory=list)
    """Empty partitions that were empty a calendar cycle earlier too: no anomaly."""


def recent_stats(
    stats_of: Callable[[str], dict[str, Any] | None], earlier: list[str], n: int
) -> list[dict[str, Any]]:
    """Footer statistics (rows, nulls per column) of up to ``n`` of the latest ``earlier``
    partitions that exist, newest first."""
    out = []
    for pk in reversed(earlier):
        s = stats_of(pk)
        if s is not None:
            out.append(s)
        if len(out) >= n:
            break
    return out


def partition_anomalies(
    partition: str,
    valid: pl.DataFrame,
    columns: Iterable[str],
    baseline: list[dict[str, Any]],
    *,
    row_count_ratio: float,
    null_rate_tolerance: float,
    into: Anomalies,
    season: dict[str, Any] | None = None,
) -> None:
    """Add the partition's row-count and null-rate anomalies against ``baseline`` to ``into``
    (nothing when there is no baseline yet).

    ``season``: the statistics of the partition one calendar cycle earlier, when it exists. An
    empty partition whose counterpart was empty too is *expected* empty (a survey's quiet
    months, a shop's Sundays) and is no anomaly; an empty one whose counterpart had rows is
    reported as possibly missing data, naming both counts."""
    if valid.height == 0 and season is not None and season["rows"] == 0:
        into.expected_empty.append(partition)
        return
    if not baseline:
        return
    median_rows = statistics.median(b["rows"] for b in baseline)
    if median_rows > 0 and not (
        median_rows / row_count_ratio <= valid.height <= median_rows * row_count_ratio
    ):
        if valid.height == 0:
            ago = f", {season['rows']} a cycle earlier" if season is not None else ""
            into.rows.append(f"{partition}: no rows (missing data?) vs median {median_rows:g}{ago}")
        else:
            into.rows.append(f"{partition}: {valid.height} rows vs median {median_rows:g}")
    base_rows = max(sum(b["rows"] for b in baseline), 1)
    for col in columns:
        base_rate = sum(b["nulls"].get(col, 0) for b in baseline) / base_rows
        rate = valid.get_column(col).null_count() / valid.height if valid.height else 0.0
        if rate > base_rate + null_rate_tolerance:
            into.nulls.append(f"{partition}: {col} {rate:.1%} null vs {base_rate:.1%} recently")
