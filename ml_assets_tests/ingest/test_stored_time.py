"""Event times a source stores as a date, an integer year or an integer yyyymm, and yearly and
hourly partitions: the contract declares them, ingestion reads each window by the stored values
and validation turns them into the first instant of their period.

The expectations are calendar facts written out by hand (a yearly partition of 2019 holds the
year 2019; in Amsterdam the year 2019 begins at 2018-12-31 23:00 UTC), not computed by the
code under test.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
import sqlalchemy as sa

from ml_assets.contracts import ContractError, parse_contract
from ml_assets.contracts.model import Partitioning
from ml_assets.ingest.sql import read_window, window_params
from ml_assets.partitions import Partitions
from ml_assets.validate.quarantine import split_valid
from ml_assets_tests import census

UTC = dt.UTC


def _table(contract_text: str):
    return parse_contract(contract_text, "c.yaml").entity


def _with_time(column: str, stored_as: str, granularity: str = "yearly", tz: str = "UTC") -> str:
    return census.CONTRACT.replace(
        "    year: {type: datetime, stored_as: year, description: Census wave (an integer year).}",
        f"    year: {{type: datetime, stored_as: {stored_as}}}",
    ).replace(
        'partitioning: {granularity: yearly, start: "2015-01-01", end: "2025-01-01"}',
        f'partitioning: {{granularity: {granularity}, start: "2015-01-01", '
        f'end: "2025-01-01", timezone: {tz}}}',
    )


def test_yearly_partitions_are_calendar_years_keyed_by_their_first_day() -> None:
    parts = Partitions(Partitioning(granularity="yearly", start="2015-01-01", end="2025-01-01"))
    keys = parts.keys()
    assert keys[0] == "2015-01-01" and keys[-1] == "2024-01-01" and len(keys) == 10
    assert parts.utc_window("2019-01-01") == (
        dt.datetime(2019, 1, 1, tzinfo=UTC),
        dt.datetime(2020, 1, 1, tzinfo=UTC),
    )
    fiscal = Partitions(Partitioning(granularity="yearly", start="2015-07-01", end="2020-07-01"))
    assert fiscal.keys() == ["2015-07-01", "2016-07-01", "2017-07-01", "2018-07-01", "2019-07-01"]


def test_hourly_partitions_follow_the_clock_of_the_timezone() -> None:
    # 31 March 2024: Amsterdam skips 02:00-03:00, so the day has 23 hours
    day = Partitions(
        Partitioning(
            granularity="hourly", start="2024-03-31", end="2024-04-01", timezone="Europe/Amsterdam"
        )
    )
    keys = day.keys()
    assert len(keys) == 23 and keys[0] == "2024-03-31-00:00" and "2024-03-31-02:00" not in keys
    assert day.utc_window("2024-03-31-03:00") == (
        dt.datetime(2024, 3, 31, 1, tzinfo=UTC),
        dt.datetime(2024, 3, 31, 2, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("stored_as", "start", "end", "tz", "want"),
    [
        # a yearly window of 2019 holds the year 2019
        ("year", dt.datetime(2019, 1, 1), dt.datetime(2020, 1, 1), "UTC", (2019, 2020)),
        # a monthly window of March 2019 holds no year (none starts in it)
        ("year", dt.datetime(2019, 3, 1), dt.datetime(2019, 4, 1), "UTC", (2020, 2020)),
        # Amsterdam's year 2019 begins at 2018-12-31 23:00 UTC
        ("year", dt.datetime(2018, 12, 31, 23), dt.datetime(2019, 12, 31, 23), "Europe/Amsterdam",
         (2019, 2020)),
        ("year_month", dt.datetime(2019, 3, 1), dt.datetime(2019, 4, 1), "UTC", (201903, 201904)),
        ("year_month", dt.datetime(2019, 12, 1), dt.datetime(2020, 1, 1), "UTC", (201912, 202001)),
        # a weekly window from Monday 2019-04-29 holds May 2019 (it starts on Wednesday 1 May)
        ("year_month", dt.datetime(2019, 4, 29), dt.datetime(2019, 5, 6), "UTC", (201905, 201906)),
        ("date", dt.datetime(2019, 3, 4), dt.datetime(2019, 3, 11), "UTC",
         (dt.date(2019, 3, 4), dt.date(2019, 3, 11))),
    ],
)  # fmt: skip
def test_a_window_becomes_the_stored_values_whose_period_starts_in_it(
    stored_as: str, start: dt.datetime, end: dt.datetime, tz: str, want: tuple
) -> None:
    table = _table(_with_time("year", stored_as, tz=tz))
    assert window_params(table, start, end, tz) == {"start": want[0], "end": want[1]}


def test_ingestion_reads_each_yearly_window_by_the_integer_year(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'census.sqlite'}"
    census.seed(url)
    table = census.contract().entity
    engine = sa.create_engine(url)
    try:
        chunks = list(read_window(engine, table, dt.datetime(2019, 1, 1), dt.datetime(2020, 1, 1)))
    finally:
        engine.dispose()
    raw = pl.concat(chunks)
    assert raw.height == census.PEOPLE
    assert raw.get_column("year").unique().to_list() == [2019]


def test_validation_turns_stored_years_into_datetimes_and_quarantines_what_names_no_year() -> None:
    table = _table(_with_time("year", "year_month", tz="Europe/Amsterdam"))
    raw = pl.DataFrame(
        {
            "person_id": [1, 2, 3, 4],
            "year": [201903, 201913, 201912, None],
            "age": [30, 30, 30, 30],
            "hours": [40.0, 40.0, 40.0, 40.0],
            "sector": ["farming"] * 4,
            "occupation": ["occ_01"] * 4,
        }
    )
    valid, quarantined, report = split_valid(raw, table, timezone="Europe/Amsterdam")
    assert valid.get_column("person_id").to_list() == [1, 3]
    assert valid.get_column("year").to_list() == [
        dt.datetime(2019, 2, 28, 23, tzinfo=UTC),  # 1 March, Amsterdam (UTC+1)
        dt.datetime(2019, 11, 30, 23, tzinfo=UTC),
    ]
    reasons = dict(zip(quarantined["person_id"], quarantined["_reason"], strict=True))
    assert "year: wrong type, expected datetime stored as an integer yyyymm" in reasons["2"]
    assert "year" in reasons["4"] and report.quarantined == 2


def test_an_integer_time_column_is_told_to_declare_stored_as() -> None:
    text = census.CONTRACT.replace(
        "    year: {type: datetime, stored_as: year, description: Census wave (an integer year).}",
        "    year: {type: int}",
    )
    with pytest.raises(ContractError) as err:
        parse_contract(text, "census.yaml")
    message = str(err.value)
    assert "time column 'year' must have type datetime" in message
    assert "stored_as: year (or year_month)" in message


def test_stored_as_applies_to_datetime_columns_only() -> None:
    text = census.CONTRACT.replace(
        "    age: {type: int, min: 16, max: 100}", "    age: {type: int, stored_as: year}"
    )
    with pytest.raises(ContractError, match="stored_as applies to datetime columns"):
        parse_contract(text, "census.yaml")
