"""Incidents: runs of consecutive alerting partitions of one metric, found in the results table.

A *metric* is one (dataset, calculator, column, method, metric) of the tidy results table
(:data:`~ml_assets.monitor.schema.RESULTS_SCHEMA`). Its partitions are taken in partition order
(partition keys are ISO dates, so they sort in time). An *incident* is a maximal run of
consecutive partitions where that metric alerts; a partition where it does not alert ends the
incident (recovery), and the next alert starts a new one with a new id.

Rows whose ``alert`` is null (a metric that could not be computed for the partition, such as
realized performance before any label arrived) are left out: they neither extend nor end an
incident. Several rows for the same metric and partition (a re-run) count as one partition that
alerts if any of them does, with the values of the last row. A univariate alert counts only when
every method alerts on its feature in that partition (:func:`counted`, :func:`drift_alerts`).

:func:`retrain_candidates` keeps the incidents of the performance calculators that have lasted
at least N consecutive partitions (default 2): one noisy partition never triggers a retrain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from ml_assets.monitor.schema import PERFORMANCE, RESULTS_SCHEMA, Calculator

METRIC_KEY = ["dataset", "calculator", "column", "method", "metric"]
"""The columns naming one metric of the results table."""

DEFAULT_CONSECUTIVE = 2
"""Alerting partitions in a row before an incident is a retrain candidate."""

_MISSING = "-"


@dataclass(frozen=True)
class Incident:
    """A run of consecutive alerting partitions of one metric."""

    id: str
    """``<dataset>:<calculator>:<column or ->:<method or ->:<metric>:<first partition>``:
    stable while the incident lasts (later partitions do not change it)."""
    dataset: str
    calculator: str
    column: str | None
    method: str | None
    metric: str
    first_partition: str
    last_partition: str
    length: int
    """Alerting partitions in the run."""
    value: float | None
    """The metric's value in the last partition of the run."""
    lower_threshold: float | None
    upper_threshold: float | None
    champion_version: str | None
    """The champion monitored in the last partition of the run."""
    ongoing: bool
    """No later partition of the metric has recovered (stopped alerting)."""

    @property
    def threshold(self) -> float | None:
        """The threshold the value crossed (the lower one when it is below it, else the upper;
        whichever exists when the value is unknown)."""
        lo, hi, v = self.lower_threshold, self.upper_threshold, self.value
        if v is not None and lo is not None and v < lo:
            return lo
        if v is not None and hi is not None and v > hi:
            return hi
        return lo if lo is not None else hi

    @property
    def label(self) -> str:
        """The metric, readable: ``estimated_performance roc_auc`` or
        ``univariate_drift jensen_shannon(car_value)``."""
        what = self.metric
        if self.method:
            what = f"{self.method} {what}" if self.method != self.metric else what
        if self.column:
            what = f"{what}({self.column})"
        return f"{self.calculator} {what}"


