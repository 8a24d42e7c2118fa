"""The frames monitoring compares: the champion's reference and a partition's predictions.

Plain polars functions. The *reference* is the champion's held-out test window: the training
set's rows from the held-out boundary on (recorded with the model version by the promotion
gate), each with its features, label and the champion's predictions. The *analysis* rows of a
partition are the union of its batch predictions (the ``predictions`` asset, joined back to the
feature table for the model inputs) and the predictions served in its time window (the
prediction log, which already carries the inputs), each row tagged with its ``source``, with
the labels observed so far joined by key.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from ml_assets.train import core

SOURCE = "source"
"""``batch`` (the predictions asset) or ``served`` (the prediction log)."""
MODEL_VERSION = "model_version"


def reference_frame(
    training_set: pl.DataFrame,
    problem: core.Problem,
    model: Any,
    version: str,
    held_out_from: dt.datetime,
    key: list[str],
) -> pl.DataFrame:
    """The champion's held-out rows with features, label and the champion's predictions."""
    t = pl.col(problem.event_time)
    rows = training_set.filter(t >= held_out_from).select(
        *key, problem.event_time, *problem.features, problem.target
    )
    scored = core.score_frame(model, rows.drop(problem.target), problem, version)
    outputs = list(problem.kind.output_schema(problem.classes))
    return pl.concat([rows, scored.select(*outputs, MODEL_VERSION)], how="horizontal").sort(
        problem.event_time, *key
    )


def analysis_frame(
    problem: core.Problem,
    key: list[str],
    batch: pl.DataFrame | None,
    features: pl.DataFrame | None,
    served: pl.DataFrame | None,
) -> pl.DataFrame:
    """A partition's predictions to monitor: batch rows (joined to their features by key) and
    served rows (the log's inputs and outputs; a log row without an event time is placed at its
    request time), one schema, tagged with their source. Columns a log segment of an older
    model lacks are null, never dropped."""
    outputs = problem.kind.output_schema(problem.classes)
    typed = features if features is not None else served
    known = dict(typed.schema) if typed is not None else {}
    dtypes: dict[str, Any] = {
        **{c: known.get(c, pl.String()) for c in key},
        problem.event_time: pl.Datetime("us", "UTC"),
        **{f: known.get(f, pl.Float64()) for f in problem.features},
        **outputs,
        MODEL_VERSION: pl.String(),
    }
    columns = list(dtypes)
    parts: list[pl.DataFrame] = []
    if batch is not None and features is not None and batch.height:
        inputs = features.select(*key, *[f for f in problem.features if f in features.columns])
        joined = batch.select(*key, problem.event_time, *outputs, MODEL_VERSION).join(
            inputs, on=key, how="left"
        )
        parts.append(_conform(joined, columns, dtypes).with_columns(pl.lit("batch").alias(SOURCE)))
    if served is not None and served.height:
        log = served
        if problem.event_time in log.columns:
            log = log.with_columns(pl.coalesce(problem.event_time, "ts").alias(problem.event_time))
        else:
            log = log.with_columns(pl.col("ts").alias(problem.event_time))
        parts.append(_conform(log, columns, dtypes).with_columns(pl.lit("served").alias(SOURCE)))
    if not parts:
        return pl.DataFrame(schema={**dtypes, SOURCE: pl.String()})
    return pl.concat(parts, how="vertical_relaxed").sort(problem.event_time, maintain_order=True)


def _conform(frame: pl.DataFrame, columns: list[str], dtypes: dict[str, Any]) -> pl.DataFrame:
    """``frame`` with exactly ``columns`` of ``dtypes``: missing ones null, extra ones dropped."""
    return frame.select(
        (pl.col(c) if c in frame.columns else pl.lit(None)).cast(dtypes[c], strict=False).alias(c)
        for c in columns
    )


def with_labels(
    analysis: pl.DataFrame,
    labels: pl.DataFrame | None,
    key: list[str],
    label_key: list[str],
    target: str,
    observed_at: str,
    as_of: dt.datetime | None = None,
) -> pl.DataFrame:
    """The analysis rows with the label of each row observed so far (before ``as_of`` when
    given), null where it has not arrived; rows without a key (served on feature rows) never
    get one."""
    if labels is None or labels.height == 0 or not key:
        return analysis.with_columns(pl.lit(None).alias(target))
    lab = labels
    if as_of is not None:
        lab = lab.filter(observed_before(lab, observed_at, as_of))
    lab = lab.select(
        *[pl.col(k).alias(e) for k, e in zip(label_key, key, strict=True)], pl.col(target)
    ).unique(subset=key, keep="last")
    return analysis.join(lab, on=key, how="left")


def prefer_served(rows: pl.DataFrame, key: list[str], event_time: str) -> tuple[pl.DataFrame, int]:
    """Monitor each event once: a batch row whose key was also served is superseded by the
    served row (what the caller was answered). Returns the rows and how many batch rows were
    superseded, for the report (rows read = rows monitored + rows superseded)."""
    if not key or rows.height == 0:
        return rows, 0
    served = rows.filter(pl.col(SOURCE) == "served").select(key).drop_nulls().unique()
    if served.height == 0:
        return rows, 0
    batch = rows.filter(pl.col(SOURCE) == "batch")
    kept = batch.join(served, on=key, how="anti", nulls_equal=False)
    superseded = batch.height - kept.height
    if superseded == 0:
        return rows, 0
    others = rows.filter(pl.col(SOURCE) != "batch")
    return pl.concat([kept, others]).sort(event_time, maintain_order=True), superseded


def observed_before(frame: pl.DataFrame | pl.LazyFrame, column: str, as_of: dt.datetime) -> pl.Expr:
    """``column < as_of``, whether the column is naive (UTC, as the lake stores it) or aware."""
    dtype = frame.collect_schema()[column]
    utc = as_of.astimezone(dt.UTC) if as_of.tzinfo else as_of.replace(tzinfo=dt.UTC)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return pl.col(column) < utc.replace(tzinfo=None)
    return pl.col(column) < utc
