"""Raw and validated assets materialized with Dagster on real SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from ml_assets.dataset import Dataset
from ml_assets.ingest.demo import demo_frames, seed_demo
from ml_assets.storage import Lake
from ml_assets_tests.pipeline import checks, counts, range_tags, read, resources, run_range

FIRST, LAST = "2018-01-01", "2018-02-19"  # eight weekly partitions


def _digest(path: Path) -> str:
    """Content hash of one stored partition (row order included)."""
    frame = pl.read_parquet(path)
    return hashlib.sha256(
        frame.write_ipc(None).getvalue() if frame.height else repr(frame.schema).encode()
    ).hexdigest()


def _lake_digest(lake_dir: Path) -> dict[str, str]:
    """Content hash of every stored partition, by relative path."""
    return {str(p.relative_to(lake_dir)): _digest(p) for p in sorted(lake_dir.rglob("*.parquet"))}


def _source_rows(url: str, table, start, end) -> int:
    """Rows of a contract table in [start, end), counted by the database itself."""
    from ml_assets.ingest.sql import to_naive_utc

    time_col = sa.column(table.time_column)
    stmt = (
        sa.select(sa.func.count())
        .select_from(sa.table(table.table))
        .where(
            time_col >= sa.bindparam("s", type_=sa.DateTime()),
            time_col < sa.bindparam("e", type_=sa.DateTime()),
        )
    )
    with sa.create_engine(url).connect() as conn:
        return conn.execute(stmt, {"s": to_naive_utc(start), "e": to_naive_utc(end)}).scalar_one()


@pytest.mark.slow
def test_range_is_one_run_and_every_row_reconciles(tmp_path, contracts, car_loan_sqlite):
    contract = contracts["car_loan"]
    with dg.instance_for_test() as instance:
        result = run_range(contract, tmp_path, car_loan_sqlite, FIRST, LAST, instance=instance)
        assert result.success
        # A single-run backfill: one run materialized all eight partitions of each asset.
        assert len(instance.get_runs()) == 1
        for role in ("entity", "labels"):
            for key in (
                Dataset.build(contract).keys.raw[role],
                Dataset.build(contract).keys.validated[role],
            ):
                done = instance.get_materialized_partitions(key)
                assert len(done) == 8, key
    parts = Dataset.build(contract).partitions
    keys = parts.keys()[:8]
    start, end = parts.window(keys[0])[0], parts.window(keys[-1])[1]
    for role, table in contract.tables.items():
        raw = read(tmp_path, Dataset.build(contract).keys.raw[role])
        valid, quarantined = counts(tmp_path, contract, role)
        assert raw.height == _source_rows(car_loan_sqlite, table, start, end) > 0
        assert valid + quarantined == raw.height
        assert quarantined == 0  # the demo data is clean
    evaluations = checks(result)
    assert evaluations["car_loan/validated_entity:quarantine_rate"].passed
    assert evaluations["car_loan/validated_entity:schema_conformance"].passed
    assert evaluations["car_loan/validated_entity:primary_key_unique"].passed
    mats = {
        m.asset_key.to_user_string(): m
        for m in result.get_asset_materialization_events()
        if m.partition == keys[0]
    }
    meta = mats["car_loan/raw_entity"].materialization.metadata
    assert {"dagster/row_count", "time_range", "schema_hash"} <= set(meta)


def test_validated_types_follow_the_contract(tmp_path, contracts, car_loan_sqlite):
    contract = contracts["car_loan"]
    run_range(contract, tmp_path, car_loan_sqlite, FIRST, FIRST, roles=("entity",))
    valid = read(tmp_path, Dataset.build(contract).keys.validated["entity"])
    assert valid.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert valid.schema["repaid_loan_on_prev_car"] == pl.Boolean
    assert valid.schema["id"] == pl.Int64
    # Every row falls in its partition's window.
    start, end = Dataset.build(contract).partitions.window(FIRST)
    assert valid["timestamp"].min() >= start and valid["timestamp"].max() < end


def test_rerunning_a_partition_is_idempotent(tmp_path, contracts, car_loan_sqlite):
    contract = contracts["car_loan"]
    run_range(contract, tmp_path, car_loan_sqlite, FIRST, "2018-01-08")
    first = _lake_digest(tmp_path)
    run_range(contract, tmp_path, car_loan_sqlite, FIRST, "2018-01-08")
    second = _lake_digest(tmp_path)
    assert first == second
    assert len(first) == 2 * 2 * 3  # 2 partitions x 2 tables x raw/validated/quarantine
    # No temporary files left beside the partitions.
    assert not list(tmp_path.rglob("*.tmp"))


def test_failed_run_leaves_previous_partition_intact(tmp_path, contracts, car_loan_sqlite):
    contract = contracts["car_loan"]
    run_range(contract, tmp_path, car_loan_sqlite, FIRST, FIRST, roles=("entity",))
    before = _lake_digest(tmp_path)
    # The source disappears: the re-run fails, and the stored partition is untouched.
    result = run_range(
        contract,
        tmp_path,
        f"sqlite:///{tmp_path / 'missing' / 'nothing.sqlite'}",
        FIRST,
        FIRST,
        roles=("entity",),
        raise_on_error=False,
    )
    assert not result.success
    assert _lake_digest(tmp_path) == before
    assert not list(tmp_path.rglob("*.tmp"))


def test_small_chunks_give_the_same_partition(tmp_path, contracts, car_loan_sqlite):
    contract = contracts["car_loan"]
    run_range(contract, tmp_path / "a", car_loan_sqlite, FIRST, FIRST, roles=("entity",))
    run_range(
        contract, tmp_path / "b", car_loan_sqlite, FIRST, FIRST, roles=("entity",), chunk_rows=97
    )
    a = read(tmp_path / "a", Dataset.build(contract).keys.validated["entity"])
    b = read(tmp_path / "b", Dataset.build(contract).keys.validated["entity"])
    assert a.height > 97 * 3
    assert a.equals(b)


def test_postgres_source_and_postgres_instance(tmp_path, contracts, pg_url, fresh_pg_url):
    """Source tables on PostgreSQL, Dagster's run and event storage on PostgreSQL too."""
    contract = contracts["car_loan"]
    seed_demo(pg_url, contract)
    # dagster-postgres speaks psycopg2 (SQLAlchemy 2.1 would pick psycopg 3 for a bare URL).
    dagster_url = fresh_pg_url.replace("+psycopg", "+psycopg2")
    overrides = {"storage": {"postgres": {"postgres_url": dagster_url}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        assert "Postgres" in type(instance.run_storage).__name__
        result = run_range(contract, tmp_path, pg_url, FIRST, LAST, instance=instance)
        assert result.success
        assert (
            len(
                instance.get_materialized_partitions(
                    Dataset.build(contract).keys.validated["entity"]
                )
            )
            == 8
        )
    frames = demo_frames(contract)
    parts = Dataset.build(contract).partitions
    start = parts.window(FIRST)[0].replace(tzinfo=None)
    end = parts.window(LAST)[1].replace(tzinfo=None)
    expected = frames["entity"].filter(pl.col("timestamp").is_between(start, end, closed="left"))
    valid = read(tmp_path, Dataset.build(contract).keys.validated["entity"]).sort("id")
    assert valid.height == expected.height
    assert valid["id"].to_list() == expected.sort("id")["id"].to_list()
    assert valid["car_value"].to_list() == expected.sort("id")["car_value"].to_list()
    assert read(tmp_path, Dataset.build(contract).keys.quarantine["entity"]).height == 0


def test_lake_path_is_configurable(tmp_path, contracts, car_loan_sqlite):
    contract = contracts["car_loan"]
    lake_dir = tmp_path / "elsewhere" / "lake"
    run_range(contract, lake_dir, car_loan_sqlite, FIRST, FIRST, roles=("entity",))
    lake = Lake(base_path=f"file://{lake_dir}")
    assert lake.exists(Dataset.build(contract).keys.validated["entity"], FIRST)
    assert lake.scan(Dataset.build(contract).keys.validated["entity"], [FIRST]).collect().height > 0


@pytest.mark.parametrize("name", ["car_price", "credit_card"])
def test_other_problem_types_ingest(tmp_path, contracts, name):
    contract = contracts[name]
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    seed_demo(url, contract)
    keys = Dataset.build(contract).partitions.definition.get_partition_keys()
    result = run_range(contract, tmp_path / "lake", url, keys[0], keys[3])
    assert result.success
    for role in ("entity", "labels"):
        raw = read(tmp_path / "lake", Dataset.build(contract).keys.raw[role], keys[:4])
        valid, quarantined = counts(tmp_path / "lake", contract, role)
        assert valid + quarantined == raw.height
    assert counts(tmp_path / "lake", contract, "entity")[0] > 0


def test_a_validation_range_that_fails_part_way_changes_no_partition(
    tmp_path, contracts, car_loan_sqlite
):
    """Validating a range wrote each partition as it went, so a run failing at the third of
    four partitions had already replaced the first two while Dagster recorded no
    materialization for them: the lake and the catalog disagreed. Now the range's files are
    renamed into place together at the end, and a failed run leaves every one as it was."""
    from ml_assets.ingest.assets import build_raw_asset
    from ml_assets.validate.assets import build_validated_assets

    contract = contracts["car_loan"]
    dataset = Dataset.build(contract)
    last = "2018-01-22"  # four weekly partitions
    assert run_range(contract, tmp_path, car_loan_sqlite, FIRST, last, roles=("entity",)).success
    validated = dataset.keys.validated["entity"]
    stored = ("validated_entity", "quarantine_entity")
    before = {k: v for k, v in _lake_digest(tmp_path).items() if k.split("/")[1] in stored}
    assert len(before) == 8
    lake = Lake(base_path=str(tmp_path))
    raw_key = dataset.keys.raw["entity"]
    keys = dataset.partitions.keys()[:4]
    # the first partition's raw rows change (so a rewrite would show), the third's file breaks
    first = lake.path(raw_key, keys[0])
    pl.read_parquet(first).head(10).write_parquet(first)
    lake.path(raw_key, keys[2]).write_bytes(b"not parquet")
    result = dg.materialize(
        [build_raw_asset(dataset, "entity"), build_validated_assets(dataset, "entity")],
        selection=[validated, dataset.keys.quarantine["entity"]],
        resources=resources(tmp_path, car_loan_sqlite),
        tags=range_tags(FIRST, last),
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "parquet" in str(failure.step_failure_data.error).lower()
    for folder in stored:
        for path in (tmp_path / "car_loan" / folder).glob("*.parquet"):
            name = str(path.relative_to(tmp_path))
            assert _digest(path) == before[name], f"{name} was rewritten by a failed run"
    assert not list(tmp_path.rglob("*.tmp"))
