"""The online store on SQLite and PostgreSQL, the client, and the serving path's parity."""

from __future__ import annotations

import datetime as dt
import sqlite3

import polars as pl
import pytest
import sqlalchemy as sa

from ml_assets.features.compute import aggregate_snapshot, compute_features
from ml_assets.features.online import (
    OnlineClient,
    known_groups,
    online_features,
    read_table,
    table_name,
    write_snapshot,
)
from ml_assets.features.parity import compare_features, parity_check
from ml_assets.features.spec import FeatureSpec

from .conftest import U, entity, labels
from .test_compute import TOY_LABELS, TOY_ROWS, events

AT = U(2024, 1, 9)


def _write(
    url: str, spec: FeatureSpec, ent: pl.DataFrame, lab: pl.DataFrame, at: dt.datetime
) -> None:
    engine = sa.create_engine(url)
    try:
        snap = aggregate_snapshot(
            spec, events(spec, ent, lab), at, known_groups(engine, spec.dataset)
        )
        write_snapshot(engine, spec, snap, at)
    finally:
        engine.dispose()


def _content(url: str, dataset: str) -> pl.DataFrame:
    engine = sa.create_engine(url)
    try:
        return read_table(engine, dataset)
    finally:
        engine.dispose()


def test_upsert_is_idempotent_and_keyed(store_url: str, toy_spec: FeatureSpec) -> None:
    ent, lab = entity(TOY_ROWS), labels(TOY_LABELS)
    _write(store_url, toy_spec, ent, lab, AT)
    first = _content(store_url, "toy")
    _write(store_url, toy_spec, ent, lab, AT)
    second = _content(store_url, "toy")
    # Same content (updated_at records the second write), no duplicate keys.
    assert first.drop("updated_at").equals(second.drop("updated_at"))
    assert second.select("group_column", "group_value").is_duplicated().sum() == 0
    # Groups: shops seen (x, y), every allowed band, bands seen.
    assert set(map(tuple, second.select("group_column", "group_value").rows())) == {
        ("shop", "x"),
        ("shop", "y"),
        ("band", "low"),
        ("band", "mid"),
        ("band", "high"),
    }
    engine = sa.create_engine(store_url)
    try:
        pk = sa.inspect(engine).get_pk_constraint(table_name("toy"))
        assert pk["constrained_columns"] == ["group_column", "group_value"]
    finally:
        engine.dispose()
    x = second.filter(pl.col("group_value") == "x").to_dicts()[0]
    assert (x["n_7d"], x["sum_7d"], x["bad_rate_30d"], x["labels_30d"]) == (2, 20.0, 0.5, 2)
    assert x["as_of"].replace(tzinfo=None) == AT.replace(tzinfo=None)


def test_a_group_whose_events_left_the_window_is_reset(
    store_url: str, toy_spec: FeatureSpec
) -> None:
    ent, lab = entity(TOY_ROWS), labels(TOY_LABELS)
    _write(store_url, toy_spec, ent, lab, AT)
    later = U(2024, 3, 1)
    # A month later, only events of the last window are read: none for shop y.
    recent = ent.filter(pl.col("ts") >= later - dt.timedelta(days=30))
    _write(store_url, toy_spec, recent, lab.head(0), later)
    y = _content(store_url, "toy").filter(pl.col("group_value") == "y").to_dicts()[0]
    assert (y["n_7d"], y["sum_7d"], y["mean_7d"], y["labels_30d"]) == (0, 0.0, None, 0)
    with OnlineClient(store_url) as client:
        assert client.as_of("toy") == later


