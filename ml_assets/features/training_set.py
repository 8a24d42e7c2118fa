"""Training sets from the feature table, and content fingerprints.

:func:`build_training_set` picks the feature rows of a training window and joins the labels
known at the cutoff (observed strictly before it), so no label from after the cutoff reaches
training; :func:`fingerprint` hashes a frame's content (recorded for feature tables and for each
model's training set); :func:`target_stats` summarises its target, as the problem kind says
(:mod:`ml_assets.problems`). Apart from the feature computation: these read the feature table,
they do not compute features. :func:`labelled_rows` (which rows of a table are in the window
and labelled, by position) and :func:`gather_chunks` / :func:`assemble` (columns at those
positions, a chunk of rows at a time) are shared with
:func:`~ml_assets.features.compute.compute_training_set`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator

import polars as pl

from ml_assets.features.spec import FeatureSpec
from ml_assets.features.windows import CHUNK_ROWS, ROW, STREAMING, TIME, UTC_US, to_utc


def gather_chunks(
    rows: pl.DataFrame | pl.LazyFrame, position: pl.Series, columns: list[str], chunk_rows: int
) -> Iterator[pl.DataFrame]:
    """``columns`` of ``rows`` at ``position`` (ascending row numbers), ``chunk_rows`` positions
    at a time. Each chunk reads only the range of rows it spans: a scan reads just those row
    groups, so a lazy table is streamed through, never all read at once (its row order must not
    change between reads, as a scan's does not). No positions: one empty frame.

    The rows are picked by a boolean mask over the range, not gathered by position: a filter
    is several times faster than a gather, most of all over the many chunks a scan hands over.
    """
    source = rows.select(columns)
    if position.is_empty():
        yield source.lazy().head(0).collect()
    for i in range(0, position.len(), chunk_rows):
        at = position[i : i + chunk_rows]
        first = at[0]
        span = source.slice(first, at[-1] - first + 1)
        frame = span if isinstance(span, pl.DataFrame) else span.collect()
        yield frame.filter(_mask(at - first, frame.height))


def _mask(at: pl.Series, length: int) -> pl.Series:
    """A boolean Series of ``length``: true at the row numbers ``at``, false elsewhere."""
    return pl.repeat(False, length, dtype=pl.Boolean, eager=True).scatter(at, True)


def assemble(chunks: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """Frames stacked column by column, the chunks linked rather than copied into one buffer:
    the stacking needs no memory of its own (copying took a column's worth at a time, and at
    ten million rows left 0.7 GB more of the process's peak in the allocator), and a reader
    that wants one buffer (``rechunk``) pays for it when it needs it."""
    parts: dict[str, list[pl.Series]] = {}
    for frame in chunks:
        for column in frame.get_columns():
            parts.setdefault(column.name, []).append(column)
    return pl.DataFrame([pl.concat(parts.pop(name), rechunk=False) for name in list(parts)])


def known_labels(
    spec: FeatureSpec, labels: pl.DataFrame | pl.LazyFrame, cutoff: dt.datetime
) -> pl.DataFrame:
    """The labels known at the cutoff: key (named as the entity's), ``__t`` (observed at),
    target. A label counts only if observed strictly before the cutoff and has a target."""
    lab = spec.contract.labels
    target = spec.contract.target
    renamed = dict(zip(lab.key_columns, spec.key, strict=True))
    return (
        labels.lazy()
        .filter(
            pl.col(lab.observed_at) < pl.lit(to_utc(cutoff), UTC_US),
            pl.col(target).is_not_null(),
        )
        .select(
            *[pl.col(k).alias(renamed[k]) for k in lab.key_columns],
            pl.col(lab.observed_at).alias(TIME),
            target,
        )
        .collect(engine=STREAMING)
    )


def _sorted_unique(column: pl.Series) -> bool:
    """Sorted ascending without repeats (a cheap check: no hash table over the column)."""
    return column.is_sorted() and not (column.diff() == 0).any()


def labelled_rows(
    spec: FeatureSpec,
    rows: pl.DataFrame | pl.LazyFrame,
    labels: pl.DataFrame | pl.LazyFrame,
    cutoff: dt.datetime,
    window: dt.timedelta,
) -> pl.DataFrame:
    """Positions in ``rows`` (``__row``, in order) of the rows with event time in
    [cutoff - window, cutoff) and a label known at the cutoff, with that label's target.

    Only the key and event time of ``rows`` are read. A key labelled more than once takes its
    latest label observed before the cutoff. One integer key, sorted in the rows and sorted
    without repeats in the labels (the usual case: both written in key order), is matched by
    merging the two sorted key columns (several times faster than hashing ten million keys, or
    than a binary search of each, and next to no memory); any other keys by a hash join.
    """
    cutoff = to_utc(cutoff)
    target = spec.contract.target
    key = spec.key
    t = pl.col(spec.event_time)
    keys = (
        rows.lazy()
        .select(*key, spec.event_time)
        .with_row_index(ROW)
        .filter(t >= pl.lit(cutoff - window, UTC_US), t < pl.lit(cutoff, UTC_US))
        .select(ROW, *key)
        .collect(engine=STREAMING)
        .rechunk()
    )
    known = known_labels(spec, labels, cutoff).rechunk()
    k = key[0]
    if (
        len(key) == 1
        and keys.schema[k].is_integer()
        and keys.get_column(k).is_sorted()
        and _sorted_unique(known.get_column(k))
    ):
        # A merge of the two sorted key columns (an as-of join: the greatest label key at or
        # below each row's): where it lands on the equal key, the row has that label.
        found = "__label_key"
        return (
            keys.lazy()
            .join_asof(
                known.lazy().select(pl.col(k).alias(found), pl.col(k), target),
                on=k,
                strategy="backward",
                check_sortedness=False,
            )
            .filter(pl.col(found) == pl.col(k))
            .select(ROW, target)
            .collect()
        )
    # A plain hash join, then a sort of one integer column: cheaper than an order-keeping join.
    match = keys.join(known, on=key, how="inner").select(ROW, TIME, target).sort(ROW)
    position = match.get_column(ROW)
    if match.height and (position.diff() == 0).any():
        # A key labelled more than once: its latest label observed before the cutoff counts.
        match = match.sort(ROW, TIME, maintain_order=True).filter(
            pl.col(ROW).ne_missing(pl.col(ROW).shift(-1))
        )
    return match.select(ROW, target)


def build_training_set(
    spec: FeatureSpec,
    features: pl.DataFrame | pl.LazyFrame,
    labels: pl.DataFrame | pl.LazyFrame,
    cutoff: dt.datetime,
    window: dt.timedelta,
    chunk_rows: int = CHUNK_ROWS,
) -> pl.DataFrame:
    """Rows with event time in [cutoff - window, cutoff), their features, their labels as known
    at the cutoff.

    Features come from the feature table (already as of each row's event time). A label counts
    only if observed strictly before the cutoff; rows without one are dropped, so no label from
    after the cutoff reaches training. A key labelled more than once takes its latest label
    observed before the cutoff. Rows keep the feature table's order (deterministic).

    Memory: the labelled rows are found from the key and event time alone, then the feature
    columns are gathered at their positions, ``chunk_rows`` rows at a time (see
    :func:`gather_chunks`: a lazy feature table, the lake's scans, is streamed through), so the
    wide window rows are never all in memory besides the output. Any chunk size gives exactly
    the same frame.
    """
    picked = labelled_rows(spec, features, labels, cutoff, window)
    position = picked.get_column(ROW)
    columns = [*spec.key, spec.event_time, *spec.names]
    out = assemble(gather_chunks(features, position, columns, chunk_rows))
    return out.with_columns(picked.get_column(spec.contract.target))


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
