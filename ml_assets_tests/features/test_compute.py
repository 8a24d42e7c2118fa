"""Every feature kind on hand-built data with known answers, and the point-in-time rules."""

from __future__ import annotations

import datetime as dt
import math
import random
import subprocess
import sys

import polars as pl
import pytest

from ml_assets.features.compute import (
    build_training_set,
    compute_features,
    entity_events,
    fingerprint,
    label_events,
    transform_rows,
    window_aggregates,
)
from ml_assets.features.spec import FeatureSpec, Source, parse_feature_spec

from .conftest import U, entity, labels

US = dt.timedelta(microseconds=1)


def events(spec: FeatureSpec, ent: pl.DataFrame, lab: pl.DataFrame | None = None) -> dict:
    lab = lab if lab is not None else labels([])
    return {Source.ENTITY: entity_events(spec, ent), Source.LABELS: label_events(spec, lab, ent)}


def features_of(spec: FeatureSpec, ent: pl.DataFrame, lab: pl.DataFrame | None = None) -> dict:
    """Features by id."""
    out = compute_features(spec, ent, events(spec, ent, lab))
    return {r["id"]: r for r in out.to_dicts()}


# --- row and request features ----------------------------------------------------------------


def test_row_transforms_have_known_answers(toy_spec: FeatureSpec) -> None:
    ent = entity(
        [
            (1, U(2024, 1, 6, 13, 5), "x", "low", 10.0, 4),
            (2, U(2024, 1, 7, 23, 59), "x", "high", None, 0),
            (3, U(2024, 2, 29, 0, 0), None, None, 3.0, 2),
        ]
    )
    out = transform_rows(toy_spec, ent)
    assert out.columns == [
        "amount",
        "band_rank",
        "amount_per_qty",
        "log_qty",
        "day",
        "hour",
        "weekday",
    ]
    assert out.get_column("amount").to_list() == [10.0, None, 3.0]
    assert out.schema["band_rank"] == pl.Int64
    assert out.get_column("band_rank").to_list() == [0, 2, None]  # null band -> null rank
    assert out.get_column("amount_per_qty").to_list() == [2.5, None, 1.5]  # /0 -> null
    assert out.get_column("log_qty").to_list() == pytest.approx([math.log(5), 0.0, math.log(3)])
    assert out.get_column("day").to_list() == [6, 7, 29]
    assert out.get_column("hour").to_list() == [13, 23, 0]
    assert out.get_column("weekday").to_list() == [6, 7, 4]  # Sat, Sun, Thu (ISO: Monday = 1)


def test_map_default_and_date_parts_in_the_declared_timezone(toy_contract) -> None:
    spec = parse_feature_spec(
        """
dataset: toy
timezone: Asia/Tokyo
row:
  - {name: shop_code, op: map, column: shop, mapping: {x: 1.5}, default: -1}
  - {name: weekend, op: date_part, part: is_weekend}
  - {name: month, op: date_part, part: month}
request:
  - {name: hour, op: date_part, part: hour}
""",
        toy_contract,
    )
    ent = entity(
        [
            (1, U(2024, 1, 31, 16, 0), "x", None, 1.0, 1),
            (2, U(2024, 1, 5, 14, 0), "y", None, 1.0, 1),
        ]
    )
    out = transform_rows(spec, ent)
    assert out.get_column("shop_code").to_list() == [1.5, -1.0]
    # 2024-01-31 16:00 UTC is Thursday 1 February 01:00 in Tokyo; 01-05 14:00 is Friday 23:00.
    assert out.get_column("month").to_list() == [2, 1]
    assert out.get_column("hour").to_list() == [1, 23]
    assert out.get_column("weekend").to_list() == [False, False]


# --- aggregates ------------------------------------------------------------------------------


TOY_ROWS = [
    (1, U(2024, 1, 1), "x", "low", 10.0, 1),
    (2, U(2024, 1, 2), "x", "low", 20.0, 1),
    (3, U(2024, 1, 2), "x", "mid", None, 1),
    (4, U(2024, 1, 5), "y", "mid", 5.0, 1),
    (5, U(2024, 1, 9), "x", "low", 40.0, 1),
    (6, U(2024, 1, 9), None, None, 1.0, 1),
]
TOY_LABELS = [(1, U(2024, 1, 3), 1), (2, U(2024, 1, 4), 0), (4, U(2024, 1, 6), 1)]


