"""The tidy table of monitoring results: one home for its columns and their meaning.

One row per (partition, calculator, column, method, metric). ``value`` is what NannyML computed
for the partition's chunk; ``lower_threshold``/``upper_threshold`` are NannyML's thresholds
computed from the reference (null where a side has none); ``alert`` is NannyML's flag. Rows of
``estimated_performance`` carry the estimate, rows of ``realized_performance`` the realized
metric on the labels observed so far and its ``label_coverage``.
"""

from __future__ import annotations

from enum import StrEnum

import polars as pl

UTC_US = pl.Datetime("us", "UTC")


class Calculator(StrEnum):
    UNIVARIATE_DRIFT = "univariate_drift"
    MULTIVARIATE_DRIFT = "multivariate_drift"
    DOMAIN_CLASSIFIER = "domain_classifier"
    ESTIMATED_PERFORMANCE = "estimated_performance"
    REALIZED_PERFORMANCE = "realized_performance"
    MISSING_VALUES = "missing_values"
    UNSEEN_VALUES = "unseen_values"
    OPERATIONAL = "operational"


PERFORMANCE = (Calculator.ESTIMATED_PERFORMANCE, Calculator.REALIZED_PERFORMANCE)
"""The calculators whose sustained alerts trigger a retrain."""

RESULTS_SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.String(),
    "partition": pl.String(),
    "chunk_start": UTC_US,
    "chunk_end": UTC_US,
    "champion_version": pl.String(),
    "reference": pl.String(),  # <dataset>@v<version>: the champion whose reference was used
    "calculator": pl.String(),
    "column": pl.String(),
    "method": pl.String(),
    "metric": pl.String(),
    "value": pl.Float64(),
    "lower_threshold": pl.Float64(),
    "upper_threshold": pl.Float64(),
    "alert": pl.Boolean(),
    "rows": pl.Int64(),
    "label_coverage": pl.Float64(),
}


def empty_results() -> pl.DataFrame:
    """A results table with no rows, typed."""
    return pl.DataFrame(schema=RESULTS_SCHEMA)


def reference_id(dataset: str, version: str) -> str:
    return f"{dataset}@v{version}"
