"""Time partitions from a contract's ``partitioning`` block: the one home of granularity.

:class:`Partitions` holds a dataset's Dagster partitions definition and answers every question
about its time windows (a partition's [start, end) in UTC, which partitions overlap a span, how
many partitions back a trailing window reaches, when a partition is due). Each granularity's
facts live in :data:`GRANULARITIES`, keyed by the contract's enum.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import cached_property

import dagster as dg

from ml_assets.contracts.model import Granularity, Partitioning
from ml_assets.features.windows import to_utc


@dataclass(frozen=True)
class GranularityFacts:
    shortest: dt.timedelta
    """The shortest partition: how far back a window of N partitions surely reaches."""
    deadline_cron: str
    """When a partition should have landed (freshness checks): a day after its window."""
    season: int | None
    """Partitions in one cycle of the calendar (a week of hours or days, a year of weeks or
    months): the partition this many back is "the same time last cycle". None for yearly."""


GRANULARITIES: dict[Granularity, GranularityFacts] = {
    Granularity.HOURLY: GranularityFacts(dt.timedelta(hours=1), "0 * * * *", 24 * 7),
    Granularity.DAILY: GranularityFacts(dt.timedelta(days=1), "0 6 * * *", 7),
    Granularity.WEEKLY: GranularityFacts(dt.timedelta(days=7), "0 6 * * 1", 52),
    Granularity.MONTHLY: GranularityFacts(dt.timedelta(days=28), "0 6 2 * *", 12),
    Granularity.YEARLY: GranularityFacts(dt.timedelta(days=365), "0 6 2 1 *", None),
}


@dataclass(frozen=True)
class Part:
    """One partition: its key and its [start, end) in UTC."""

    key: str
    start: dt.datetime
    end: dt.datetime


def partitions_definition(p: Partitioning) -> dg.TimeWindowPartitionsDefinition:
    """Hourly, daily, weekly (weeks start on the contract's start weekday), monthly (on the
    start's day of month) or yearly (on the start's day of the year) partitions.

    Keys are the window's first day, ``YYYY-MM-DD`` (hourly: ``YYYY-MM-DD-HH:MM``, Dagster's).
    """
    start = p.start.isoformat()
    end = p.end.isoformat() if p.end else None
    if p.granularity is Granularity.HOURLY:
        return dg.HourlyPartitionsDefinition(
            start_date=f"{start}-00:00",
            end_date=f"{end}-00:00" if end else None,
            timezone=p.timezone,
        )
    if p.granularity is Granularity.YEARLY:
        return dg.TimeWindowPartitionsDefinition(
            cron_schedule=f"0 0 {p.start.day} {p.start.month} *",
            start=dt.datetime.combine(p.start, dt.time()),
            end=dt.datetime.combine(p.end, dt.time()) if p.end else None,
            fmt="%Y-%m-%d",
            timezone=p.timezone,
        )
    if p.granularity is Granularity.DAILY:
        return dg.DailyPartitionsDefinition(start_date=start, end_date=end, timezone=p.timezone)
    if p.granularity is Granularity.WEEKLY:
        # Dagster's weeks start on Sunday unless told otherwise; start them on the contract's day.
        weekday = (p.start.weekday() + 1) % 7
        return dg.WeeklyPartitionsDefinition(
            start_date=start, end_date=end, timezone=p.timezone, day_offset=weekday
        )
    return dg.MonthlyPartitionsDefinition(
        start_date=start, end_date=end, timezone=p.timezone, day_offset=p.start.day
    )


class Partitions:
    """A dataset's time partitions: the Dagster definition and its windows."""

    def __init__(self, partitioning: Partitioning) -> None:
        self.partitioning = partitioning
        self.definition = partitions_definition(partitioning)
        self.facts = GRANULARITIES[partitioning.granularity]

    @property
    def timezone(self) -> str:
        return self.partitioning.timezone

    def keys(self) -> list[str]:
        return self.definition.get_partition_keys()

    def window(self, key: str) -> tuple[dt.datetime, dt.datetime]:
        """A partition's [start, end) as timezone-aware datetimes (the contract's zone)."""
        tw = self.definition.time_window_for_partition_key(key)
        return tw.start, tw.end

    def utc_window(self, key: str) -> tuple[dt.datetime, dt.datetime]:
        start, end = self.window(key)
        return to_utc(start), to_utc(end)

    @cached_property
    def parts(self) -> list[Part]:
        """Every partition with its UTC window, oldest first (the definition's end is fixed)."""
        return [Part(k, *self.utc_window(k)) for k in self.keys()]

    def span(self, keys: list[str]) -> tuple[dt.datetime, dt.datetime]:
        """[start of the first, end of the last) of some partition keys, in UTC."""
        ordered = sorted(keys)
        return self.utc_window(ordered[0])[0], self.utc_window(ordered[-1])[1]

    def overlapping(self, start: dt.datetime, end: dt.datetime) -> list[str]:
        """Keys of the partitions whose window overlaps [start, end)."""
        return [p.key for p in self.parts if p.start < end and p.end > start]

    def before(self, key: str) -> list[str]:
        """Keys of the partitions before ``key`` (none for an unknown key)."""
        keys = self.keys()
        return keys[: keys.index(key)] if key in keys else []

    def season_ago(self, key: str) -> str | None:
        """The partition one calendar cycle before ``key`` (same weekday last week, same month
        last year: :attr:`GranularityFacts.season`), or None when there is none."""
        keys = self.keys()
        if self.facts.season is None or key not in keys:
            return None
        i = keys.index(key) - self.facts.season
        return keys[i] if i >= 0 else None

    def lookback(self, window: dt.timedelta) -> int:
        """How many partitions back a trailing window reaches (shortest partition length)."""
        return math.ceil(window / self.facts.shortest)

    def lookback_mapping(self, window: dt.timedelta) -> dg.TimeWindowPartitionMapping:
        """Each partition depends on itself and the partitions its trailing window reaches."""
        return dg.TimeWindowPartitionMapping(
            start_offset=-self.lookback(window), allow_nonexistent_upstream_partitions=True
        )

    @property
    def deadline_cron(self) -> str:
        return self.facts.deadline_cron
