"""The low-memory training-set builds give exactly the one-shot training set.

``compute_training_set`` (features of the labelled rows only, in chunks of rows, with events
given or derived from its rows and labels) and ``build_training_set`` over a lazy feature
table (streamed through in chunks) must equal
``build_training_set(compute_features(...))`` over in-memory frames in one chunk, value for
value, whatever the chunk size, on rows with several groups (and null groups), late labels,
corrected labels, labels of rows outside the window and labels of no row.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import polars as pl
import pytest

from ml_assets.features.compute import (
    build_training_set,
    compute_features,
    compute_training_set,
    entity_events,
    label_events,
    window_aggregates,
)
from ml_assets.features.spec import FeatureSpec, Source
from ml_assets.features.training_set import labelled_rows

from .conftest import U, entity, labels

START = U(2024, 1, 1)
CUTOFF = U(2024, 2, 10)
WINDOW = dt.timedelta(days=30)  # rows from 01-11: the earlier ones are history only
ONE_SHOT = 10**9  # a chunk larger than any frame here


def _data(
    seed: int, in_key_order: bool, corrections: bool = True
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows over 50 days (ids in time order, or shuffled ids) and their labels."""
    rng = random.Random(seed)
    times = sorted(START + dt.timedelta(hours=rng.randrange(0, 24 * 50, 3)) for _ in range(300))
    ids = list(range(300)) if in_key_order else rng.sample(range(1000), 300)
    rows, labs = [], []
    for i, ts in zip(ids, times, strict=True):
        shop = rng.choice(["a", "b", "c", "d", None])
        band = rng.choice(["low", "mid", "high", None])
        amount = rng.choice([None, rng.random() * 100])
        rows.append((i, ts, shop, band, amount, rng.randrange(0, 4)))
        r = rng.random()
        if r < 0.85:  # a label, some observed only after the cutoff (late)
            labs.append((i, ts + dt.timedelta(hours=rng.randrange(1, 24 * 25)), rng.randrange(2)))
        if corrections and r < 0.15:  # a correction: the latest before the cutoff counts
            labs.append((i, ts + dt.timedelta(hours=rng.randrange(1, 24 * 25)), rng.randrange(2)))
    labs.append((5000, START + dt.timedelta(days=3), 1))  # a label of no row
    lab = labels(sorted(labs) if in_key_order else rng.sample(labs, len(labs)))
    return entity(rows), lab


def _events(spec: FeatureSpec, ent: pl.DataFrame | pl.LazyFrame, lab) -> dict:
    return {Source.ENTITY: entity_events(spec, ent), Source.LABELS: label_events(spec, lab, ent)}


def _one_shot(spec: FeatureSpec, ent: pl.DataFrame, lab: pl.DataFrame) -> pl.DataFrame:
    feats = compute_features(spec, ent, _events(spec, ent, lab))
    return build_training_set(spec, feats, lab, CUTOFF, WINDOW, chunk_rows=ONE_SHOT)


