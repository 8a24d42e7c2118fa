"""Results tables built by hand for the incident, alert and sensor tests."""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml_assets.monitor.schema import RESULTS_SCHEMA

WEEKS = [f"2018-{m:02d}-{d:02d}" for m, d in [(1, 1), (1, 8), (1, 15), (1, 22), (1, 29)]] + [
    f"2018-02-{d:02d}" for d in (5, 12, 19, 26)
]
"""The first nine weekly partitions of the bundled car_loan contract."""

ESTIMATED = ("estimated_performance", None, "cbpe", "roc_auc")
REALIZED = ("realized_performance", None, "realized", "roc_auc")
DRIFT = ("univariate_drift", "car_value", "jensen_shannon", "jensen_shannon")


def results(
    series: dict[tuple[str, str | None, str, str], list[bool | None]],
    dataset: str = "car_loan",
    partitions: list[str] = WEEKS,
    champion: str = "3",
) -> pl.DataFrame:
    """One row per partition and metric; ``series[metric][i]`` is the alert of partition i.

    An alerting row's value is 0.60 below a lower threshold of 0.70; a quiet row's is 0.80.
    """
    rows = []
    for (calculator, column, method, metric), alerts in series.items():
        for i, alert in enumerate(alerts):
            start = dt.datetime.fromisoformat(partitions[i]).replace(tzinfo=dt.UTC)
            rows.append(
                {
                    "dataset": dataset,
                    "partition": partitions[i],
                    "chunk_start": start,
                    "chunk_end": start + dt.timedelta(days=7),
                    "champion_version": champion,
                    "reference": f"{dataset}@v{champion}",
                    "calculator": calculator,
                    "column": column,
                    "method": method,
                    "metric": metric,
                    "value": None if alert is None else (0.60 if alert else 0.80),
                    "lower_threshold": 0.70,
                    "upper_threshold": None,
                    "alert": alert,
                    "rows": 1000,
                    "label_coverage": 1.0,
                }
            )
    return pl.DataFrame(rows, schema=RESULTS_SCHEMA)
