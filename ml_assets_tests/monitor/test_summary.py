"""The monitoring summary: its figure, table and asset, from results tables built by hand with
the results schema and written into a temporary lake as the monitoring asset writes them."""

from __future__ import annotations

import base64
import datetime as dt
import re

import dagster as dg
import polars as pl
import pytest

from ml_assets.dataset import Dataset, load_datasets
from ml_assets.monitor.incidents import find_incidents
from ml_assets.monitor.schema import RESULTS_SCHEMA
from ml_assets.monitor.summary import (
    ALERT,
    CHAMPION,
    DOMAIN_PANEL,
    LATENCY_PANEL,
    MULTIVARIATE_PANEL,
    NO_PARTITIONS,
    PERFORMANCE_PANEL,
    QUALITY_PANEL,
    REQUESTS_PANEL,
    SUMMARY_SCHEMA,
    THRESHOLD,
    UNIVARIATE_PANEL,
    VALUE,
    build_summary_asset,
    champion_changes,
    summary_figure,
    summary_table,
    write_figure,
)
from ml_assets.storage import Lake
from ml_assets_tests.monitor.alert_tables import (
    DRIFT,
    ESTIMATED,
    REALIZED,
    WEEKS,
    results,
)

T, F = True, False
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MULTIVARIATE = ("multivariate_drift", None, "data_reconstruction", "reconstruction_error")
DRIFT_2 = ("univariate_drift", "driver_age", "kolmogorov_smirnov", "kolmogorov_smirnov")
MISSING = ("missing_values", "car_value", "missing_values", "missing_values_rate")
SECONDARY = ("estimated_performance", None, "cbpe", "f1")


def table(series: dict, champions: list[str] | None = None, **kwargs) -> pl.DataFrame:
    """A results table; ``champions[i]`` is the champion monitored in partition i."""
    frame = results(series, **kwargs)
    if champions is not None:
        by_partition = dict(zip(WEEKS, champions, strict=False))
        frame = frame.with_columns(
            champion_version=pl.col("partition").replace_strict(by_partition, default="3")
        )
    return frame


def operational(partitions: list[str], dataset: str = "car_loan") -> pl.DataFrame:
    """Served-traffic rows (requests, latency p99) as the operational summary writes them."""
    rows = []
    for n, partition in enumerate(partitions):
        start = dt.datetime.fromisoformat(partition).replace(tzinfo=dt.UTC)
        for metric, value in (("requests", 10.0 + n), ("latency_p99_ms", 4.0 + n)):
            rows.append(
                {
                    "dataset": dataset,
                    "partition": partition,
                    "chunk_start": start,
                    "chunk_end": start + dt.timedelta(days=7),
                    "champion_version": "3",
                    "calculator": "operational",
                    "column": "predict/http",
                    "method": "prediction_log",
                    "metric": metric,
                    "value": value,
                    "alert": False,
                    "rows": 100,
                }
            )
    return pl.DataFrame(rows, schema=RESULTS_SCHEMA)


def panels(fig) -> list[str]:
    """The figure's panel titles, top to bottom (plotly's subplot titles)."""
    return [a.text for a in fig.layout.annotations if a.yref == "paper" and a.xref == "paper"]


def traces(fig, panel: str, role: str) -> list[str]:
    return [t.name for t in fig.data if t.meta["panel"] == panel and t.meta["role"] == role]


def shapes(fig, what: str) -> list:
    return [s for s in fig.layout.shapes if (s.name or "").startswith(what)]


def row_of(fig, shape) -> int:
    """The panel (1-based) a shape is drawn on, from its y axis reference."""
    ref = shape.yref.split()[0]  # "y3 domain"
    return int(ref[1:] or 1)


# --- the figure -------------------------------------------------------------------------------