@pytest.mark.parametrize(
    ("in_key_order", "corrections"),
    [(True, False), (True, True), (False, True)],
    ids=["sorted-unique-keys", "sorted-keys-corrected", "shuffled-keys-corrected"],
)
def test_chunked_builds_equal_the_one_shot_build(
    toy_spec: FeatureSpec, tmp_path: Path, in_key_order: bool, corrections: bool
) -> None:
    """Sorted unique label keys take the binary search, the others the hash join."""
    ent, lab = _data(3, in_key_order, corrections)
    expected = _one_shot(toy_spec, ent, lab)
    # Not a trivial frame: rows dropped for being early or unlabelled, late labels left out.
    in_window = ent.filter(pl.col("ts") >= CUTOFF - WINDOW, pl.col("ts") < CUTOFF).height
    assert 0 < expected.height < in_window
    assert expected.get_column("n_7d").null_count() > 0  # rows without a group
    assert expected.get_column("mean_7d").drop_nulls().len() > 0

    ent.write_parquet(tmp_path / "entity.parquet", row_group_size=16)
    lab.write_parquet(tmp_path / "labels.parquet", row_group_size=16)
    scanned = pl.scan_parquet(tmp_path / "entity.parquet")
    scanned_labels = pl.scan_parquet(tmp_path / "labels.parquet")
    for chunk in (1, 3, 7, ONE_SHOT):
        direct = compute_training_set(
            toy_spec, ent, lab, _events(toy_spec, ent, lab), CUTOFF, WINDOW, chunk_rows=chunk
        )
        assert direct.equals(expected), chunk
        streamed = compute_training_set(
            toy_spec,
            scanned,
            scanned_labels,
            _events(toy_spec, scanned, scanned_labels),
            CUTOFF,
            WINDOW,
            chunk_rows=chunk,
        )
        assert streamed.equals(expected), chunk
        # Events left to it: those of the same rows and labels (read once when they fit).
        for ent_in, lab_in in ((ent, lab), (scanned, scanned_labels)):
            derived = compute_training_set(
                toy_spec, ent_in, lab_in, None, CUTOFF, WINDOW, chunk_rows=chunk
            )
            assert derived.equals(expected), chunk

    feats = compute_features(toy_spec, ent, _events(toy_spec, ent, lab))
    feats.write_parquet(tmp_path / "features.parquet", row_group_size=16)
    table = pl.scan_parquet(tmp_path / "features.parquet")
    for chunk in (1, 5, ONE_SHOT):
        got = build_training_set(toy_spec, table, scanned_labels, CUTOFF, WINDOW, chunk_rows=chunk)
        assert got.equals(expected), chunk


def test_sorted_and_hashed_label_matches_agree(toy_spec: FeatureSpec) -> None:
    """Unique labels in key order take the binary search; the same labels in reverse order, or
    with corrections (repeated keys), the hash join: each row gets the same label either way."""
    ent, lab = _data(5, in_key_order=True)
    unique = lab.sort("seen_at").unique("id", keep="last").sort("id")
    searched = labelled_rows(toy_spec, ent, unique, CUTOFF, WINDOW)
    assert searched.height > 0
    assert searched.equals(labelled_rows(toy_spec, ent, unique.reverse(), CUTOFF, WINDOW))
    corrected = labelled_rows(toy_spec, ent, lab, CUTOFF, WINDOW)
    shuffled = lab.sample(fraction=1.0, shuffle=True, seed=1)
    assert corrected.equals(labelled_rows(toy_spec, ent, shuffled, CUTOFF, WINDOW))


def test_window_aggregates_do_not_depend_on_the_chunk_size(toy_spec: FeatureSpec) -> None:
    ent, lab = _data(11, in_key_order=False)
    queries = ent.select("shop", "band", pl.col("ts").alias("__t")).reverse()  # out of order
    ev = _events(toy_spec, ent, lab)
    expected = window_aggregates(toy_spec, queries, ev, chunk_rows=ONE_SHOT)
    for chunk in (1, 4, 50):
        assert window_aggregates(toy_spec, queries, ev, chunk_rows=chunk).equals(expected)


def test_no_labelled_row_gives_an_empty_frame_of_the_same_schema(toy_spec: FeatureSpec) -> None:
    ent, lab = _data(3, in_key_order=True)
    early = U(2024, 1, 2)  # before every label is observed
    feats = compute_features(toy_spec, ent, _events(toy_spec, ent, lab))
    expected = build_training_set(toy_spec, feats, lab, early, WINDOW)
    got = compute_training_set(toy_spec, ent, lab, _events(toy_spec, ent, lab), early, WINDOW)
    assert expected.height == 0 and got.equals(expected)
    assert got.schema == expected.schema


def test_a_group_value_outside_the_allowed_ones_is_still_aggregated(toy_spec: FeatureSpec) -> None:
    """Text groups are coded by their allowed values when every value is one; a value outside
    them (rows not validated) leaves the column as text, with the same training set."""
    ent, lab = _data(3, in_key_order=True)
    ent = ent.with_columns(
        pl.when(pl.col("id") % 7 == 0).then(pl.lit("odd")).otherwise(pl.col("band")).alias("band")
    )
    expected = _one_shot(toy_spec, ent, lab)
    assert expected.filter(pl.col("band_rank").is_null()).height > 0
    got = compute_training_set(toy_spec, ent, lab, None, CUTOFF, WINDOW)
    assert got.equals(expected)
    assert got.get_column("band_n_1d").drop_nulls().len() > 0
