"""split_valid's own evaluation of the pandera rules agrees with pandera's report, row by row.

``split_valid`` evaluates the generated schema's checks in one polars query and writes each bad
row's reasons itself; ``_split_valid(..., use_pandera=True)`` has pandera find the failures
(``schema.validate(lazy=True)`` + failure cases), the way every partition was checked before.
Both must give the same valid frame, the same quarantine frame (reason texts and their order
included) and the same report, on every kind of bad data.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Iterator
from typing import Any

import pandera.polars as pa
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_assets.contracts import BUNDLED_DIR, Contract, parse_contract
from ml_assets.contracts.model import Column, ColumnType, Table
from ml_assets.validate import quarantine
from ml_assets.validate.quarantine import _split_valid, split_valid
from ml_assets.validate.schema import pandera_schema

CAR_LOAN = parse_contract((BUNDLED_DIR / "car_loan.yaml").read_text(encoding="utf-8"))

# Small, but with every column type, a two-column key, nullable and non-nullable ranges, int
# and string categories, and a timezone with a DST gap.
TINY = parse_contract(
    """
name: tiny
version: 1.0.0
owner: qa@example.com
problem_type: binary
target: label
partitioning: {granularity: daily, start: "2024-01-01", timezone: Europe/Amsterdam}
entity:
  table: tiny_events
  primary_key: [id, shop]
  event_time: ts
  columns:
    id: {type: int, min: 1}
    shop: {type: string}
    ts: {type: datetime}
    day: {type: date, nullable: true}
    amount: {type: float, min: 0, max: 100}
    ratio: {type: float, nullable: true, min: -1, max: 1}
    kind: {type: category, allowed: [a, b]}
    level: {type: int, nullable: true, allowed: [1, 2, 3]}
    note: {type: string, nullable: true}
    flag: {type: bool}
labels:
  table: tiny_labels
  key: [id, shop]
  observed_at: seen_at
  columns:
    id: {type: int}
    shop: {type: string}
    seen_at: {type: datetime}
    label: {type: int, allowed: [0, 1]}
""",
    "tiny.yaml",
)

CONTRACTS = {"car_loan": CAR_LOAN, "tiny": TINY}
CASES = [
    # The entity tables are the big ones (5-9 s against pandera itself): slow, out of the fast core.
    pytest.param(name, role, marks=[pytest.mark.slow] if role == "entity" else [])
    for name in CONTRACTS
    for role in ("entity", "labels")
]


def _good(col: Column, i: int) -> Any:
    """A valid value for row i (distinct per row where it could be part of a key)."""
    kind = col.type
    if col.allowed is not None:
        return col.allowed[i % len(col.allowed)]
    if kind is ColumnType.INT:
        low = int(col.min) if col.min is not None else 0
        return low + i if col.max is None else low + i % int(col.max - low + 1)
    if kind is ColumnType.FLOAT:
        low = col.min if col.min is not None else -10.0
        high = col.max if col.max is not None else low + 100.0
        return low + (high - low) * (i % 7) / 6
    if kind is ColumnType.BOOL:
        return i % 2 == 0
    if kind is ColumnType.STRING:
        return f"s{i}"
    if kind is ColumnType.DATETIME:
        return dt.datetime(2024, 1, 1, 8) + dt.timedelta(minutes=7 * i)
    return dt.date(2024, 1, 1) + dt.timedelta(days=i)


def _bad(col: Column) -> list[Any]:
    """Values that break a column's type or rules (and a few edge cases that do not)."""
    kind = col.type
    values: list[Any] = [None]
    if kind is ColumnType.INT:
        values += ["x", 3.5, 7.0, " 12 "]
    elif kind is ColumnType.FLOAT:
        values += ["lots", math.nan, math.inf, -math.inf, " 1.5 "]
    elif kind is ColumnType.BOOL:
        values += [7, "maybe", 1, "no"]
    elif kind is ColumnType.CATEGORY:
        values += ["zzz", 5, ""]
    elif kind is ColumnType.STRING:
        values += [12, ""]
    elif kind is ColumnType.DATETIME:
        values += [
            "nonsense",
            "2024-01-01 12:00:00+02:00",  # aware
            "2024-01-01T11:00:00Z",  # ISO with T and Z
            "2024-01-02",  # a date
            "2024-03-31 02:30:00",  # in Amsterdam's DST gap
            "2024-01-01 10:00",
        ]
    elif kind is ColumnType.DATE:
        values += ["2024-13-01", "2024-02-30", "2024-02-29"]
    if col.min is not None:
        values += [col.min - 1, col.min - 0.001, col.min]
    if col.max is not None:
        values += [col.max + 1, col.max + 0.5, col.max]
    if col.allowed is not None:
        values += [99 if kind is ColumnType.INT else "unseen"]
    return values


def _series(name: str, values: list[Any], text: bool) -> pl.Series:
    """A raw column: its own dtype when polars can give it one, else text (as mixed SQLite)."""
    if not text:
        try:
            return pl.Series(name, values, strict=True)
        except (TypeError, pl.exceptions.PolarsError, OverflowError):
            pass
    return pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String)