def drift_alerts(results: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The drift alerts a partition's ``drift`` check fails on, and the ones it only reports.

    Failing: the multivariate reconstruction error, and every univariate alert of a feature on
    which ALL its methods alert (Jensen-Shannon and Kolmogorov-Smirnov, or chi-squared and
    Jensen-Shannon). Reported only: a feature alerting on one method. Each method alerts by
    chance now and then (chi-squared at p < 0.05, the others beyond three standard deviations of
    a few reference chunks), and a dozen features with two methods each are tested every
    partition; a real shift moves a feature's distribution for both tests (on the car-loan
    replay's data: 1 lone alert in 21 stable weeks, and both methods on several features in
    every shifted week)."""
    alerting = counted(results).filter(pl.col("alert").fill_null(False))
    multivariate = alerting.filter(pl.col("calculator") == Calculator.MULTIVARIATE_DRIFT.value)
    uni = Calculator.UNIVARIATE_DRIFT.value
    every = alerting.filter(pl.col("calculator") == uni)
    lone = results.filter((pl.col("calculator") == uni) & pl.col("alert").fill_null(False)).join(
        every.select("partition", "column", "method"),
        on=["partition", "column", "method"],
        how="anti",
        nulls_equal=True,
    )
    return pl.concat([multivariate, every]), lone


def counted(results: pl.DataFrame) -> pl.DataFrame:
    """The results with every lone univariate alert turned off: a feature's univariate rows of a
    partition alert only when all its methods do (:func:`drift_alerts` says why). Every other
    row is as it was. Incidents, alerts, the summary and the sensor all read alerts this way."""
    if results.is_empty() or "column" not in results.columns:
        return results
    uni = pl.col("calculator") == Calculator.UNIVARIATE_DRIFT.value
    every = (
        pl.col("alert").fill_null(False).all().over("dataset", "partition", "calculator", "column")
    )
    return results.with_columns(
        alert=pl.when(uni & pl.col("alert").is_not_null())
        .then(pl.col("alert") & every)
        .otherwise(pl.col("alert"))
    )


def incident_id(
    dataset: str,
    calculator: str,
    column: str | None,
    method: str | None,
    metric: str,
    first_partition: str,
) -> str:
    """The stable id of the incident of one metric that started in ``first_partition``."""
    parts = [dataset, calculator, column or _MISSING, method or _MISSING, metric, first_partition]
    return ":".join(parts)


def find_incidents(results: pl.DataFrame) -> list[Incident]:
    """Every incident of a results table, ordered by metric then first partition."""
    missing = [c for c in (*METRIC_KEY, "partition", "alert") if c not in results.columns]
    if missing:
        raise ValueError(f"the results table has no column {missing}")
    frame = results.select(
        pl.col(c).cast(RESULTS_SCHEMA[c])
        if c in results.columns
        else pl.lit(None, RESULTS_SCHEMA[c]).alias(c)
        for c in (
            *METRIC_KEY,
            "partition",
            "alert",
            "value",
            "lower_threshold",
            "upper_threshold",
            "champion_version",
        )
    ).filter(pl.col("alert").is_not_null())
    if frame.is_empty():
        return []
    frame = counted(frame)
    per_partition = (
        frame.group_by([*METRIC_KEY, "partition"], maintain_order=True)
        .agg(
            pl.col("alert").any(),
            pl.col("value", "lower_threshold", "upper_threshold", "champion_version").last(),
        )
        .sort([*METRIC_KEY, "partition"], nulls_last=True)
    )
    starts = pl.col("alert") != pl.col("alert").shift(1).over(METRIC_KEY)
    runs = per_partition.with_columns(
        run=starts.fill_null(True).cast(pl.Int64).cum_sum().over(METRIC_KEY),
        last_of_metric=pl.col("partition").last().over(METRIC_KEY),
    )
    grouped = (
        runs.filter(pl.col("alert"))
        .group_by([*METRIC_KEY, "run"], maintain_order=True)
        .agg(
            first_partition=pl.col("partition").first(),
            last_partition=pl.col("partition").last(),
            length=pl.len(),
            value=pl.col("value").last(),
            lower_threshold=pl.col("lower_threshold").last(),
            upper_threshold=pl.col("upper_threshold").last(),
            champion_version=pl.col("champion_version").last(),
            last_of_metric=pl.col("last_of_metric").first(),
        )
    )
    return [
        Incident(
            id=incident_id(
                r["dataset"],
                r["calculator"],
                r["column"],
                r["method"],
                r["metric"],
                r["first_partition"],
            ),
            dataset=r["dataset"],
            calculator=r["calculator"],
            column=r["column"],
            method=r["method"],
            metric=r["metric"],
            first_partition=r["first_partition"],
            last_partition=r["last_partition"],
            length=r["length"],
            value=r["value"],
            lower_threshold=r["lower_threshold"],
            upper_threshold=r["upper_threshold"],
            champion_version=r["champion_version"],
            ongoing=r["last_partition"] == r["last_of_metric"],
        )
        for r in grouped.iter_rows(named=True)
    ]


def retrain_candidates(
    results: pl.DataFrame | Iterable[Incident],
    consecutive: int = DEFAULT_CONSECUTIVE,
    calculators: Iterable[Calculator | str] = PERFORMANCE,
) -> list[Incident]:
    """Incidents of the given calculators (estimated and realized performance) that have
    lasted at least ``consecutive`` partitions in a row.

    ``results`` is a results table, or incidents already found in one.
    """
    if consecutive < 1:
        raise ValueError(f"consecutive must be at least 1, not {consecutive}")
    wanted = {str(c) for c in calculators}
    incidents = find_incidents(results) if isinstance(results, pl.DataFrame) else list(results)
    return [i for i in incidents if i.calculator in wanted and i.length >= consecutive]
