"""The two ways of computing window aggregates give the same values, bit for bit.

A bucket whose events hold a few groups is computed by binary searches over each group's
events (``_few_group_features``); one with many groups by as-of joins by group. Here both run
on the same random rows (shared timestamps, null groups, null values, labels observed at
random times) and on hand-made edge cases, and must agree exactly, with any chunk of points,
for integer, boolean, text and category groups and every kind of aggregate.
"""

from __future__ import annotations

import datetime as dt
import random

import polars as pl
import pytest

from ml_assets.features import windows
from ml_assets.features.compute import compute_features, entity_events, label_events
from ml_assets.features.spec import FeatureSpec, Source, parse_feature_spec
from ml_assets.features.windows import TIME, window_aggregates

from .conftest import U, entity, labels

BY_NUMBERS = """
dataset: toy
aggregates:
  - {name: n_3d, source: entity, group_by: qty, agg: count, window: 3d}
  - {name: sum_3d, source: entity, group_by: qty, agg: sum, column: amount, window: 3d}
  - {name: mean_10d, source: entity, group_by: qty, agg: mean, column: amount, window: 10d}
  - {name: last_2d, source: entity, group_by: qty, agg: last, column: amount, window: 2d}
  - {name: bad_10d, source: labels, group_by: qty, agg: rate, column: bad, equals: 1, window: 10d}
  - {name: labels_5d, source: labels, group_by: member, agg: count, window: 5d}
  - {name: band_5d, source: entity, group_by: member, agg: last, column: band, window: 5d}
  - {name: qty_sum_1d, source: entity, group_by: member, agg: sum, column: qty, window: 1d}
"""


@pytest.fixture(scope="module")
def by_numbers(toy_contract) -> FeatureSpec:
    """Aggregates grouped by an integer and by a boolean column."""
    return parse_feature_spec(BY_NUMBERS, toy_contract, "by_numbers.yaml")