def _frame(columns: dict[str, list[Any]], text: bool = False) -> pl.DataFrame:
    return pl.DataFrame([_series(n, v, text) for n, v in columns.items()])


def _good_columns(table: Table, rows: int) -> dict[str, list[Any]]:
    return {name: [_good(col, i) for i in range(rows)] for name, col in table.columns.items()}


def _hand_built(table: Table) -> Iterator[tuple[str, pl.DataFrame]]:
    """Named raw frames, each with one kind of bad data (and a few with everything at once)."""
    rows = 12
    good = _good_columns(table, rows)
    yield "clean", _frame(good)
    yield "clean as text", _frame(good, text=True)
    key = table.key
    for name, col in table.columns.items():
        for bad in _bad(col):
            cols = {n: list(v) for n, v in good.items()}
            cols[name][3] = bad
            cols[name][7] = bad
            yield f"{name}={bad!r}", _frame(cols)
            yield f"{name}={bad!r} as text", _frame(cols, text=True)
    # Duplicate keys: a pair, a triplicate, and a copy whose other columns are bad too.
    cols = {n: list(v) for n, v in good.items()}
    for k in key:
        cols[k][1] = cols[k][0]
        cols[k][5] = cols[k][4]
        cols[k][6] = cols[k][4]
        cols[k][9] = cols[k][8]
    first_free = next(n for n in table.columns if n not in key)
    cols[first_free][9] = _bad(table.columns[first_free])[1]
    yield "duplicate keys", _frame(cols)
    yield "duplicate keys as text", _frame(cols, text=True)
    # Keys that are null or do not cast: equal to each other after the cast.
    cols = {n: list(v) for n, v in good.items()}
    cols[key[0]][2] = None
    cols[key[0]][3] = None
    cols[key[0]][4] = _bad(table.columns[key[0]])[1]
    cols[key[0]][5] = _bad(table.columns[key[0]])[1]
    yield "null and wrong-typed keys", _frame(cols)
    # Every row bad, several reasons per row.
    cols = {
        n: [_bad(col)[1 + i % (len(_bad(col)) - 1)] for i in range(rows)]
        for n, col in table.columns.items()
    }
    yield "all bad", _frame(cols)
    yield "all bad as text", _frame(cols, text=True)
    cols = {
        n: [_bad(col)[i % len(_bad(col))] for i in range(rows)] for n, col in table.columns.items()
    }
    yield "all mixed", _frame(cols)
    # Missing and extra columns.
    frame = _frame(good)
    for name in table.columns:
        yield f"missing {name}", frame.drop(name)
    yield "missing two", frame.drop(list(table.columns)[-2:])
    yield "extra", frame.with_columns(surprise=pl.lit("x"), more=pl.int_range(pl.len()))
    yield "missing and extra", frame.drop(key[0]).with_columns(surprise=pl.lit("x"))
    # Empty frames.
    yield "empty", frame.head(0)
    yield "empty as text", _frame(good, text=True).head(0)
    yield "empty missing", frame.head(0).drop(key[0])
    yield "empty extra", frame.head(0).with_columns(surprise=pl.lit("x"))
    yield "one row", frame.head(1)
    yield "one bad row", _frame(cols).head(1)


def _random_frame(table: Table, seed: int, rows: int, bad_share: float) -> pl.DataFrame:
    """Good rows with random bad values and random duplicate keys."""
    rng = random.Random(seed)
    cols = _good_columns(table, rows)
    names = list(table.columns)
    for i in range(rows):
        while rng.random() < bad_share:
            name = rng.choice(names)
            cols[name][i] = rng.choice(_bad(table.columns[name]))
        if i and rng.random() < bad_share / 4:
            j = rng.randrange(i)
            for k in table.key:
                cols[k][i] = cols[k][j]
    return _frame(cols, text=rng.random() < 0.3)