def test_entity_aggregates_have_known_answers(toy_spec: FeatureSpec) -> None:
    f = features_of(toy_spec, entity(TOY_ROWS), labels(TOY_LABELS))
    cols = ("n_7d", "sum_7d", "mean_7d", "last_7d")
    got = {i: tuple(f[i][c] for c in cols) for i in f}
    assert got == {
        1: (0, 0.0, None, None),  # nothing before
        2: (1, 10.0, 10.0, 10.0),  # row 1; row 3 at the same instant is not "before"
        3: (1, 10.0, 10.0, 10.0),
        4: (0, 0.0, None, None),  # shop y has no history
        # [01-02, 01-09): rows 2 and 3 (the window's start is inclusive), row 1 is out.
        # last: rows 2 and 3 share a time, ordered by key; row 3's amount is null -> 20.
        5: (2, 20.0, 20.0, 20.0),
        6: (None, None, None, None),  # null group -> no aggregate
    }


def test_label_aggregates_use_when_the_label_was_observed(toy_spec: FeatureSpec) -> None:
    f = features_of(toy_spec, entity(TOY_ROWS), labels(TOY_LABELS))
    got = {i: (f[i]["bad_rate_30d"], f[i]["labels_30d"]) for i in f}
    assert got == {
        1: (None, 0),
        2: (None, 0),  # row 1's label is observed on 01-03, after row 2's time
        3: (None, 0),
        4: (None, 0),  # its own shop's label (row 4) comes later
        5: (0.5, 2),  # labels of rows 1 (bad) and 2 (good), both observed before 01-09
        6: (None, None),
    }


def test_an_event_at_or_after_the_row_time_is_never_used(toy_spec: FeatureSpec) -> None:
    t = U(2024, 1, 10, 12)
    ent = entity(
        [
            (1, t, "x", "low", 1.0, 1),  # the row
            (2, t, "x", "low", 100.0, 1),  # exactly at the row's time
            (3, t + US, "x", "low", 1000.0, 1),  # one microsecond after
            (4, t - US, "x", "low", 7.0, 1),  # one microsecond before: used
        ]
    )
    f = features_of(toy_spec, ent)
    assert (f[1]["n_7d"], f[1]["sum_7d"], f[1]["last_7d"]) == (1, 7.0, 7.0)
    assert (f[3]["n_7d"], f[3]["sum_7d"]) == (3, 108.0)  # 1 us later it sees all three


def test_a_label_observed_at_or_after_the_row_time_is_never_used(toy_spec: FeatureSpec) -> None:
    t = U(2024, 1, 20)
    ent = entity(
        [
            (1, t, "x", "low", 1.0, 1),  # the row
            (2, U(2024, 1, 1), "x", "low", 1.0, 1),
            (3, U(2024, 1, 2), "x", "low", 1.0, 1),
            (4, U(2024, 1, 3), "x", "low", 1.0, 1),
        ]
    )
    lab = labels([(2, t, 1), (3, t + US, 1), (4, t - US, 0)])  # at, after, just before
    f = features_of(toy_spec, ent, lab)
    assert (f[1]["labels_30d"], f[1]["bad_rate_30d"]) == (1, 0.0)


def test_window_edges_and_stale_last_values(toy_spec: FeatureSpec) -> None:
    t = U(2024, 2, 1)
    week = dt.timedelta(days=7)
    ent = entity(
        [
            (1, t, "x", "low", 1.0, 1),
            (2, t - week, "x", "low", 2.0, 1),  # exactly the window's start: in
            (3, t - week - US, "x", "low", 4.0, 1),  # just before the start: out
            (4, t, "y", "low", 1.0, 1),
            (5, t - week - US, "y", "low", 9.0, 1),  # y's last value is stale
        ]
    )
    f = features_of(toy_spec, ent)
    assert (f[1]["n_7d"], f[1]["sum_7d"], f[1]["last_7d"]) == (1, 2.0, 2.0)
    assert (f[4]["n_7d"], f[4]["last_7d"], f[4]["mean_7d"]) == (0, None, None)


