"""The operational summary of a partition, from the prediction log: traffic, latency, outputs.

Per endpoint and protocol: requests, rows, request latency p50/p99 and the mean prediction (the
probability or value) or each class's share, as rows of the monitoring results table
(calculator ``operational``, column ``<endpoint>/<protocol>``; no thresholds: these are for
looking at, the Prometheus rules in ``deploy/`` alert on them live).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from ml_assets.monitor.schema import RESULTS_SCHEMA, Calculator, empty_results, reference_id


def operational_rows(
    served: pl.DataFrame | None,
    *,
    dataset: str,
    partition: str,
    champion_version: str,
    chunk_start: dt.datetime,
    chunk_end: dt.datetime,
) -> pl.DataFrame:
    """The summary rows of the served predictions of one partition (none when nothing was
    served)."""
    if served is None or served.height == 0:
        return empty_results()
    scored = "probability" if "probability" in served.columns else "prediction"
    numeric = served.schema.get(scored, pl.String()).is_numeric()
    rows: list[dict[str, Any]] = []
    for (endpoint, protocol), group in served.group_by(
        ["endpoint", "protocol"], maintain_order=True
    ):
        per_request = group.unique(subset="request_id", keep="first")
        metrics = {
            "requests": float(per_request.height),
            "rows": float(group.height),
            "latency_p50_ms": per_request.get_column("latency_ms").quantile(0.5),
            "latency_p99_ms": per_request.get_column("latency_ms").quantile(0.99),
        }
        if numeric:
            metrics[f"{scored}_mean"] = group.get_column(scored).mean()
        else:
            shares = group.get_column(scored).value_counts(normalize=True)
            for label, share in shares.iter_rows():
                metrics[f"share_{label}"] = share
        for metric, value in metrics.items():
            rows.append(
                {
                    "column": f"{endpoint}/{protocol}",
                    "metric": metric,
                    "value": None if value is None else float(value),  # type: ignore[arg-type]
                    "rows": group.height,
                }
            )
    common = {
        "dataset": dataset,
        "partition": partition,
        "chunk_start": chunk_start,
        "chunk_end": chunk_end,
        "champion_version": champion_version,
        "reference": reference_id(dataset, champion_version),
        "calculator": Calculator.OPERATIONAL.value,
        "method": "prediction_log",
        "lower_threshold": None,
        "upper_threshold": None,
        "alert": False,
        "label_coverage": None,
    }
    out = pl.DataFrame([{**common, **r} for r in rows], schema=RESULTS_SCHEMA, strict=False)
    return out.select(list(RESULTS_SCHEMA))