def _no_pandera(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("split_valid asked pandera although it could check the rules itself")


def assert_same_split(
    raw: pl.DataFrame,
    table: Table,
    tz: str,
    schema: pa.DataFrameSchema,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[pl.DataFrame, pl.DataFrame, quarantine.ValidationReport]:
    expected = _split_valid(raw, table, tz, schema, use_pandera=True)
    with monkeypatch.context() as patch:
        patch.setattr(quarantine, "_pandera_failures", _no_pandera)
        got = split_valid(raw, table, tz, schema)
    assert_frame_equal(got[0], expected[0])
    assert_frame_equal(got[1], expected[1])
    assert got[2] == expected[2]
    assert list(got[2].reasons.items()) == list(expected[2].reasons.items())
    valid, quarantined, report = got
    assert valid.height + quarantined.height == raw.height
    assert report.valid == valid.height and report.quarantined == quarantined.height
    return got


def _schema(contract: Contract, role: str) -> pa.DataFrameSchema:
    return pandera_schema(contract.tables[role], name=f"{contract.name}.{role}")


@pytest.mark.parametrize(("contract", "role"), CASES)
def test_hand_built_bad_data_same_as_pandera(contract: str, role: str, monkeypatch) -> None:
    c = CONTRACTS[contract]
    table = c.tables[role]
    schema = _schema(c, role)
    seen = 0
    for case, raw in _hand_built(table):
        try:
            _, quarantined, _ = assert_same_split(
                raw, table, c.partitioning.timezone, schema, monkeypatch
            )
        except AssertionError as exc:
            raise AssertionError(f"{contract}.{role}, {case}: {exc}") from exc
        seen += quarantined.height > 0
    assert seen > 20  # the cases do quarantine rows


@pytest.mark.parametrize(("contract", "role"), CASES)
@pytest.mark.parametrize("seed", range(6))
def test_random_bad_data_same_as_pandera(contract: str, role: str, seed: int, monkeypatch) -> None:
    c = CONTRACTS[contract]
    table = c.tables[role]
    tz = c.partitioning.timezone
    schema = _schema(c, role)
    for rows, share in ((50, 0.05), (300, 0.3), (40, 0.9)):
        raw = _random_frame(table, seed * 1000 + rows, rows, share)
        assert_same_split(raw, table, tz, schema, monkeypatch)
    # Without a schema name (the frame-level key rule reports no column) and with many bad rows.
    raw = _random_frame(table, seed, 1500, 0.9)
    _, quarantined, _ = assert_same_split(raw, table, tz, pandera_schema(table), monkeypatch)
    assert quarantined.height > 1000


def test_reasons_are_pandera_texts_in_pandera_order(monkeypatch) -> None:
    table = TINY.entity
    good = _good_columns(table, 6)
    good["amount"][1] = "lots"  # wrong type: its rules are not reported on top
    good["kind"][1] = "z"
    good["id"][1] = good["id"][0]
    good["shop"][1] = good["shop"][0]
    good["amount"][2] = math.nan  # null for pandera, and out of range, and not finite
    good["ratio"][2] = math.inf
    good["level"][3] = 4
    good["flag"][3] = None
    good["ts"][4] = "2024-03-31 02:30:00"
    good["id"][4] = 0
    valid, quarantined, report = assert_same_split(
        _frame(good), table, "Europe/Amsterdam", _schema(TINY, "entity"), monkeypatch
    )
    assert valid.height == 1
    assert quarantined["_reason"].to_list() == [
        "duplicate key",
        "amount: wrong type, expected float; duplicate key; kind: isin(['a', 'b'])",
        "amount: not_nullable; amount: less_than_or_equal_to(100.0); "
        "amount: not a finite number; ratio: less_than_or_equal_to(1.0); "
        "ratio: not a finite number",
        "level: isin([1, 2, 3]); flag: not_nullable",
        "ts: wrong type, expected datetime; id: greater_than_or_equal_to(1.0)",
    ]
    assert quarantined["amount"].to_list()[:3] == ["0.0", "lots", "nan"]
    assert report.reasons["duplicate key"] == 2
    assert report.reasons["amount: not a finite number"] == 1


def test_missing_key_column_reasons(monkeypatch) -> None:
    table = CAR_LOAN.entity
    raw = _frame(_good_columns(table, 3)).drop("id")
    _, quarantined, report = assert_same_split(
        raw, table, "UTC", _schema(CAR_LOAN, "entity"), monkeypatch
    )
    assert set(quarantined["_reason"]) == {"missing column: id; duplicate key"}
    assert report.missing_columns == ["id"]


def test_checks_that_cannot_be_taken_go_to_pandera(monkeypatch) -> None:
    """A check that is not one row-wise select of the frame: pandera checks it, as before."""
    table = TINY.entity
    schema = _schema(TINY, "entity")
    amount = schema.columns["amount"]
    odd = pa.DataFrameSchema(
        {
            **schema.columns,
            "amount": pa.Column(
                pl.Float64,
                checks=[
                    *amount.checks,
                    pa.Check(lambda value: value != 42.0, element_wise=True, name="not_42"),
                ],
            ),
        },
        strict=True,
        unique=schema.unique,
        name=schema.name,
    )
    good = _good_columns(table, 5)
    good["amount"][2] = 42.0
    good["amount"][3] = -1.0
    raw = _frame(good)
    typed = split_valid(raw.head(0), table, "Europe/Amsterdam", schema)[0]
    assert quarantine._rules(schema, typed) is not None
    assert quarantine._rules(odd, typed) is None
    calls: list[int] = []
    real = quarantine._pandera_failures

    def counting(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(quarantine, "_pandera_failures", counting)
    _, quarantined, _ = split_valid(raw, table, "Europe/Amsterdam", odd)
    assert calls
    assert quarantined["_reason"].to_list() == [
        "amount: not_42",
        "amount: greater_than_or_equal_to(0.0)",
    ]