def test_windows_match_a_brute_force_definition(toy_spec: FeatureSpec) -> None:
    """Random rows with many shared timestamps: cumulative sums + as-of joins give exactly
    what a literal reading of the definition gives."""
    rng = random.Random(7)
    start = U(2024, 1, 1)
    rows, labs = [], []
    for i in range(400):
        ts = start + dt.timedelta(hours=rng.randrange(0, 24 * 40, 6))
        shop = rng.choice(["a", "b", "c", None])
        amount = rng.choice([None, float(rng.randrange(100))])
        rows.append((i, ts, shop, rng.choice(["low", "mid", "high", None]), amount, 1))
        if rng.random() < 0.7:
            labs.append(
                (i, ts + dt.timedelta(hours=rng.randrange(1, 24 * 20, 6)), rng.randrange(2))
            )
    ent, lab = entity(rows), labels(labs)
    got = features_of(toy_spec, ent, lab)
    by_id = {r[0]: r for r in rows}
    label_rows = [(by_id[i][2], seen, bad) for i, seen, bad in labs]
    week, month, day = (dt.timedelta(days=d) for d in (7, 30, 1))
    for i, ts, shop, band, _amount, _q in rows:
        f = got[i]
        if shop is None:
            assert f["n_7d"] is None and f["bad_rate_30d"] is None
        else:
            prior = [r for r in rows if r[2] == shop and ts - week <= r[1] < ts]
            values = [r[4] for r in prior if r[4] is not None]
            assert f["n_7d"] == len(prior)
            assert f["sum_7d"] == pytest.approx(sum(values))
            assert f["mean_7d"] == (pytest.approx(sum(values) / len(values)) if values else None)
            latest = max(((r[1], r[0]) for r in prior if r[4] is not None), default=None)
            assert f["last_7d"] == (by_id[latest[1]][4] if latest else None)
            seen = [b for s, t_seen, b in label_rows if s == shop and ts - month <= t_seen < ts]
            assert f["labels_30d"] == len(seen)
            assert f["bad_rate_30d"] == (pytest.approx(sum(seen) / len(seen)) if seen else None)
        if band is None:
            assert f["band_n_1d"] is None
        else:
            assert f["band_n_1d"] == sum(1 for r in rows if r[3] == band and ts - day <= r[1] < ts)


def test_aggregates_at_arbitrary_points_equal_aggregates_of_rows_at_those_times(
    toy_spec: FeatureSpec,
) -> None:
    """The online store's snapshot is window_aggregates at (group, T): the same function."""
    ent, lab = entity(TOY_ROWS), labels(TOY_LABELS)
    ev = events(toy_spec, ent, lab)
    at = U(2024, 1, 9)
    queries = pl.DataFrame(
        {"shop": ["x", "y", "z", None], "band": ["low", "mid", None, "low"]}
    ).with_columns(pl.lit(at).dt.cast_time_unit("us").alias("__t"))
    out = window_aggregates(toy_spec, queries, ev).to_dicts()
    row5 = features_of(toy_spec, ent, lab)[5]
    assert {k: out[0][k] for k in out[0] if k != "band_n_1d"} == {
        k: row5[k] for k in out[0] if k != "band_n_1d"
    }
    assert out[2]["n_7d"] == 0 and out[2]["last_7d"] is None  # unseen group
    assert out[3]["n_7d"] is None  # null group


# --- training sets ---------------------------------------------------------------------------


def _features_table(toy_spec: FeatureSpec) -> pl.DataFrame:
    rows = [(i, U(2024, 1, 1) + dt.timedelta(days=i), "x", "low", float(i), 1) for i in range(10)]
    return compute_features(toy_spec, entity(rows), events(toy_spec, entity(rows)))