def test_the_figure_has_a_panel_per_series_with_values_and_thresholds():
    frame = pl.concat(
        [
            table(
                {
                    ESTIMATED: [F, F, T, T, F],
                    REALIZED: [F, None, T, F, F],
                    MULTIVARIATE: [F, F, F, F, F],
                    DRIFT: [F, T, T, F, F],
                    DRIFT_2: [F, F, T, F, F],
                    MISSING: [F, F, F, F, F],
                }
            ),
            operational(WEEKS[:5]),
        ]
    )
    fig = summary_figure(frame)
    assert panels(fig) == [
        PERFORMANCE_PANEL,
        MULTIVARIATE_PANEL,
        UNIVARIATE_PANEL,
        QUALITY_PANEL,
        REQUESTS_PANEL,
        LATENCY_PANEL,
    ]
    assert DOMAIN_PANEL not in panels(fig)  # the domain classifier did not run
    assert traces(fig, PERFORMANCE_PANEL, VALUE) == ["estimated roc_auc", "realized roc_auc"]
    # alert_tables gives every metric a lower threshold only
    assert traces(fig, PERFORMANCE_PANEL, THRESHOLD) == [
        "estimated roc_auc lower threshold",
        "realized roc_auc lower threshold",
    ]
    assert traces(fig, MULTIVARIATE_PANEL, THRESHOLD) == ["reconstruction error lower threshold"]
    assert traces(fig, QUALITY_PANEL, VALUE) == ["missing car_value"]
    assert traces(fig, REQUESTS_PANEL, VALUE) == ["predict/http"]
    # x is the partition's start; realized before its labels is a gap, not a zero
    [realized] = [t for t in fig.data if t.name == "realized roc_auc"]
    assert [x.date().isoformat() for x in realized.x] == WEEKS[:5]
    assert realized.y[1] is None and realized.y[0] == pytest.approx(0.80)
    assert realized.hovertext[0] == "label coverage 100%"
    # univariate drift: how many features drift in each partition
    [drifting] = [t for t in fig.data if t.meta["panel"] == UNIVARIATE_PANEL]
    assert list(drifting.y) == [0, 1, 2, 0, 0]
    assert drifting.hovertext[2] == "car_value, driver_age"


def test_one_shaded_period_per_incident_on_the_panel_of_its_metric():
    frame = table(
        {
            ESTIMATED: [F, T, T, F, F, F, T, T, F],
            MULTIVARIATE: [F, F, F, F, T, F, F, F, F],
            DRIFT: [F, F, F, F, F, F, F, F, T],
        }
    )
    incidents = find_incidents(frame)
    assert len(incidents) == 4
    fig = summary_figure(frame, incidents)
    periods = shapes(fig, ALERT)
    assert len(periods) == len(incidents)
    by_panel = sorted((panels(fig)[row_of(fig, s) - 1], s.name.split()[1]) for s in periods)
    assert by_panel == sorted(
        [
            (PERFORMANCE_PANEL, i.id) if i.calculator == "estimated_performance" else
            (MULTIVARIATE_PANEL, i.id) if i.calculator == "multivariate_drift" else
            (UNIVARIATE_PANEL, i.id)
            for i in incidents
        ]
    )  # fmt: skip
    # each band is centred on its partitions' points: from half a week before the first
    # partition's start to half a week after the last one's
    [first] = [s for s in periods if s.name.endswith(":2018-01-08")]
    assert dt.datetime.fromisoformat(str(first.x0)).date() == dt.date(2018, 1, 4)
    assert dt.datetime.fromisoformat(str(first.x1)).date() == dt.date(2018, 1, 18)
    # the ongoing incident (still alerting in the last partition) is shaded darker
    [ongoing] = [i for i in incidents if i.ongoing]
    [band] = [s for s in periods if ongoing.id in s.name]
    assert band.opacity > max(s.opacity for s in periods if s is not band)


