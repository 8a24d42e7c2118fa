"""Where a champion's monitoring reference starts, and how it is cut into chunks."""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml_assets.dataset import load_datasets
from ml_assets.monitor.assets import MIN_REFERENCE_WINDOWS, reference_start, reference_starts
from ml_assets.registry.tracking import REFERENCE_FROM_TAG

UTC = dt.UTC


def _rows(first: dt.datetime, weeks: int, per_week: int = 10) -> pl.DataFrame:
    times = [first + dt.timedelta(weeks=w, hours=h) for w in range(weeks) for h in range(per_week)]
    return pl.DataFrame({"timestamp": times}).with_columns(
        pl.col("timestamp").dt.replace_time_zone("UTC")
    )


CAR_LOAN = load_datasets()["car_loan"]
HELD_OUT = dt.datetime(2019, 2, 4, tzinfo=UTC)  # a Monday: car_loan's weeks start on Mondays
TRAINING_SET = _rows(HELD_OUT, weeks=12)


def test_the_reference_is_the_held_out_window_unless_the_model_answered_an_incident() -> None:
    start, why = reference_start(CAR_LOAN, TRAINING_SET, "timestamp", HELD_OUT, {})
    assert start == HELD_OUT and "held-out window" in why


def test_a_model_trained_for_an_incident_is_judged_against_the_new_regime() -> None:
    incident = HELD_OUT + dt.timedelta(weeks=6)
    tags = {REFERENCE_FROM_TAG: incident.isoformat()}
    start, why = reference_start(CAR_LOAN, TRAINING_SET, "timestamp", HELD_OUT, tags)
    assert start == incident
    assert "6 partitions" in why and "incident" in why


def test_too_few_held_out_weeks_after_the_incident_keep_the_whole_window() -> None:
    incident = HELD_OUT + dt.timedelta(weeks=12 - MIN_REFERENCE_WINDOWS + 1)
    tags = {REFERENCE_FROM_TAG: incident.isoformat()}
    start, why = reference_start(CAR_LOAN, TRAINING_SET, "timestamp", HELD_OUT, tags)
    assert start == HELD_OUT
    assert f"holds {MIN_REFERENCE_WINDOWS - 1} partitions" in why


def test_an_incident_before_the_held_out_window_changes_nothing() -> None:
    tags = {REFERENCE_FROM_TAG: (HELD_OUT - dt.timedelta(weeks=3)).isoformat()}
    assert reference_start(CAR_LOAN, TRAINING_SET, "timestamp", HELD_OUT, tags)[0] == HELD_OUT


def test_reference_chunks_start_at_the_dataset_partition_windows() -> None:
    """Twelve weekly windows over the rows (their starts are the partitions' starts), and with
    ``with_rows`` only the windows holding a row."""
    starts = reference_starts(CAR_LOAN, TRAINING_SET, "timestamp")
    assert starts == [HELD_OUT + dt.timedelta(weeks=w) for w in range(12)]
    gap = TRAINING_SET.filter(
        (pl.col("timestamp") < HELD_OUT + dt.timedelta(weeks=3))
        | (pl.col("timestamp") >= HELD_OUT + dt.timedelta(weeks=5))
    )
    assert len(reference_starts(CAR_LOAN, gap, "timestamp", with_rows=True)) == 10
    assert reference_starts(CAR_LOAN, TRAINING_SET.head(0), "timestamp") == []
