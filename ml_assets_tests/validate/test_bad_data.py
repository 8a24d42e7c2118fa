"""Bad source data ends in quarantine or a clear check failure, never a crash; rows reconcile."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from ml_assets.contracts import Contract, parse_contract
from ml_assets.dataset import Dataset
from ml_assets.ingest.demo import seed_demo, sql_table
from ml_assets_tests.pipeline import checks, counts, ingest_assets, range_tags, read, resources

TINY = """
name: tiny
version: 1.0.0
owner: qa@example.com
problem_type: binary
target: label
partitioning: {granularity: daily, start: "2024-01-01", end: "2024-01-05", timezone: UTC}
quarantine_threshold: 0.5
entity:
  table: tiny_events
  primary_key: [id]
  event_time: ts
  columns:
    id: {type: int}
    ts: {type: datetime}
    amount: {type: float, min: 0, max: 100}
    kind: {type: category, allowed: [a, b]}
    note: {type: string, nullable: true}
    flag: {type: bool}
labels:
  table: tiny_labels
  key: [id]
  observed_at: seen_at
  columns:
    id: {type: int}
    seen_at: {type: datetime}
    label: {type: int, allowed: [0, 1]}
"""

GOOD = {"amount": 10.0, "kind": "a", "note": None, "flag": 1}


@pytest.fixture
def tiny() -> Contract:
    return parse_contract(TINY, "tiny.yaml")


def _make_source(path: Path, contract: Contract, drop: str | None = None, extra: str | None = None):
    """Create the entity table from the contract (optionally without / with one more column)."""
    typed = sql_table(contract.entity, contract.entity.table, sa.MetaData())
    # A permissive source (no key, no NOT NULL): enforcing the contract is our job, not the DB's.
    md = sa.MetaData()
    columns = [sa.Column(c.name, c.type) for c in typed.columns if c.name != drop]
    if extra:
        columns.append(sa.Column(extra, sa.Text))
    sa.Table(contract.entity.table, md, *columns)
    engine = sa.create_engine(f"sqlite:///{path}")
    md.create_all(engine)
    engine.dispose()
    return f"sqlite:///{path}"


def _insert(path: Path, rows: list[dict]) -> None:
    """Insert rows as given: SQLite keeps whatever type each value has (that is the point)."""
    cols = list(rows[0])
    with sqlite3.connect(path) as conn:
        conn.executemany(
            f"insert into tiny_events ({', '.join(cols)}) values ({', '.join('?' * len(cols))})",
            [tuple(r[c] for c in cols) for r in rows],
        )


def _row(i: int, ts: str = "2024-01-01 10:00:00.000000", **kw) -> dict:
    return {"id": i, "ts": ts, **GOOD, **kw}


def _run(contract: Contract, tmp: Path, url: str, first="2024-01-01", last="2024-01-01", extra=()):
    return dg.materialize(
        [*ingest_assets(contract, ("entity",)), *extra],
        resources=resources(tmp / "lake", url),
        tags=range_tags(first, last),
        raise_on_error=False,
    )


def _reasons(tmp: Path, contract: Contract) -> dict[int, str]:
    q = read(tmp / "lake", Dataset.build(contract).keys.quarantine["entity"])
    return {
        int(i) if i and i.lstrip("-").isdigit() else i: r
        for i, r in zip(q["id"], q["_reason"], strict=True)
    }


def _failed_by_checks_only(result: dg.ExecuteInProcessResult) -> None:
    """The run stopped because blocking checks failed, not because anything crashed."""
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures
    for event in failures:
        error = event.step_failure_data.error
        assert error.cls_name == "DagsterAssetCheckFailedError", error.message


def test_each_kind_of_bad_row_is_quarantined_with_its_reason(tmp_path, tiny):
    db = tmp_path / "src.sqlite"
    url = _make_source(db, tiny)
    _insert(
        db,
        [
            _row(1),  # good
            _row(2, amount="lots"),  # wrong type
            _row(3, amount=None),  # null where not nullable
            _row(4, amount=250.0),  # out of range
            _row(5, kind="z"),  # unseen category
            _row(6, flag=7),  # not a boolean
            _row(7, amount=float("inf")),  # not finite
            _row(8),
            _row(8, note="again"),  # duplicate key
            _row(9, ts="2024-01-01 12:00:00+02:00"),  # aware: 10:00 UTC, kept
            _row(10, ts="2024-01-01T11:00:00Z"),  # ISO with T and Z, kept
            _row(11, ts="2024-01-01 nonsense"),  # unparseable time
        ],
    )
    result = _run(tiny, tmp_path, url)
    _failed_by_checks_only(result)
    reasons = _reasons(tmp_path, tiny)
    assert set(reasons) == {2, 3, 4, 5, 6, 7, 8, 11}
    assert "amount: wrong type" in reasons[2]
    assert "amount: not_nullable" in reasons[3]
    assert "amount: less_than_or_equal_to(100" in reasons[4]
    assert "kind: isin" in reasons[5]
    assert "flag: wrong type" in reasons[6]
    assert "amount: not a finite number" in reasons[7]
    assert reasons[8] == "duplicate key"
    assert "ts: wrong type" in reasons[11]

    valid = read(tmp_path / "lake", Dataset.build(tiny).keys.validated["entity"])
    assert sorted(valid["id"]) == [1, 9, 10]
    ts = dict(zip(valid["id"], valid["ts"], strict=True))
    assert ts[9].isoformat() == "2024-01-01T10:00:00+00:00"
    assert ts[10].isoformat() == "2024-01-01T11:00:00+00:00"
    # The quarantined row keeps the raw value, as text, so it can be triaged and replayed.
    q = read(tmp_path / "lake", Dataset.build(tiny).keys.quarantine["entity"])
    assert q.filter(pl.col("id") == "2")["amount"].item() == "lots"

    raw = read(tmp_path / "lake", Dataset.build(tiny).keys.raw["entity"])
    assert raw.height == 12 == valid.height + q.height
    evaluations = checks(result)
    key_check = evaluations["tiny/validated_entity:primary_key_unique"]
    assert not key_check.passed and "2 rows share a key" in key_check.description
    rate = evaluations["tiny/validated_entity:quarantine_rate"]
    assert not rate.passed  # 9 of 12 > 50%
    assert "9 of 12 rows quarantined" in rate.description


def test_blocking_check_stops_downstream(tmp_path, tiny):
    db = tmp_path / "src.sqlite"
    url = _make_source(db, tiny)
    _insert(db, [_row(1), _row(2, kind="nope"), _row(3, kind="nope")])

    @dg.asset(deps=[Dataset.build(tiny).keys.validated["entity"]], partitions_def=None)
    def downstream() -> None:
        raise AssertionError("must not run after a failed blocking check")

    result = _run(tiny, tmp_path, url, extra=[downstream])
    _failed_by_checks_only(result)
    assert not checks(result)["tiny/validated_entity:quarantine_rate"].passed
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert dg.AssetKey("downstream") not in materialized
    assert Dataset.build(tiny).keys.validated["entity"] in materialized


def test_missing_column_fails_schema_check_and_quarantines_every_row(tmp_path, tiny):
    db = tmp_path / "src.sqlite"
    url = _make_source(db, tiny, drop="amount")
    _insert(db, [{k: v for k, v in _row(i).items() if k != "amount"} for i in range(5)])
    result = _run(tiny, tmp_path, url)
    _failed_by_checks_only(result)
    schema_check = checks(result)["tiny/validated_entity:schema_conformance"]
    assert not schema_check.passed
    assert schema_check.severity == dg.AssetCheckSeverity.ERROR
    assert "amount" in schema_check.description
    assert counts(tmp_path / "lake", tiny, "entity") == (0, 5)
    assert set(_reasons(tmp_path, tiny).values()) == {"missing column: amount"}


def test_extra_column_is_dropped_with_a_warning(tmp_path, tiny):
    db = tmp_path / "src.sqlite"
    url = _make_source(db, tiny, extra="surprise")
    _insert(db, [{**_row(i), "surprise": "x"} for i in range(4)])
    result = _run(tiny, tmp_path, url)
    schema_check = checks(result)["tiny/validated_entity:schema_conformance"]
    assert not schema_check.passed
    assert schema_check.severity == dg.AssetCheckSeverity.WARN
    assert "surprise" in schema_check.description
    valid = read(tmp_path / "lake", Dataset.build(tiny).keys.validated["entity"])
    assert valid.height == 4 and "surprise" not in valid.columns


def test_empty_partition_is_a_valid_empty_file(tmp_path, tiny):
    db = tmp_path / "src.sqlite"
    url = _make_source(db, tiny)
    _insert(db, [_row(1)])  # only 2024-01-01 has data
    result = _run(tiny, tmp_path, url, "2024-01-01", "2024-01-03")
    assert result.success
    empty = read(tmp_path / "lake", Dataset.build(tiny).keys.validated["entity"], ["2024-01-02"])
    assert empty.height == 0
    assert empty.schema["ts"] == pl.Datetime("us", "UTC")
    assert counts(tmp_path / "lake", tiny, "entity") == (1, 0)
    rows = checks(result)["tiny/validated_entity:row_count_anomaly"]
    assert not rows.passed and rows.severity == dg.AssetCheckSeverity.WARN
    assert "2024-01-02: no rows (missing data?) vs median 1" in rows.description


def test_an_empty_partition_empty_a_cycle_earlier_too_is_expected_not_an_anomaly(tmp_path):
    """Daily events on weekdays only, for three weeks from Monday 2024-01-01, and the Wednesday
    of the third week missing: the weekends of weeks two and three were empty a week earlier
    too (expected empty, no warning); the missing Wednesday had rows a week earlier (warned,
    saying so); the first weekend has no week before it (judged by the recent median)."""
    contract = parse_contract(TINY.replace('end: "2024-01-05"', 'end: "2024-01-22"'), "tiny.yaml")
    db = tmp_path / "src.sqlite"
    url = _make_source(db, contract)
    days = [f"2024-01-{d:02d}" for d in range(1, 22)]
    weekdays = [d for i, d in enumerate(days) if i % 7 < 5 and d != "2024-01-17"]
    _insert(db, [_row(i, ts=f"{d} 10:00:00.000000") for i, d in enumerate(weekdays)])
    result = _run(contract, tmp_path, url, "2024-01-01", "2024-01-21")
    assert result.success
    rows = checks(result)["tiny/validated_entity:row_count_anomaly"]
    assert not rows.passed
    assert "2024-01-17: no rows (missing data?) vs median 1, 1 a cycle earlier" in rows.description
    for weekend in ("2024-01-13", "2024-01-14", "2024-01-20", "2024-01-21"):
        assert weekend not in rows.description
    expected = rows.metadata["expected_empty_partitions"].value
    assert expected == "2024-01-13, 2024-01-14, 2024-01-20, 2024-01-21"


def test_mixed_types_across_chunks_are_kept(tmp_path, tiny):
    """A text value deep in an int column (after the first chunk) survives raw, then quarantines."""
    db = tmp_path / "src.sqlite"
    url = _make_source(db, tiny)
    _insert(db, [_row(i) for i in range(1, 300)] + [_row(300, flag="maybe")])
    result = dg.materialize(
        ingest_assets(tiny, ("entity",)),
        resources=resources(tmp_path / "lake", url, chunk_rows=50),
        tags=range_tags("2024-01-01", "2024-01-01"),
    )
    assert result.success
    assert counts(tmp_path / "lake", tiny, "entity") == (299, 1)
    assert "flag: wrong type" in _reasons(tmp_path, tiny)[300]


def test_data_quality_variant_warns_on_null_rate(tmp_path, contracts):
    """Clean history first, then NannyML's data-quality variant: nulls pass, the null check warns."""
    contract = contracts["car_loan"]
    clean = f"sqlite:///{tmp_path / 'clean.sqlite'}"
    dirty = f"sqlite:///{tmp_path / 'dirty.sqlite'}"
    seed_demo(clean, contract)
    seed_demo(dirty, contract, quality=True)
    lake = tmp_path / "lake"
    first = dg.materialize(
        ingest_assets(contract, ("entity",)),
        resources=resources(lake, clean),
        tags=range_tags("2018-01-01", "2018-01-29"),
    )
    assert first.success and checks(first)["car_loan/validated_entity:null_rate"].passed
    second = dg.materialize(
        ingest_assets(contract, ("entity",)),
        resources=resources(lake, dirty),
        tags=range_tags("2018-02-05", "2018-02-12"),
    )
    assert second.success  # nulls in nullable columns are valid rows...
    null_check = checks(second)["car_loan/validated_entity:null_rate"]
    assert not null_check.passed  # ...but far more of them than recently: a warning
    assert null_check.severity == dg.AssetCheckSeverity.WARN
    assert "salary_range" in null_check.description or "driver_tenure" in null_check.description
    raw = read(lake, Dataset.build(contract).keys.raw["entity"], ["2018-02-05", "2018-02-12"])
    valid = read(
        lake, Dataset.build(contract).keys.validated["entity"], ["2018-02-05", "2018-02-12"]
    )
    quarantined = read(
        lake, Dataset.build(contract).keys.quarantine["entity"], ["2018-02-05", "2018-02-12"]
    )
    assert valid.height + quarantined.height == raw.height
    assert valid["salary_range"].null_count() > 0