def test_training_set_takes_rows_in_the_window_and_labels_known_at_the_cutoff(
    toy_spec: FeatureSpec,
) -> None:
    feats = _features_table(toy_spec)  # rows on 01-01 .. 01-10
    cutoff = U(2024, 1, 9)
    lab = labels(
        [
            (3, U(2024, 1, 5), 1),  # row outside the window [01-05, 01-09): dropped
            (5, U(2024, 1, 7), 0),  # kept
            (6, cutoff - US, 1),  # observed just before the cutoff: kept
            (7, cutoff, 1),  # observed exactly at the cutoff: not known yet
            (8, cutoff + US, 0),  # observed after the cutoff: excluded
            (9, U(2024, 1, 10), 1),  # row after the cutoff
        ]
    )
    ts = build_training_set(toy_spec, feats, lab, cutoff, dt.timedelta(days=4))
    assert ts.get_column("id").to_list() == [5, 6]
    assert ts.get_column("bad").to_list() == [0, 1]
    assert ts.columns == ["id", "ts", *toy_spec.names, "bad"]
    # Features come from the feature table unchanged (as of each row's own time).
    assert ts.drop("bad").equals(feats.filter(pl.col("id").is_in([5, 6])))


def test_fingerprint_is_content_only(toy_spec: FeatureSpec) -> None:
    feats = _features_table(toy_spec)
    fp = fingerprint(feats, ["id"])
    assert fingerprint(feats.reverse(), ["id"]) == fp
    assert fingerprint(pl.concat([feats.slice(0, 3), feats.slice(3)]), ["id"]) == fp
    changed = feats.with_columns(
        pl.when(pl.col("id") == 4)
        .then(pl.col("amount") + 1e-9)
        .otherwise(pl.col("amount"))
        .alias("amount")
    )
    assert fingerprint(changed, ["id"]) != fp
    assert fingerprint(feats.drop("hour"), ["id"]) != fp
    assert fingerprint(feats.head(0), ["id"]) != fingerprint(feats.head(0).drop("day"), ["id"])


def test_fingerprint_is_the_same_in_another_process(toy_spec: FeatureSpec) -> None:
    feats = _features_table(toy_spec)
    code = (
        "import sys, polars as pl\n"
        "from ml_assets.features.compute import fingerprint\n"
        "print(fingerprint(pl.read_ipc(sys.stdin.buffer), ['id']))\n"
    )
    buf = feats.write_ipc(None).getvalue()
    out = (
        subprocess.run([sys.executable, "-c", code], input=buf, capture_output=True, check=True)
        .stdout.decode()
        .strip()
    )
    assert out == fingerprint(feats, ["id"])


@pytest.mark.slow  # every bundled dataset's full demo data (~10 s)
def test_bundled_specs_compute_on_their_demo_data() -> None:
    """Each bundled features file runs on (a slice of) its demo data, with the declared types."""
    from ml_assets.contracts import load_contracts
    from ml_assets.features import load_feature_spec
    from ml_assets.ingest.demo import demo_frames

    for contract in load_contracts().values():
        spec = load_feature_spec(contract)
        frames = demo_frames(contract, rows=5_000, seed=1)
        ent = frames["entity"].with_columns(
            pl.col(contract.entity.event_time).dt.replace_time_zone("UTC")
        )
        lab = frames["labels"].with_columns(
            pl.col(contract.labels.observed_at).dt.replace_time_zone("UTC")
        )
        out = compute_features(spec, ent, events(spec, ent, lab) if spec.aggregates else None)
        assert out.height == ent.height
        assert dict(out.select(spec.names).schema) == spec.dtypes()
        for a in spec.aggregates:  # every aggregate has values somewhere
            assert out.get_column(a.name).drop_nulls().len() > 0, (contract.name, a.name)


def test_a_key_labelled_twice_takes_its_latest_label_before_the_cutoff(
    toy_spec: FeatureSpec,
) -> None:
    feats = _features_table(toy_spec)
    cutoff = U(2024, 1, 20)
    lab = labels(
        [
            (4, U(2024, 1, 6), 1),
            (4, U(2024, 1, 8), 0),  # a correction, before the cutoff: wins
            (5, U(2024, 1, 7), 0),
            (5, cutoff, 1),  # a correction at the cutoff: not known yet
            (6, U(2024, 1, 9), 1),
        ]
    )
    ts = build_training_set(toy_spec, feats, lab, cutoff, dt.timedelta(days=30))
    assert ts.select("id", "bad").rows() == [(4, 0), (5, 0), (6, 1)]
