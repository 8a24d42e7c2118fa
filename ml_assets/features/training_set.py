"""Training sets from the feature table, and content fingerprints.

:func:`build_training_set` picks the feature rows of a training window and joins the labels
known at the cutoff (observed strictly before it), so no label from after the cutoff reaches
training; :func:`fingerprint` hashes a frame's content (recorded for feature tables and for each
model's training set); :func:`target_stats` summarises its target, as the problem kind says
(:mod:`ml_assets.problems`). Apart from the feature computation: these read the feature table,
they do not compute features.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import polars as pl

from ml_assets.features.spec import FeatureSpec
from ml_assets.features.windows import ROW, TIME, UTC_US, to_utc


def build_training_set(
    spec: FeatureSpec,
    features: pl.DataFrame | pl.LazyFrame,
    labels: pl.DataFrame | pl.LazyFrame,
    cutoff: dt.datetime,
    window: dt.timedelta,
) -> pl.DataFrame:
    """Rows with event time in [cutoff - window, cutoff), their features, their labels as known
    at the cutoff.

    Features come from the feature table (already as of each row's event time). A label counts
    only if observed strictly before the cutoff; rows without one are dropped, so no label from
    after the cutoff reaches training. A key labelled more than once takes its latest label
    observed before the cutoff. Rows keep the feature table's order (deterministic).
    """
    cutoff = to_utc(cutoff)
    start = cutoff - window
    lab = spec.contract.labels
    target = spec.contract.target
    renamed = dict(zip(lab.key_columns, spec.key, strict=True))
    t = pl.col(spec.event_time)
    # Read (or keep) only the rows in the window, then pick the labelled ones by position: the
    # wide feature rows are copied once.
    rows = (
        features.lazy()
        .filter(t >= pl.lit(start, UTC_US), t < pl.lit(cutoff, UTC_US))
        .collect()
        .rechunk()
    )
    known = (
        labels.lazy()
        .filter(pl.col(lab.observed_at) < pl.lit(cutoff, UTC_US), pl.col(target).is_not_null())
        .select(
            *[pl.col(k).alias(renamed[k]) for k in lab.key_columns],
            pl.col(lab.observed_at).alias(TIME),
            target,
        )
    )
    # Positions of the labelled rows, in row order (a plain hash join, then a sort of one
    # integer column: much cheaper than an order-keeping join).
    picked = (
        rows.lazy()
        .select(spec.key)
        .with_row_index(ROW)
        .join(known, on=spec.key, how="inner")
        .select(ROW, TIME, target)
        .sort(ROW)
        .collect()
    )
    position = picked.get_column(ROW)
    if picked.height and (position.diff() == 0).any():
        # A key labelled more than once: its latest label observed before the cutoff counts.
        picked = picked.sort(ROW, TIME).filter(pl.col(ROW).ne_missing(pl.col(ROW).shift(-1)))
        position = picked.get_column(ROW)
    out = rows.select(*spec.key, spec.event_time, *spec.names)[position]
    return out.with_columns(picked.get_column(target))


def fingerprint(frame: pl.DataFrame, key: list[str]) -> str:
    """A content hash: independent of row order and chunking, sensitive to every value.

    Rows are sorted by ``key`` (then by every column, for ties), hashed with polars' seeded
    ``hash_rows`` (stable for a given polars version, which the lock file pins), and the hashes
    are fed in order to SHA-256 together with the schema.
    """
    h = hashlib.sha256(repr(list(frame.schema.items())).encode())
    if frame.height:
        ordered = frame.sort([*key, *[c for c in frame.columns if c not in key]], nulls_last=True)
        h.update(ordered.hash_rows(seed=20240611).to_numpy().tobytes())
    return h.hexdigest()[:32]


def target_stats(spec: FeatureSpec, frame: pl.DataFrame) -> dict[str, float | int | dict]:
    """Label rate (classification: share of each class) or target stats (regression)."""
    from ml_assets.problems import problem_kind

    return problem_kind(spec.contract.problem_type).target_stats(
        frame.get_column(spec.contract.target)
    )
