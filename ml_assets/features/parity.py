"""Online/offline parity: the serving path must produce the features training saw.

The online store holds aggregates as of a time T. Offline features are as of each row's event
time. The honest comparison therefore restamps sample entity rows to T and runs the offline
path (:func:`~ml_assets.features.compute.compute_features`, the code that fills the feature
table) on them, then sends the same rows, minus their event time, through the serving path
(:func:`~ml_assets.features.online.online_features`) with request time T. Every feature must
agree: exactly for integers, booleans and text, within a relative 1e-9 for floats.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from ml_assets.features.compute import compute_features, to_utc, transform_rows
from ml_assets.features.online import OnlineLookup, online_features, request_frame
from ml_assets.features.spec import FeatureSpec, Source

RTOL = 1e-9
ATOL = 1e-12


@dataclass
class ParityReport:
    """What a parity comparison found."""

    rows: int
    features: list[str]
    mismatches: dict[str, int] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.rows > 0 and not any(self.mismatches.values())


def compare_features(
    expected: pl.DataFrame, actual: pl.DataFrame, columns: list[str], rtol: float = RTOL
) -> ParityReport:
    """Compare two frames row by row on ``columns`` (same row order); nulls equal nulls."""
    if expected.height != actual.height:
        raise ValueError(f"row counts differ: {expected.height} vs {actual.height}")
    report = ParityReport(rows=expected.height, features=list(columns))
    for c in columns:
        a, b = expected.get_column(c), actual.get_column(c)
        if a.dtype.is_float() or b.dtype.is_float():
            pair = pl.DataFrame({"a": a.cast(pl.Float64), "b": b.cast(pl.Float64)})
            x, y = pl.col("a"), pl.col("b")
            diff = (x - y).abs()
            tol = pl.max_horizontal(x.abs(), y.abs()) * rtol + ATOL
            checked = pair.select(
                bad=(x.is_null() != y.is_null()) | (x.is_not_null() & (diff > tol)),
                diff=diff,
            )
            bad = checked.get_column("bad")
            report.max_abs_diff[c] = float(checked.get_column("diff").max() or 0.0)
        else:
            same = (a.cast(b.dtype) == b).fill_null(False) | (a.is_null() & b.is_null())
            bad = ~same
        n = int(bad.sum())
        report.mismatches[c] = n
        if n:
            i = int(bad.arg_max() or 0)
            report.examples.append(f"{c}: row {i}: offline {a[i]!r} vs online {b[i]!r}")
    return report


def parity_check(
    spec: FeatureSpec,
    sample: pl.DataFrame,
    events: dict[Source, pl.DataFrame | pl.LazyFrame | None],
    store: OnlineLookup,
    as_of: dt.datetime,
) -> ParityReport:
    """Offline features of ``sample`` restamped to ``as_of`` vs the serving path at ``as_of``.

    ``sample``: validated entity rows; ``events``: the events the store's snapshot was built
    from (covering [as_of - longest window, as_of)); ``store``: the online store.
    """
    as_of = to_utc(as_of)
    restamped = sample.with_columns(
        pl.lit(as_of).cast(sample.schema[spec.event_time]).alias(spec.event_time)
    )
    offline = compute_features(spec, restamped, events)
    records = sample.drop(spec.event_time).to_dicts()
    online = online_features(spec, records, store, request_time=as_of)
    return compare_features(offline, online, spec.names)


def row_parity(spec: FeatureSpec, sample: pl.DataFrame, stored: pl.DataFrame) -> ParityReport:
    """Row and request features of ``sample`` served at their own event times vs the feature
    table rows ``stored`` for the same keys: the serving transforms equal what training saw.
    """
    names = [f.name for f in (*spec.row, *spec.request)]
    frame = request_frame(spec, sample.to_dicts())  # request time = each record's event time
    online = pl.concat([frame.select(spec.key), transform_rows(spec, frame)], how="horizontal")
    expected = online.select(spec.key).join(stored, on=spec.key, how="left")
    return compare_features(expected, online, names)
