"""Demo seeding against real databases: SQLite files and a fresh PostgreSQL database."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from ml_assets.contracts.model import ColumnType, Contract, load_contracts
from ml_assets.ingest.demo import DemoError, demo_frames, seed_all, seed_demo, sql_table
from ml_assets.settings import disable_telemetry

POLARS = {
    ColumnType.INT: pl.Int64,
    ColumnType.FLOAT: pl.Float64,
    ColumnType.BOOL: pl.Boolean,
    ColumnType.STRING: pl.String,
    ColumnType.CATEGORY: pl.String,
    ColumnType.DATETIME: pl.Datetime("us"),
    ColumnType.DATE: pl.Date,
}
SQL = {
    ColumnType.INT: sa.BigInteger,
    ColumnType.FLOAT: sa.Float,
    ColumnType.BOOL: sa.Boolean,
    ColumnType.STRING: sa.Text,
    ColumnType.CATEGORY: sa.Text,
    ColumnType.DATETIME: sa.DateTime,
    ColumnType.DATE: sa.Date,
}


@pytest.fixture(scope="module")
def contracts() -> dict[str, Contract]:
    return load_contracts()


@pytest.fixture(scope="module")
def frames(contracts: dict[str, Contract]) -> dict[str, dict[str, pl.DataFrame]]:
    return {name: demo_frames(c) for name, c in contracts.items()}


@pytest.fixture(scope="module")
def sqlite_seeded(
    contracts: dict[str, Contract], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, dict[str, int]]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'source.sqlite'}"
    return url, seed_all(url, contracts)


def nannyml_counts(contract: Contract) -> tuple[int, int]:
    """(entity rows, rows with a known target) straight from nannyml, not from our code."""
    disable_telemetry()
    import nannyml

    assert contract.demo is not None
    reference, analysis, targets = getattr(nannyml, contract.demo.loader)()
    source = {v: k for k, v in contract.demo.rename.items()}.get(contract.target, contract.target)
    known = int(reference[source].notna().sum() + targets[source].notna().sum())
    return len(reference) + len(analysis), known


def windowed(url: str, table: str, column: str, start: dt.datetime, end: dt.datetime) -> list:
    """Rows with start <= column < end, the bounds bound as SQLAlchemy DateTime parameters."""
    engine = sa.create_engine(url)
    try:
        t = sa.Table(table, sa.MetaData(), autoload_with=engine)
        lo = sa.bindparam("lo", start, type_=sa.DateTime())
        hi = sa.bindparam("hi", end, type_=sa.DateTime())
        stmt = sa.select(t).where(t.c[column] >= lo, t.c[column] < hi).order_by(*t.primary_key)
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(stmt)]
    finally:
        engine.dispose()


def frame_window(frame: pl.DataFrame, key: str, column: str, start, end) -> list:
    sel = frame.filter((pl.col(column) >= start) & (pl.col(column) < end)).sort(key)
    return sel.rows()


def count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


# --- frames --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["car_loan", "car_price", "credit_card"])
def test_frames_follow_the_contract(name, contracts, frames) -> None:
    contract, got = contracts[name], frames[name]
    entity_rows, known = nannyml_counts(contract)
    assert got["entity"].height == entity_rows
    assert got["labels"].height == known
    for role, table in contract.tables.items():
        frame = got[role]
        assert frame.columns == list(table.columns)
        assert frame.schema == pl.Schema({c: POLARS[col.type] for c, col in table.columns.items()})
        assert not frame.select(table.key).is_duplicated().any()
        for col_name, col in table.columns.items():
            if not col.nullable:
                assert frame[col_name].null_count() == 0, col_name
            if col.allowed is not None:
                assert set(frame[col_name].drop_nulls().unique()) <= set(col.allowed), col_name


@pytest.mark.parametrize("name", ["car_loan", "car_price", "credit_card"])
def test_labels_arrive_after_the_event(name, contracts, frames) -> None:
    contract = contracts[name]
    entity, labels = frames[name]["entity"], frames[name]["labels"]
    joined = labels.join(
        entity,
        left_on=contract.labels.key_columns,
        right_on=contract.entity.primary_key,
        how="left",
    )
    event, seen = joined[contract.entity.event_time], joined[contract.labels.observed_at]
    assert event.null_count() == 0  # every label belongs to an entity row
    assert (seen > event).all()
    assert contract.demo is not None
    lo, hi = contract.demo.label_delay_days
    delay_days = (seen - event).dt.total_microseconds() / 86_400e6
    assert delay_days.min() >= lo - 1e-6
    assert delay_days.max() <= hi


def test_car_loan_target_becomes_int(frames) -> None:
    repaid = frames["car_loan"]["labels"]["repaid"]
    assert repaid.dtype == pl.Int64
    assert set(repaid.unique()) == {0, 1}


def test_same_seed_same_frames(contracts, frames) -> None:
    contract = contracts["car_loan"]
    again = demo_frames(contract, seed=0, chunk_rows=30_000)
    for role in ("entity", "labels"):
        assert again[role].equals(frames["car_loan"][role])
    other = demo_frames(contract, seed=1)
    assert other["entity"].equals(frames["car_loan"]["entity"])
    assert not other["labels"].equals(frames["car_loan"]["labels"])


def test_quality_variant_has_nulls_where_the_contract_allows(contracts) -> None:
    contract = contracts["car_loan"]
    entity = demo_frames(contract, quality=True)["entity"]
    with_nulls = {c for c in entity.columns if entity[c].null_count() > 0}
    nullable = {c for c, col in contract.entity.columns.items() if col.nullable}
    assert with_nulls == nullable == {"salary_range", "driver_tenure"}


def test_quality_needs_a_quality_loader(contracts) -> None:
    with pytest.raises(DemoError, match="quality_loader"):
        demo_frames(contracts["car_price"], quality=True)


def test_rows_resamples_to_n_unique_keys(contracts, frames) -> None:
    contract = contracts["credit_card"]
    n = 25_000
    got = demo_frames(contract, rows=n, seed=3, chunk_rows=7_000)
    entity, labels = got["entity"], got["labels"]
    assert entity.height == n
    assert entity["id"].to_list() == list(range(n))
    assert labels["id"].is_unique().all()
    assert set(labels["id"]) <= set(entity["id"])
    base = frames["credit_card"]["entity"]
    assert set(entity["timestamp"]) <= set(base["timestamp"])
    assert entity["timestamp"].is_sorted()
    # Chunking does not change the result.
    whole = demo_frames(contract, rows=n, seed=3)
    assert whole["entity"].equals(entity)
    assert whole["labels"].equals(labels)


# --- SQLite --------------------------------------------------------------------------------


def test_seed_all_sqlite_counts_types_and_keys(contracts, sqlite_seeded) -> None:
    url, seeded = sqlite_seeded
    assert set(seeded) == set(contracts)
    engine = sa.create_engine(url)
    inspector = sa.inspect(engine)
    try:
        for name, contract in contracts.items():
            entity_rows, known = nannyml_counts(contract)
            assert contract.entity.table and contract.labels.table
            expected = {contract.entity.table: entity_rows, contract.labels.table: known}
            assert seeded[name] == expected
            for role, table in contract.tables.items():
                assert table.table is not None
                assert count(url, table.table) == expected[table.table]
                reflected = {c["name"]: c for c in inspector.get_columns(table.table)}
                assert list(reflected) == list(table.columns)
                for col_name, col in table.columns.items():
                    assert isinstance(reflected[col_name]["type"], SQL[col.type]), (role, col_name)
                pk = inspector.get_pk_constraint(table.table)["constrained_columns"]
                assert pk == table.key
                indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes(table.table)}
                assert (table.time_column,) in indexed
                with engine.connect() as conn:
                    keys = ", ".join(table.key)
                    distinct = conn.execute(
                        sa.text(f"SELECT COUNT(*) FROM (SELECT DISTINCT {keys} FROM {table.table})")
                    ).scalar_one()
                assert distinct == expected[table.table]
    finally:
        engine.dispose()


def test_sqlite_stores_sqlalchemy_datetime_text(contracts, sqlite_seeded) -> None:
    url, _ = sqlite_seeded
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            for contract in contracts.values():
                raw = conn.execute(
                    sa.text(
                        f"SELECT {contract.entity.event_time}, typeof({contract.entity.event_time})"
                        f" FROM {contract.entity.table} LIMIT 5"
                    )
                ).all()
                for text, kind in raw:
                    assert kind == "text"
                    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", text)
    finally:
        engine.dispose()


def test_sqlite_time_window_matches_polars(contracts, frames, sqlite_seeded) -> None:
    url, _ = sqlite_seeded
    contract = contracts["car_loan"]
    entity, labels = frames["car_loan"]["entity"], frames["car_loan"]["labels"]
    # Bounds on existing values (millisecond precision) exercise inclusive/exclusive edges.
    start, end = entity["timestamp"][20_000], entity["timestamp"][27_345]
    got = windowed(url, "car_loan_applications", "timestamp", start, end)
    want = frame_window(entity, "id", "timestamp", start, end)
    assert len(want) == 27_345 - 20_000
    assert got == want
    seen = labels["observed_at"].sort()  # labels are in key order, not time order
    lo, hi = seen[5_000], seen[9_000]
    got_labels = windowed(url, contract.labels.table or "", "observed_at", lo, hi)
    assert len(got_labels) == 9_000 - 5_000
    assert got_labels == frame_window(labels, "id", "observed_at", lo, hi)


def test_seed_rows_into_sqlite(contracts, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'scaled.sqlite'}"
    contract = contracts["car_loan"]
    counts = seed_demo(url, contract, rows=20_000, chunk_rows=6_000, seed=7)
    assert counts == {"car_loan_applications": 20_000, "car_loan_outcomes": 20_000}
    again = seed_demo(url, contract, rows=10_000, seed=7)  # replace=True: no key clashes
    assert again["car_loan_applications"] == count(url, "car_loan_applications") == 10_000


def test_query_tables_cannot_be_seeded(contracts, tmp_path: Path) -> None:
    data = contracts["car_loan"].model_dump(by_alias=True)
    data["entity"]["table"] = None
    data["entity"]["query"] = "SELECT * FROM somewhere"
    with pytest.raises(DemoError, match="query"):
        seed_demo(f"sqlite:///{tmp_path / 'q.sqlite'}", Contract.model_validate(data))


def test_sql_table_maps_types(contracts) -> None:
    contract = contracts["credit_card"]
    table = sql_table(contract.entity, "reporting.cards", sa.MetaData())
    assert table.schema == "reporting" and table.name == "cards"
    assert [c.name for c in table.primary_key] == ["id"]
    assert isinstance(table.c.app_behavioral_score.type, sa.Float)
    assert table.c.app_behavioral_score.type.precision == 53
    assert table.c.timestamp.type.timezone is False
    assert isinstance(table.c.is_customer.type, sa.Boolean)


# --- PostgreSQL ----------------------------------------------------------------------------


def test_postgres_round_trip(contracts, frames, pg_url: str) -> None:
    contract = contracts["car_loan"]
    entity, labels = frames["car_loan"]["entity"], frames["car_loan"]["labels"]
    expected = {"car_loan_applications": entity.height, "car_loan_outcomes": labels.height}
    assert seed_demo(pg_url, contract) == expected
    assert seed_demo(pg_url, contract) == expected  # replace=True drops and recreates
    for table, n in expected.items():
        assert count(pg_url, table) == n

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            kinds = dict(
                conn.execute(
                    sa.text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = 'car_loan_applications'"
                    )
                ).all()
            )
            nulls = conn.execute(
                sa.text("SELECT COUNT(*) FROM car_loan_applications WHERE salary_range IS NULL")
            ).scalar_one()
    finally:
        engine.dispose()
    assert kinds["timestamp"] == "timestamp without time zone"
    assert kinds["car_value"] == "double precision"
    assert kinds["repaid_loan_on_prev_car"] == "boolean"
    assert nulls == 0

    start, end = entity["timestamp"][31_000], entity["timestamp"][52_000]
    got = windowed(pg_url, "car_loan_applications", "timestamp", start, end)
    assert got == frame_window(entity, "id", "timestamp", start, end)
    seen = labels["observed_at"].sort()
    lo, hi = seen[70_000], seen[71_500]
    got_labels = windowed(pg_url, "car_loan_outcomes", "observed_at", lo, hi)
    assert len(got_labels) == 71_500 - 70_000
    assert got_labels == frame_window(labels, "id", "observed_at", lo, hi)


def test_postgres_quality_nulls_survive_copy(contracts, pg_url: str) -> None:
    contract = contracts["car_loan"]
    entity = demo_frames(contract, quality=True)["entity"]
    seed_demo(pg_url, contract, quality=True)
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            nulls = conn.execute(
                sa.text(
                    "SELECT COUNT(*) FILTER (WHERE salary_range IS NULL), "
                    "COUNT(*) FILTER (WHERE driver_tenure IS NULL), "
                    "COUNT(*) FILTER (WHERE salary_range = '') FROM car_loan_applications"
                )
            ).one()
    finally:
        engine.dispose()
    assert tuple(nulls) == (
        entity["salary_range"].null_count(),
        entity["driver_tenure"].null_count(),
        0,
    )