def test_overlapping_incidents_of_one_panel_are_one_period():
    frame = table({ESTIMATED: [F, T, T, F], REALIZED: [F, F, T, T], DRIFT: [T, F, F, F]})
    fig = summary_figure(frame)
    performance = [s for s in shapes(fig, ALERT) if row_of(fig, s) == 1]
    [band] = performance
    assert len(band.name.split()) == 3  # "alert:" and both incident ids
    assert dt.datetime.fromisoformat(str(band.x1)).date() == dt.date(2018, 1, 25)


def test_champion_changes_are_marked_on_every_panel_with_the_version():
    frame = table(
        {ESTIMATED: [F, F, T, F, F], DRIFT: [F, F, F, F, F]}, champions=["3", "3", "4", "4", "5"]
    )
    assert champion_changes(frame) == [("2018-01-15", "4"), ("2018-01-29", "5")]
    fig = summary_figure(frame)
    lines = shapes(fig, CHAMPION)
    assert sorted({s.name for s in lines}) == [f"{CHAMPION} v4", f"{CHAMPION} v5"]
    assert len(lines) == 2 * len(panels(fig))
    v4 = [s for s in lines if s.name.endswith("v4")]
    assert {dt.datetime.fromisoformat(str(s.x0)).date() for s in v4} == {dt.date(2018, 1, 15)}
    labels = [a.text for a in fig.layout.annotations if (a.name or "").startswith(CHAMPION)]
    assert labels == ["v4", "v5"]
    assert shapes(summary_figure(table({ESTIMATED: [F, F]})), CHAMPION) == []


def test_the_primary_metric_is_the_one_plotted_and_the_first_by_default():
    frame = table({ESTIMATED: [F, T], SECONDARY: [F, F]})
    assert traces(summary_figure(frame), PERFORMANCE_PANEL, VALUE) == ["estimated roc_auc"]
    f1 = summary_figure(frame, metric="f1")
    assert traces(f1, PERFORMANCE_PANEL, VALUE) == ["estimated f1"]
    assert shapes(f1, ALERT) == []  # the roc_auc incident is not f1's


def test_a_rate_panel_starts_at_zero_and_leaves_out_a_lower_threshold_of_zero():
    frame = table({MISSING: [F, F, T]}).with_columns(
        value=pl.Series([0.0, 0.0, 0.3]), lower_threshold=0.0, upper_threshold=0.05
    )
    fig = summary_figure(frame)
    assert traces(fig, QUALITY_PANEL, THRESHOLD) == ["missing car_value upper threshold"]
    assert fig.layout.yaxis.range[0] == 0 and fig.layout.yaxis.range[1] >= 0.3


def test_an_empty_results_table_is_a_clear_error_for_the_figure():
    with pytest.raises(ValueError, match="no monitoring partition"):
        summary_figure(results({}))


def test_the_figure_renders_offline_to_png_and_html(tmp_path):
    fig = summary_figure(table({ESTIMATED: [F, T, T, F], DRIFT: [F, T, F, F]}))
    files = write_figure(fig, tmp_path / "summary")
    assert files.png is not None and files.png.read_bytes()[:8] == PNG_MAGIC
    html = files.html.read_text()
    assert 'src="plotly.min.js"' in html and "cdn.plot.ly" not in html
    assert (tmp_path / "summary" / "plotly.min.js").exists()


# --- the table --------------------------------------------------------------------------------


