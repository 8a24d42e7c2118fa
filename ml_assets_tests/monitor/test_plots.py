"""NannyML's plots of a monitoring partition, on real NannyML results of a real CatBoost champion.

The partition is a month of the car-loan demo's second half with one continuous input made to
drift (tripled) and go half missing, so that column alerts in univariate drift and missing
values whatever the rest of the month does. What the files must show is derived from the
suite's tidy result rows (alerts, values, thresholds), not from the plotting code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import struct
from pathlib import Path

import polars as pl
import pytest

from ml_assets.monitor.plots import (
    PANEL_HEIGHT,
    PLOTLY_JS,
    PNG_COLUMNS,
    column_figures,
    plot_results,
    top_figure,
)
from ml_assets.monitor.schema import Calculator
from ml_assets.monitor.suite import FittedSuite, fit_suite
from ml_assets.testing import Scored, champion, month_bounds

# A CatBoost champion and NannyML fits (the first test pays ~30 s): not in the fast core.
pytestmark = pytest.mark.slow

C = Calculator
MAY = dt.datetime(2019, 5, 1, tzinfo=dt.UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _car_loan() -> Scored:
    return champion("car_loan", test_share=0.5)


def _broken_column(scored: Scored) -> str:
    """A float input that sorts last by name: ranking it first takes more than name order."""
    floats = [c for c in scored.model.continuous if scored.analysis.schema[c].is_float()]
    return sorted(floats)[-1]


def _may(scored: Scored) -> pl.DataFrame:
    """May 2019 with :func:`_broken_column` tripled in half its rows and null in the others."""
    start, end = month_bounds(MAY)
    month = scored.analysis.filter(pl.col("timestamp") >= start, pl.col("timestamp") < end)
    col = _broken_column(scored)
    return month.with_row_index("_i").with_columns(
        pl.when(pl.col("_i") % 2 == 0).then(pl.col(col) * 3).otherwise(None).alias(col)
    )


def _run(suite: FittedSuite, frame: pl.DataFrame) -> pl.DataFrame:
    return suite.run(
        frame,
        dataset="car_loan",
        partition="2019-05",
        champion_version="3",
        chunk_start=MAY,
        chunk_end=month_bounds(MAY)[1],
        domain_classifier=False,
    )


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


def _expected_order(results: pl.DataFrame, calculator: C) -> pl.DataFrame:
    """Per column of the tidy rows: whether it alerts and its highest value relative to the
    threshold it is nearest to crossing (value / upper, lower / value)."""
    rows = results.filter(pl.col("calculator") == calculator.value)
    v, lo, up = pl.col("value"), pl.col("lower_threshold"), pl.col("upper_threshold")
    upper = pl.when(up > 0).then(v / up).when(v > up).then(float("inf")).otherwise(0.0)
    lower = (
        pl.when(lo > 0)
        .then(pl.when(v > 0).then(lo / v).otherwise(float("inf")))
        .when(v < lo)
        .then(float("inf"))
        .otherwise(0.0)
    )
    return (
        rows.with_columns(near=pl.max_horizontal(upper, lower))
        .group_by("column")
        .agg(alert=pl.col("alert").fill_null(False).any(), near=pl.col("near").max())
    )


def test_many_columns_give_one_report_with_every_column_and_a_png_of_the_top_ones(tmp_path):
    scored = _car_loan()
    calculators = [C.UNIVARIATE_DRIFT, C.MISSING_VALUES, C.UNSEEN_VALUES, C.ESTIMATED_PERFORMANCE]
    suite = fit_suite(
        scored.model, scored.reference, calculators=calculators, reference_chunk_rows=5_000
    )
    results = _run(suite, _may(scored))

    files = plot_results(suite.results, tmp_path, prefix="2019-05_")

    assert set(files) == set(calculators)
    for calculator, f in files.items():
        assert f.html.name == f"2019-05_{calculator.value}.html"
        html = f.html.read_text()
        assert re.findall(r'<script[^>]*src="([^"]+)"', html) == [PLOTLY_JS]  # local, once
        assert f.html.stat().st_size < 500_000  # plotly.js itself is not embedded
        width, height = _png_size(f.png)
        assert width == 1200
        rows = results.filter(pl.col("calculator") == calculator.value)
        columns = rows.get_column("column").drop_nulls().unique().to_list()
        if calculator is C.ESTIMATED_PERFORMANCE:  # one figure of its metrics, as NannyML draws
            assert f.columns == ()
            assert html.count('class="plotly-graph-div"') == 1
            continue
        # Every column in the report, one figure each; the PNG has the top PNG_COLUMNS only.
        assert sorted(f.columns) == sorted(columns)
        assert html.count('class="plotly-graph-div"') == len(columns)
        assert all(c in html for c in columns)
        assert f.png_columns == min(PNG_COLUMNS, len(columns))
        assert f.more_columns == len(columns) - f.png_columns
        top = rows.filter(pl.col("column").is_in(list(f.columns[: f.png_columns])))
        assert height == max(500, PANEL_HEIGHT * top.height)  # one panel per (column, method)
    assert (tmp_path / PLOTLY_JS).stat().st_size > 1_000_000


def test_the_alerting_column_comes_first_in_the_report_and_the_png(tmp_path):
    scored = _car_loan()
    broken = _broken_column(scored)
    suite = fit_suite(
        scored.model,
        scored.reference,
        calculators=[C.UNIVARIATE_DRIFT, C.MISSING_VALUES],
        reference_chunk_rows=5_000,
    )
    results = _run(suite, _may(scored))
    files = plot_results(suite.results, tmp_path)

    for calculator in (C.UNIVARIATE_DRIFT, C.MISSING_VALUES):
        expected = _expected_order(results, calculator)
        assert expected.filter("alert").get_column("column").to_list().count(broken) == 1
        assert expected.filter(~pl.col("alert")).height > 0  # something to rank after them
        # Alerting first, then the highest value relative to its threshold, then by name.
        ranked = expected.sort(
            ["alert", "near", "column"], descending=[True, True, False], nulls_last=True
        )
        order = list(files[calculator].columns)
        assert order == ranked.get_column("column").to_list()

        # The report's figures follow that order (each figure's data names its column).
        html = files[calculator].html.read_text()
        plots = html.split("Plotly.newPlot(")[1:]
        assert len(plots) == len(order)
        for column, plot in zip(order, plots, strict=True):
            assert f"{column}\\u003c" in plot  # the column's bold subplot title: <b>column</b>

    # The PNG's figure: the top columns stacked, the first alerting column's panel on top.
    drift = suite.results[C.UNIVARIATE_DRIFT]
    fig = top_figure(column_figures(C.UNIVARIATE_DRIFT, drift), report="univariate_drift.html")
    order = list(files[C.UNIVARIATE_DRIFT].columns)
    titles = [a.text for a in fig.layout.annotations if a.yref == "paper"]
    top_panel = max((a for a in fig.layout.annotations if a.yref == "paper"), key=lambda a: a.y)
    assert order[0] in top_panel.text  # an alerting column (the ranking above)
    assert all(any(c in t for t in titles) for c in order[:PNG_COLUMNS])
    assert not any(c in t for t in titles for c in order[PNG_COLUMNS:])
    more = len(order) - PNG_COLUMNS
    assert f"of {len(order)} columns" in fig.layout.title.text
    assert f"{more} more in the HTML report, univariate_drift.html" in fig.layout.title.text


def test_a_result_with_no_columns_gives_no_file_and_no_exception(tmp_path):
    """An unseen-values result of a model with no categorical input: NannyML's own plot of it
    divides by zero; the report has nothing to show, so no file."""
    scored = _car_loan()
    model = dataclasses.replace(
        scored.model, features=list(scored.model.continuous), categorical=[]
    )
    suite = fit_suite(
        model,
        scored.reference,
        calculators=[C.UNSEEN_VALUES, C.MISSING_VALUES],
        reference_chunk_rows=5_000,
    )
    _run(suite, _may(scored))
    unseen = suite.results[C.UNSEEN_VALUES]
    with pytest.raises(ZeroDivisionError):
        unseen.plot()

    files = plot_results(suite.results, tmp_path)

    assert set(files) == {C.MISSING_VALUES}
    assert files[C.MISSING_VALUES].png.exists()
    assert not list(tmp_path.glob("*unseen*"))