def test_client_gets_a_batch_in_one_query_with_defaults(
    store_url: str, toy_spec: FeatureSpec
) -> None:
    _write(store_url, toy_spec, entity(TOY_ROWS), labels(TOY_LABELS), AT)
    with OnlineClient(store_url) as client:
        assert client.as_of("toy") == AT
        assert client.as_of("nope") is None
        statements: list[str] = []
        conn = client._connection()
        if isinstance(conn.driver_connection, sqlite3.Connection):
            conn.driver_connection.set_trace_callback(statements.append)
        keys = [
            {"shop": "x", "band": "low"},
            {"shop": "never-seen", "band": None},
            {"shop": None, "band": "high"},
            {"shop": "x", "band": "mid"},
        ]
        got = client.get("toy", keys)
        if statements:
            assert len(statements) == 1, statements
        assert got.height == 4
        assert got.get_column("n_7d").to_list() == [2, 0, None, 2]  # unseen: count 0
        assert got.get_column("sum_7d").to_list() == [20.0, 0.0, None, 20.0]
        assert got.get_column("mean_7d").to_list() == [20.0, None, None, 20.0]
        assert got.get_column("band_n_1d").to_list() == [0, None, 0, 0]
        assert got.schema["n_7d"] == pl.Int64 and got.schema["bad_rate_30d"] == pl.Float64
        with pytest.raises(ValueError, match="pass keys as mappings"):
            client.get("toy", ["x"])
        with pytest.raises(LookupError, match="no features of dataset 'nope'"):
            client.get("nope", [{"shop": "x"}])


def test_serving_path_equals_offline_path_at_the_store_time(
    store_url: str, toy_spec: FeatureSpec
) -> None:
    ent, lab = entity(TOY_ROWS), labels(TOY_LABELS)
    _write(store_url, toy_spec, ent, lab, AT)
    with OnlineClient(store_url) as client:
        report = parity_check(toy_spec, ent, events(toy_spec, ent, lab), client, AT)
        assert report.passed, report.examples
        assert report.rows == ent.height
        # And by hand: a request record (no event time: the request time stamps it).
        record = {"id": 99, "shop": "x", "band": "low", "amount": 8.0, "qty": 2, "member": True}
        served = online_features(toy_spec, [record], client, request_time=AT)
    restamped = entity([(99, AT, "x", "low", 8.0, 2)])
    offline = compute_features(toy_spec, restamped, events(toy_spec, ent, lab))
    assert served.columns == offline.columns
    assert compare_features(offline, served, toy_spec.names).passed
    row = served.to_dicts()[0]
    assert (row["n_7d"], row["amount_per_qty"], row["hour"], row["weekday"]) == (2, 4.0, 0, 2)


def test_request_records_are_typed_like_validated_rows(tmp_path, toy_spec: FeatureSpec) -> None:
    url = f"sqlite:///{tmp_path / 'online.sqlite'}"
    _write(url, toy_spec, entity(TOY_ROWS), labels(TOY_LABELS), AT)
    records = [
        # JSON-ish payload: ints for floats, ISO text for the time, extra fields ignored.
        {"shop": "x", "band": "mid", "amount": 8, "qty": 4, "ts": "2024-01-09T00:00:00Z", "x": 1},
        {"shop": "y", "band": None, "amount": None, "qty": 1, "ts": "2024-01-09T06:30:00+00:00"},
    ]
    with OnlineClient(url) as client:
        out = online_features(toy_spec, records, client)
        assert out.get_column("ts").to_list() == [AT, AT + dt.timedelta(hours=6, minutes=30)]
        assert out.get_column("amount_per_qty").to_list() == [2.0, None]
        assert out.get_column("band_rank").to_list() == [1, None]
        assert out.get_column("hour").to_list() == [0, 6]
        with pytest.raises(ValueError, match=r"lack \['qty'\]"):
            online_features(toy_spec, [{"shop": "x", "band": "low", "amount": 1.0}], client)


def test_client_recovers_when_the_store_is_rebuilt_with_other_features(
    tmp_path, toy_spec: FeatureSpec, toy_contract
) -> None:
    from ml_assets.features.spec import parse_feature_spec

    url = f"sqlite:///{tmp_path / 'online.sqlite'}"
    _write(url, toy_spec, entity(TOY_ROWS), labels(TOY_LABELS), AT)
    with OnlineClient(url) as client:
        assert client.get("toy", [{"shop": "x", "band": "low"}]).get_column("n_7d").to_list() == [2]
        fewer = parse_feature_spec(
            "dataset: toy\naggregates:\n"
            "  - {name: n_30d, source: entity, group_by: shop, agg: count, window: 30d}\n",
            toy_contract,
        )
        _write(url, fewer, entity(TOY_ROWS), labels(TOY_LABELS), AT)  # table rebuilt
        got = client.get("toy", [{"shop": "x"}])
        assert got.columns == ["n_30d"] and got.get_column("n_30d").to_list() == [3]