def test_the_summary_table_has_one_row_per_partition_in_time_order():
    frame = table(
        {
            ESTIMATED: [F, T, F],
            REALIZED: [None, T, F],
            DRIFT: [T, T, F],
            DRIFT_2: [F, T, F],
            MULTIVARIATE: [F, T, F],
            MISSING: [F, F, T],
        },
        champions=["3", "4", "4"],
    ).reverse()
    summary = summary_table(frame)
    assert summary.schema == pl.Schema(SUMMARY_SCHEMA)
    assert summary.get_column("partition").to_list() == WEEKS[:3]
    assert summary.get_column("champion_version").to_list() == ["3", "4", "4"]
    assert summary.get_column("metric").unique().to_list() == ["roc_auc"]
    assert summary.get_column("estimated").to_list() == pytest.approx([0.80, 0.60, 0.80])
    assert summary.get_column("realized").to_list()[0] is None
    assert summary.get_column("performance_alerts").to_list() == [0, 2, 0]
    assert summary.get_column("drift_alerts").to_list() == [1, 3, 0]
    assert summary.get_column("drifting_features").to_list() == [1, 2, 0]
    assert summary.get_column("quality_alerts").to_list() == [0, 0, 1]
    assert summary.get_column("any_alert").to_list() == [T, T, T]
    assert summary.get_column("label_coverage").to_list() == [1.0, 1.0, 1.0]
    assert summary_table(results({})).schema == pl.Schema(SUMMARY_SCHEMA)


# --- the asset --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def car_loan() -> Dataset:
    return load_datasets()["car_loan"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_ASSETS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def write_monitoring(lake: Lake, dataset: Dataset, frame: pl.DataFrame) -> None:
    """One file per partition, as the monitoring asset writes them."""
    for partition in frame.get_column("partition").unique().sort():
        lake.write(dataset.keys.monitoring, partition, frame.filter(partition=partition))


def materialize(dataset: Dataset, lake: Lake) -> dg.MaterializeResult:
    result = dg.materialize([build_summary_asset(dataset)], resources={"lake": lake})
    assert result.success
    [event] = result.get_asset_materialization_events()
    return event.materialization


def test_the_asset_summarizes_every_monitored_partition(car_loan, tmp_path, home):
    lake = Lake(base_path=str(tmp_path / "lake"))
    frame = table(
        {ESTIMATED: [F, T, T, F, T], DRIFT: [F, F, T, F, F]}, champions=["3", "3", "3", "4", "4"]
    )
    write_monitoring(lake, car_loan, frame)
    materialization = materialize(car_loan, lake)
    meta = materialization.metadata
    assert meta["dagster/row_count"].value == 5
    assert meta["partitions_monitored"].value == 5
    assert (meta["first_partition"].value, meta["last_partition"].value) == (WEEKS[0], WEEKS[4])
    assert meta["champion_versions"].value == "3, 4"
    # the PNG, embedded for the UI
    [png] = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", meta["summary"].value)
    assert base64.b64decode(png)[:8] == PNG_MAGIC
    # the incidents, as a table
    incidents = meta["incidents"].value
    assert meta["incident_count"].value == 3 and meta["ongoing_incidents"].value == 1
    assert "| estimated_performance cbpe roc_auc | 2018-01-08 | 2018-01-15 | 2 | no |" in incidents
    assert "| estimated_performance cbpe roc_auc | 2018-01-29 | 2018-01-29 | 1 | yes |" in incidents
    # the HTML and the table
    report = home / "monitoring" / "car_loan" / "summary" / "summary.html"
    assert meta["report"].value == str(report) and report.exists()
    stored = lake.scan(car_loan.keys.monitoring_summary, [None]).collect()
    assert stored.get_column("partition").to_list() == WEEKS[:5]
    assert stored.get_column("performance_alerts").to_list() == [0, 1, 1, 0, 1]


def test_no_monitoring_partitions_is_a_materialization_that_says_so(car_loan, tmp_path, home):
    lake = Lake(base_path=str(tmp_path / "lake"))
    meta = materialize(car_loan, lake).metadata
    assert NO_PARTITIONS in meta["status"].value
    assert meta["dagster/row_count"].value == 0 and "summary" not in meta
    stored = lake.scan(car_loan.keys.monitoring_summary, [None]).collect()
    assert stored.height == 0 and stored.schema == pl.Schema(SUMMARY_SCHEMA)


@pytest.mark.filterwarnings("ignore:Parameter `include_sources`:dagster.BetaWarning")
def test_the_summary_follows_new_monitoring_partitions_of_any_partition(car_loan, tmp_path):
    """The automation requests the summary once a monitoring partition is materialized, though
    most partitions are never monitored (plain ``eager`` would wait for all of them)."""
    lake = Lake(base_path=str(tmp_path / "lake"))
    defs = dg.Definitions(assets=[build_summary_asset(car_loan)], resources={"lake": lake})
    summary = car_loan.keys.monitoring_summary
    with dg.DagsterInstance.ephemeral() as instance:
        before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert before.get_num_requested(summary) == 0
        instance.report_runless_asset_event(
            dg.AssetMaterialization(car_loan.keys.monitoring, partition=WEEKS[3])
        )
        after = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=before.cursor
        )
        assert after.get_num_requested(summary) == 1
        again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
        assert again.get_num_requested(summary) == 0  # handled: not requested again


