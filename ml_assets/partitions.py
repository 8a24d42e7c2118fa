"""Time partitions from a contract's ``partitioning`` block."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from ml_assets.contracts.model import Contract, Granularity


def partitions_def(contract: Contract) -> dg.TimeWindowPartitionsDefinition:
    """Daily, weekly (weeks start on the contract's start weekday) or monthly partitions."""
    p = contract.partitioning
    start = p.start.isoformat()
    end = p.end.isoformat() if p.end else None
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


def window(
    pdef: dg.TimeWindowPartitionsDefinition, partition_key: str
) -> tuple[dt.datetime, dt.datetime]:
    """A partition's [start, end) as timezone-aware datetimes."""
    tw = pdef.time_window_for_partition_key(partition_key)
    return tw.start, tw.end
