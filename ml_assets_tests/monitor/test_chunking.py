"""How the reference is cut into chunks: by the dataset's partition windows."""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml_assets.monitor.chunking import window_chunks
from ml_assets.monitor.incidents import drift_alerts
from ml_assets_tests.monitor.alert_tables import results

D = dt.datetime


def _times(*days: int, per_day: int = 1) -> list[dt.datetime]:
    return [D(2019, 1, d, h) for d in days for h in range(per_day)]


def test_rows_are_cut_at_the_window_starts() -> None:
    times = _times(1, 2, 8, 9, 15, per_day=3)
    starts = [D(2019, 1, 1), D(2019, 1, 8), D(2019, 1, 15)]
    assert window_chunks(times, starts, min_rows=1) == [(0, 6), (6, 12), (12, 15)]


def test_empty_windows_give_no_chunk_and_rows_before_the_first_start_make_their_own() -> None:
    times = _times(1, 15, per_day=2)
    starts = [D(2019, 1, 8), D(2019, 1, 15), D(2019, 1, 22)]  # nothing in the week of the 8th
    assert window_chunks(times, starts, min_rows=1) == [(0, 2), (2, 4)]


def test_a_sliver_of_a_window_is_merged_into_its_neighbour() -> None:
    """A held-out window that starts late in a week, or a last week whose labels have mostly
    not arrived: too few rows for a chunk of their own, merged, never dropped."""
    times = [D(2019, 1, 7, 23), *_times(8, 9, 10, per_day=4), *_times(15, 16, per_day=4)]
    times += [D(2019, 1, 22, 1)]
    starts = [D(2019, 1, 1), D(2019, 1, 8), D(2019, 1, 15), D(2019, 1, 22)]
    chunks = window_chunks(times, starts, min_rows=5)
    assert chunks == [(0, 13), (13, 22)]
    assert sum(b - a for a, b in chunks) == len(times)


def test_no_rows_no_chunks() -> None:
    assert window_chunks([], [D(2019, 1, 1)], min_rows=1) == []


UNI = "univariate_drift"


def test_the_drift_check_counts_a_feature_only_when_every_method_alerts() -> None:
    """car_value alerts on JS and KS: counted. loan_length on KS only: reported, not counted.
    The reconstruction error always counts."""
    T, F = True, False
    table = results(
        {
            (UNI, "car_value", "jensen_shannon", "jensen_shannon"): [T],
            (UNI, "car_value", "kolmogorov_smirnov", "kolmogorov_smirnov"): [T],
            (UNI, "loan_length", "jensen_shannon", "jensen_shannon"): [F],
            (UNI, "loan_length", "kolmogorov_smirnov", "kolmogorov_smirnov"): [T],
            ("multivariate_drift", None, "data_reconstruction", "reconstruction_error"): [F],
        }
    )
    counted, lone = drift_alerts(table)
    assert sorted(counted.get_column("method").to_list()) == [
        "jensen_shannon",
        "kolmogorov_smirnov",
    ]
    assert counted.get_column("column").unique().to_list() == ["car_value"]
    assert lone.select("column", "method").rows() == [("loan_length", "kolmogorov_smirnov")]
    recon = table.with_columns(
        alert=pl.when(pl.col("calculator") == "multivariate_drift")
        .then(True)
        .otherwise(pl.col("alert"))
    )
    assert "multivariate_drift" in drift_alerts(recon)[0].get_column("calculator").to_list()