def test_the_summary_has_its_own_job_and_stays_out_of_the_monitor_job():
    from ml_assets.definitions import build_definitions

    car_loan = load_datasets()["car_loan"]
    defs = build_definitions({"car_loan": car_loan})
    job = defs.resolve_job_def(car_loan.jobs.monitoring_summary)
    assert job.name == "car_loan_monitoring_summary"
    assert job.asset_layer.executable_asset_keys == {car_loan.keys.monitoring_summary}
    monitor = defs.resolve_job_def(car_loan.jobs.monitor)
    assert car_loan.keys.monitoring_summary not in monitor.asset_layer.executable_asset_keys


# --- on real NannyML results --------------------------------------------------------------------


@pytest.mark.slow
def test_the_summary_of_real_nannyml_results_shades_the_car_loan_shift(tmp_path):
    """Monthly partitions of the demo's second half against a real champion's test window: the
    shift the stack notes place at 2019-03-31 (see test_suite) is one alert period from 2019-04
    on, on the performance and the multivariate drift panels, and nothing before it."""
    from ml_assets.monitor.schema import Calculator
    from ml_assets.monitor.suite import ALL, fit_suite
    from ml_assets.testing import champion, month_bounds

    scored = champion("car_loan", test_share=0.5)
    calculators = [c for c in ALL if c is not Calculator.DOMAIN_CLASSIFIER]
    suite = fit_suite(
        scored.model, scored.reference, calculators=calculators, reference_chunk_rows=5_000
    )
    parts = []
    for month in (2, 3, 4, 5):
        start, end = month_bounds(dt.datetime(2019, month, 1, tzinfo=dt.UTC))
        rows = scored.analysis.filter(
            pl.col(scored.model.timestamp) >= start, pl.col(scored.model.timestamp) < end
        )
        version = "4" if month == 5 else "3"
        parts.append(
            suite.run(
                rows,
                dataset="car_loan",
                partition=str(start.date()),
                champion_version=version,
                chunk_start=start,
                chunk_end=end,
            )
        )
    frame = pl.concat(parts)
    fig = summary_figure(frame, metric="roc_auc")
    assert panels(fig)[:3] == [PERFORMANCE_PANEL, MULTIVARIATE_PANEL, UNIVARIATE_PANEL]
    assert QUALITY_PANEL in panels(fig)
    assert traces(fig, PERFORMANCE_PANEL, THRESHOLD)  # NannyML's thresholds are drawn
    for row in (1, 2):
        [band] = [s for s in shapes(fig, ALERT) if row_of(fig, s) == row]
        assert all(i.endswith(":2019-04-01") for i in band.name.split()[1:]), band.name
    assert {s.name for s in shapes(fig, CHAMPION)} == {f"{CHAMPION} v4"}
    files = write_figure(fig, tmp_path)
    assert files.png is not None and files.png.read_bytes()[:8] == PNG_MAGIC
    summary = summary_table(frame)
    assert summary.get_column("partition").to_list() == [f"2019-0{m}-01" for m in (2, 3, 4, 5)]
    assert summary.get_column("performance_alerts").to_list()[2:] != [0, 0]
