"""The demo's replay (:mod:`ml_assets.replay`): where it starts, what it replays, and its summary.

The whole loop, end to end (drift, alert, sensor retrain, gate, the new Bento serving), is
tested on the real demo in ``test_cli_output.py`` (``test_the_demo_replay_*``): it runs
``ml-assets demo car_loan`` once for every test there.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml_assets.dataset import load_datasets
from ml_assets.replay import _ranges, replay_datasets, replay_start
from ml_assets.storage import Lake


def test_only_datasets_whose_contract_asks_are_replayed() -> None:
    assert replay_datasets(load_datasets()) == ["car_loan"]


def test_the_replay_starts_at_the_first_partition_after_the_middle_of_the_data(tmp_path) -> None:
    car_loan = load_datasets()["car_loan"]
    lake = Lake(base_path=str(tmp_path / "lake"))
    weeks = ["2018-01-01", "2018-01-08", "2018-01-15", "2018-01-22", "2018-01-29"]
    for week in weeks:
        start = dt.datetime.fromisoformat(week)
        times = [start + dt.timedelta(days=d) for d in (0, 3)]
        lake.write(car_loan.keys.features, week, pl.DataFrame({"id": [1, 2], "timestamp": times}))
    lake.write(  # an empty partition after the data is never replayed
        car_loan.keys.features,
        "2018-02-05",
        pl.DataFrame(schema={"id": pl.Int64, "timestamp": pl.Datetime("us")}),
    )
    # events from 2018-01-01 to 2018-02-01: the middle is 2018-01-16 12:00
    first, partitions = replay_start(car_loan, lake)
    assert first == "2018-01-22"
    assert partitions == ["2018-01-22", "2018-01-29"]


def test_runs_of_partitions_are_summarised_as_ranges() -> None:
    ordered = ["a", "b", "c", "d", "e", "f"]
    assert _ranges(["a", "b", "c", "e"], ordered) == "a .. c (3), e"
    assert _ranges([], ordered) == ""