def _rows(seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """300 rows over 30 days on a 6-hour grid (many shared instants), and their labels."""
    rng = random.Random(seed)
    start = U(2024, 1, 1)
    rows, labs, members = [], [], []
    for i in range(300):
        ts = start + dt.timedelta(hours=6 * rng.randrange(0, 4 * 30))
        shop = rng.choice(["a", "b", "c", None])
        band = rng.choice(["low", "mid", "high", None])
        amount = rng.choice([None, float(rng.randrange(100)) / 7])
        rows.append((i, ts, shop, band, amount, rng.randrange(4)))
        members.append(rng.choice([True, False, None]))
        if rng.random() < 0.8:
            labs.append((i, ts + dt.timedelta(hours=rng.randrange(1, 24 * 12)), rng.randrange(2)))
    ent = entity(sorted(rows, key=lambda r: r[1])).with_columns(
        pl.Series("member", members, dtype=pl.Boolean)
    )
    return ent, labels(labs)


def _events(spec: FeatureSpec, ent: pl.DataFrame, lab: pl.DataFrame) -> dict:
    return {Source.ENTITY: entity_events(spec, ent), Source.LABELS: label_events(spec, lab, ent)}


def _points(ent: pl.DataFrame) -> pl.DataFrame:
    """Every row's groups at its time, plus points between, before and after the events, of
    groups without events and without a group; out of time order."""
    rows = ent.select("shop", "band", "qty", "member", pl.col("ts").alias(TIME))
    extra = pl.DataFrame(
        {
            "shop": ["a", "zz", None, "b"],
            "band": ["mid", None, "low", "high"],
            "qty": [1, 99, None, 2],
            "member": [True, None, False, True],
            TIME: [U(2023, 12, 1), U(2024, 1, 10, 3), U(2024, 2, 15), U(2024, 1, 20, 1)],
        },
        schema=rows.schema,
    )
    return pl.concat([rows, extra]).reverse()


@pytest.fixture
def as_of_joins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bucket computed by as-of joins by group, whatever its number of groups."""
    monkeypatch.setattr(windows, "FEW_GROUPS", 0)
    monkeypatch.setattr(windows, "ROWS_PER_GROUP", 10**12)


def _taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each bucket took the few-groups way (spied on)."""
    taken: list[bool] = []
    few = windows._few_group_features

    def spy(*args, **kwargs):
        out = few(*args, **kwargs)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(windows, "_few_group_features", spy)
    return taken


@pytest.mark.parametrize("spec_name", ["toy_spec", "by_numbers"])
@pytest.mark.parametrize("seed", [1, 2])
def test_few_groups_and_as_of_joins_give_the_same_aggregates(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, spec_name: str, seed: int
) -> None:
    spec = request.getfixturevalue(spec_name)
    ent, lab = _rows(seed)
    points = _points(ent)
    taken = _taken(monkeypatch)
    few = {
        c: window_aggregates(spec, points, _events(spec, ent, lab), chunk_rows=c)
        for c in (7, 10**9)
    }
    assert taken and all(taken)  # text, category, integer and boolean groups: all few
    # Not trivial: in every column, nulls and values other than zero.
    for a in spec.aggregates:
        column = few[10**9].get_column(a.name)
        assert column.null_count() > 0, a.name
        assert column.drop_nulls().cast(pl.String).is_in(["0", "0.0"]).not_().any(), a.name
    with monkeypatch.context() as m:
        m.setattr(windows, "FEW_GROUPS", 0)
        m.setattr(windows, "ROWS_PER_GROUP", 10**12)
        joined = window_aggregates(spec, points, _events(spec, ent, lab))
    assert not taken[-1]  # the last bucket really went through the as-of joins
    for chunk, frame in few.items():
        assert frame.equals(joined), chunk


@pytest.mark.parametrize("way", ["few groups", "as-of joins"])
def test_last_is_the_latest_value_and_only_while_in_the_window(
    request: pytest.FixtureRequest, toy_spec: FeatureSpec, way: str
) -> None:
    """An event without a value does not hide an older value, nor make a stale one fresh."""
    if way == "as-of joins":
        request.getfixturevalue("as_of_joins")
    t = U(2024, 2, 1)
    day = dt.timedelta(days=1)
    ent = entity(
        [
            (1, t, "x", "low", 1.0, 1),
            (2, t - 8 * day, "x", "low", 5.0, 1),  # x's latest value: out of the 7 days
            (3, t - day, "x", "low", None, 1),  # in the window, without a value
            (4, t, "y", "low", 1.0, 1),
            (5, t - 3 * day, "y", "low", 3.0, 1),  # y's latest value: in the window
            (6, t - day, "y", "low", None, 1),  # later, without a value
        ]
    )
    out = compute_features(toy_spec, ent, _events(toy_spec, ent, labels([])))
    got = {r["id"]: (r["n_7d"], r["last_7d"], r["mean_7d"]) for r in out.to_dicts()}
    assert got[1] == (1, None, None)
    assert got[4] == (2, 3.0, 3.0)


@pytest.mark.parametrize("way", ["few groups", "as-of joins"])
def test_no_events_give_zero_counts_and_null_values(
    request: pytest.FixtureRequest, toy_spec: FeatureSpec, way: str
) -> None:
    if way == "as-of joins":
        request.getfixturevalue("as_of_joins")
    ent, _ = _rows(3)
    none = ent.head(0)
    points = _points(ent).head(5)
    out = window_aggregates(toy_spec, points, _events(toy_spec, none, labels([])))
    grouped = points.get_column("shop").is_not_null()
    assert out.get_column("n_7d").to_list() == [0 if g else None for g in grouped]
    assert out.get_column("labels_30d").to_list() == [0 if g else None for g in grouped]
    assert out.get_column("last_7d").null_count() == points.height
    assert out.get_column("mean_7d").null_count() == points.height
