"""Fixtures of the feature tests: a small hand-made contract, its spec, real databases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import polars as pl
import pytest
import sqlalchemy as sa

from ml_assets.contracts import Contract, parse_contract
from ml_assets.features.online import META_TABLE, table_name
from ml_assets.features.spec import FeatureSpec, parse_feature_spec

TOY_CONTRACT = """
name: toy
version: 1.0.0
owner: tests@example.com
problem_type: binary
target: bad
partitioning: {granularity: daily, start: "2024-01-01", end: "2024-03-01"}
entity:
  table: toy_rows
  primary_key: [id]
  event_time: ts
  columns:
    id: {type: int}
    ts: {type: datetime}
    shop: {type: string, nullable: true}
    band: {type: category, allowed: [low, mid, high], nullable: true}
    amount: {type: float, nullable: true}
    qty: {type: int}
    member: {type: bool}
labels:
  table: toy_labels
  key: [id]
  observed_at: seen_at
  columns:
    id: {type: int}
    seen_at: {type: datetime}
    bad: {type: int, allowed: [0, 1]}
"""

TOY_FEATURES = """
dataset: toy
row:
  - {name: amount, op: passthrough, column: amount}
  - {name: band_rank, op: map, column: band, mapping: {low: 0, mid: 1, high: 2}}
  - {name: amount_per_qty, op: ratio, numerator: amount, denominator: qty}
  - {name: log_qty, op: log1p, column: qty}
  - {name: day, op: date_part, part: day}
aggregates:
  - {name: n_7d, source: entity, group_by: shop, agg: count, window: 7d}
  - {name: sum_7d, source: entity, group_by: shop, agg: sum, column: amount, window: 7d}
  - {name: mean_7d, source: entity, group_by: shop, agg: mean, column: amount, window: 7d}
  - {name: last_7d, source: entity, group_by: shop, agg: last, column: amount, window: 7d}
  - {name: bad_rate_30d, source: labels, group_by: shop, agg: rate, column: bad, equals: 1, window: 30d}
  - {name: labels_30d, source: labels, group_by: shop, agg: count, window: 30d}
  - {name: band_n_1d, source: entity, group_by: band, agg: count, window: 1d}
request:
  - {name: hour, op: date_part, part: hour}
  - {name: weekday, op: date_part, part: weekday}
"""


def U(*args: int) -> dt.datetime:
    """An aware UTC datetime."""
    return dt.datetime(*args, tzinfo=dt.UTC)


ENTITY_SCHEMA = {
    "id": pl.Int64,
    "ts": pl.Datetime("us", "UTC"),
    "shop": pl.String,
    "band": pl.String,
    "amount": pl.Float64,
    "qty": pl.Int64,
    "member": pl.Boolean,
}
LABEL_SCHEMA = {"id": pl.Int64, "seen_at": pl.Datetime("us", "UTC"), "bad": pl.Int64}


def entity(rows: list[tuple]) -> pl.DataFrame:
    """Toy entity rows from (id, ts, shop, band, amount, qty) tuples."""
    return pl.DataFrame([(*r, False) for r in rows], schema=ENTITY_SCHEMA, orient="row")


def labels(rows: list[tuple]) -> pl.DataFrame:
    """Toy labels from (id, seen_at, bad) tuples."""
    return pl.DataFrame(rows, schema=LABEL_SCHEMA, orient="row")


@pytest.fixture(scope="session")
def toy_contract() -> Contract:
    return parse_contract(TOY_CONTRACT, "toy.yaml")


@pytest.fixture(scope="session")
def toy_spec(toy_contract: Contract) -> FeatureSpec:
    return parse_feature_spec(TOY_FEATURES, toy_contract, "toy_features.yaml")


def drop_store(url: str, dataset: str) -> None:
    """Remove a dataset's online table and registry row, so each test starts empty."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table_name(dataset)}"')
            if sa.inspect(conn).has_table(META_TABLE):
                conn.execute(
                    sa.text(f"DELETE FROM {META_TABLE} WHERE dataset = :d"), {"d": dataset}
                )
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An online store on a tmp SQLite file, or on the session's PostgreSQL database.

    PostgreSQL comes from the shared ``pg_url`` fixture: unreachable means failed, never skipped.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'online.sqlite'}"
        return
    url = request.getfixturevalue("pg_url")
    drop_store(url, "toy")
    yield url
    drop_store(url, "toy")
