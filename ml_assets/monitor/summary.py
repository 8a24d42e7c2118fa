"""The monitoring summary: every monitoring metric of a dataset over time, in one figure and
one table.

Plain functions over the tidy results table (:data:`~ml_assets.monitor.schema.RESULTS_SCHEMA`,
every monitoring partition at once, as :func:`~ml_assets.monitor.sensors.read_results` gives
it), and the ``<dataset>/monitoring_summary`` asset built on them:

* :func:`summary_figure`: a plotly figure with one panel per series that matters, x = the
  partition's start time: the primary metric estimated and realized (with their thresholds),
  multivariate drift (reconstruction error, with its thresholds; the domain classifier's AUROC
  when it ran), univariate drift as the count of drifting features per partition, the missing
  and unseen value rates of the features that matter most (with their thresholds), and the
  served traffic (requests, latency p99) when the prediction log had any. Each panel shades its
  alert periods: the incidents (:func:`~ml_assets.monitor.incidents.find_incidents`) of the
  metrics it plots, one band per incident, overlapping or back-to-back incidents of one panel
  merged into one band (the univariate panel counts every feature's incidents, which would
  otherwise stack). A dotted line with a ``v<version>`` label marks every change of champion.
* :func:`summary_table`: one row per partition (:data:`SUMMARY_SCHEMA`), stored in the lake.
* :func:`write_figure`: the PNG (locked kaleido 0.2.1, offline) and the HTML (one local
  ``plotly.min.js`` beside it, as :mod:`~ml_assets.monitor.plots` does for NannyML's plots).

No column of any dataset is named here: features come from the results' ``column``, the primary
metric from the problem kind. plotly is imported inside functions only (the code location loads
this module).
"""

import base64
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from ml_assets import settings
from ml_assets.dataset import Dataset
from ml_assets.monitor.incidents import Incident, counted, find_incidents
from ml_assets.monitor.plots import PLOTLY_JS
from ml_assets.monitor.schema import PERFORMANCE, UTC_US, Calculator
from ml_assets.monitor.sensors import read_results
from ml_assets.storage import Lake

log = logging.getLogger(__name__)

PERFORMANCE_PANEL = "performance"
MULTIVARIATE_PANEL = "multivariate drift"
DOMAIN_PANEL = "domain classifier"
UNIVARIATE_PANEL = "univariate drift"
QUALITY_PANEL = "data quality"
REQUESTS_PANEL = "requests"
LATENCY_PANEL = "latency p99"
PANELS = (
    PERFORMANCE_PANEL,
    MULTIVARIATE_PANEL,
    DOMAIN_PANEL,
    UNIVARIATE_PANEL,
    QUALITY_PANEL,
    REQUESTS_PANEL,
    LATENCY_PANEL,
)
"""Every panel the figure can have, top to bottom; a panel with nothing to plot is left out."""

VALUE, THRESHOLD, ALERT = "value", "threshold", "alert"
"""``meta["role"]`` of a trace (the metric, one of its thresholds) and of a shape (an alert
period; champion changes are ``"champion"``)."""
CHAMPION = "champion"

QUALITY_FEATURES = 3
"""Features shown on the data quality panel: those alerting most, then with the highest rate."""
DRIFT = (Calculator.UNIVARIATE_DRIFT, Calculator.MULTIVARIATE_DRIFT, Calculator.DOMAIN_CLASSIFIER)
QUALITY = (Calculator.MISSING_VALUES, Calculator.UNSEEN_VALUES)
PANEL_HEIGHT = 260
INCIDENT_ROWS = 50
"""Incidents listed in the asset's metadata (the most recent first)."""

SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.String(),
    "partition": pl.String(),
    "chunk_start": UTC_US,
    "chunk_end": UTC_US,
    "champion_version": pl.String(),
    "rows": pl.Int64(),
    "metric": pl.String(),  # NannyML's name of the primary metric
    "estimated": pl.Float64(),
    "realized": pl.Float64(),
    "label_coverage": pl.Float64(),
    "performance_alerts": pl.Int64(),  # alerting rows of estimated and realized performance
    "drift_alerts": pl.Int64(),  # alerting rows of univariate, multivariate, domain classifier
    "drifting_features": pl.Int64(),  # features with a univariate drift alert
    "quality_alerts": pl.Int64(),  # alerting rows of missing and unseen values
    "alerts": pl.Int64(),  # every alerting row
    "any_alert": pl.Boolean(),
}
"""One row per monitored partition: what :func:`summary_table` gives."""


# --- the table --------------------------------------------------------------------------------


def primary_metric(results: pl.DataFrame, metric: str | None = None) -> str | None:
    """NannyML's name of the primary metric: ``metric`` when given, else the first metric of
    the estimated (or realized) performance rows (the suite writes the primary one first)."""
    if metric is not None:
        return metric
    for calculator in PERFORMANCE:
        rows = results.filter(pl.col("calculator") == calculator.value)
        if rows.height:
            return str(rows.get_column("metric")[0])
    return None


def _partitions(results: pl.DataFrame) -> pl.DataFrame:
    """partition, chunk_start, chunk_end, champion_version: one row each, in time order."""
    return (
        results.group_by("partition", maintain_order=True)
        .agg(
            pl.col("dataset").last(),
            pl.col("chunk_start").drop_nulls().first(),
            pl.col("chunk_end").drop_nulls().first(),
            pl.col("champion_version").drop_nulls().last(),
        )
        .sort(["chunk_start", "partition"], nulls_last=True)
    )


def _alerting(*calculators: Calculator) -> pl.Expr:
    wanted = pl.col("calculator").is_in([c.value for c in calculators])
    return (wanted & pl.col("alert").fill_null(False)).sum().cast(pl.Int64)


def summary_table(results: pl.DataFrame, metric: str | None = None) -> pl.DataFrame:
    """One row per monitored partition, in time order (:data:`SUMMARY_SCHEMA`).

    ``metric`` is NannyML's name of the primary metric (default: :func:`primary_metric`);
    ``estimated`` and ``realized`` are its values, ``label_coverage`` the share of the
    partition's rows with their label, ``rows`` the rows monitored.
    """
    if results.is_empty():
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    metric = primary_metric(results, metric)
    results = counted(results)
    parts = _partitions(results)
    est, real = Calculator.ESTIMATED_PERFORMANCE.value, Calculator.REALIZED_PERFORMANCE.value
    is_metric = pl.col("metric") == metric
    monitored = pl.col("calculator") != Calculator.OPERATIONAL.value
    per = results.group_by("partition").agg(
        rows=pl.col("rows").filter(monitored).max(),
        estimated=pl.col("value").filter((pl.col("calculator") == est) & is_metric).last(),
        realized=pl.col("value").filter((pl.col("calculator") == real) & is_metric).last(),
        label_coverage=pl.col("label_coverage").filter(pl.col("calculator") == real).max(),
        performance_alerts=_alerting(*PERFORMANCE),
        drift_alerts=_alerting(*DRIFT),
        drifting_features=pl.col("column")
        .filter(
            (pl.col("calculator") == Calculator.UNIVARIATE_DRIFT.value)
            & pl.col("alert").fill_null(False)
        )
        .n_unique()
        .cast(pl.Int64),
        quality_alerts=_alerting(*QUALITY),
        alerts=pl.col("alert").fill_null(False).sum().cast(pl.Int64),
    )
    table = parts.join(per, on="partition", how="left", maintain_order="left").with_columns(
        metric=pl.lit(metric, pl.String()), any_alert=pl.col("alerts") > 0
    )
    return table.select(pl.col(c).cast(t) for c, t in SUMMARY_SCHEMA.items())


# --- the figure -------------------------------------------------------------------------------


@dataclass
class _Trace:
    name: str
    frame: pl.DataFrame
    """x, y (one row per partition, in time order)."""
    role: str = VALUE
    kind: str = "line"
    color: str | None = None
    dash: str | None = None
    hover: list[str] | None = None


@dataclass
class _Panel:
    name: str
    unit: str
    traces: list[_Trace] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    rate: bool = False
    """Values are rates: the y axis starts at 0 (and shows 0-5% when every rate is 0)."""


_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
)
_ALERT_COLOR = "#d62728"


def _series(
    results: pl.DataFrame,
    parts: pl.DataFrame,
    calculator: str,
    metric: str | None = None,
    column: str | None = None,
) -> pl.DataFrame:
    """x, value, lower, upper, alert of one metric, one row per monitored partition."""
    rows = results.filter(pl.col("calculator") == calculator)
    if metric is not None:
        rows = rows.filter(pl.col("metric") == metric)
    if column is not None:
        rows = rows.filter(pl.col("column") == column)
    per = rows.group_by("partition", maintain_order=True).agg(
        pl.col("value").last(),
        pl.col("lower_threshold").last().alias("lower"),
        pl.col("upper_threshold").last().alias("upper"),
        pl.col("alert").last(),
        pl.col("label_coverage").last().alias("coverage"),
    )
    return parts.select("partition", pl.col("chunk_start").alias("x")).join(
        per, on="partition", how="inner", maintain_order="left"
    )


def _with_thresholds(
    name: str, series: pl.DataFrame, color: str, floor: float | None = None
) -> list[_Trace]:
    """The metric and each threshold it has; a lower threshold never above ``floor`` (a rate's
    0) is left out: nothing can cross it."""
    traces = [_Trace(name, series.select("x", y="value"), color=color)]
    for side in ("lower", "upper"):
        values = series.get_column(side).drop_nulls()
        if side == "lower" and floor is not None and values.len() and values.max() <= floor:
            continue
        if values.len():
            traces.append(
                _Trace(
                    f"{name} {side} threshold",
                    series.select("x", y=side),
                    role=THRESHOLD,
                    color=color,
                    dash="dash",
                )
            )
    return traces


def _has_values(series: pl.DataFrame) -> bool:
    return series.height > 0 and series.get_column("value").drop_nulls().len() > 0


def _of(incidents: Sequence[Incident], calculator: str, **match: str | None) -> list[Incident]:
    return [
        i
        for i in incidents
        if i.calculator == calculator and all(getattr(i, k) == v for k, v in match.items())
    ]


def _panels(
    results: pl.DataFrame, incidents: Sequence[Incident], metric: str | None, top: int
) -> list[_Panel]:
    results = counted(results)  # a lone method's univariate alert does not make a feature drift
    parts = _partitions(results)
    panels: list[_Panel] = []

    perf = _Panel(PERFORMANCE_PANEL, metric or "")
    for calculator, color in zip(PERFORMANCE, _COLORS, strict=False):
        series = _series(results, parts, calculator.value, metric=metric)
        if series.height:
            label = "estimated" if calculator is Calculator.ESTIMATED_PERFORMANCE else "realized"
            traces = _with_thresholds(f"{label} {metric}", series, color)
            if calculator is Calculator.REALIZED_PERFORMANCE:
                traces[0].hover = [
                    "no label yet" if c is None else f"label coverage {c:.0%}"
                    for c in series.get_column("coverage").to_list()
                ]
            perf.traces += traces
            perf.incidents += _of(incidents, calculator.value, metric=metric)
    panels.append(perf)

    for name, calculator, unit in (
        (MULTIVARIATE_PANEL, Calculator.MULTIVARIATE_DRIFT, "reconstruction error"),
        (DOMAIN_PANEL, Calculator.DOMAIN_CLASSIFIER, "AUROC"),
    ):
        series = _series(results, parts, calculator.value)
        panel = _Panel(name, unit)
        if _has_values(series):
            panel.traces = _with_thresholds(unit, series, _COLORS[3])
            panel.incidents = _of(incidents, calculator.value)
        panels.append(panel)

    uni = results.filter(pl.col("calculator") == Calculator.UNIVARIATE_DRIFT.value)
    features = uni.get_column("column").drop_nulls().n_unique()
    drifting = _Panel(UNIVARIATE_PANEL, f"features drifting (of {features})")
    if uni.height:
        per = uni.group_by("partition").agg(
            pl.col("column").filter(pl.col("alert").fill_null(False)).unique().sort()
        )
        bars = parts.join(per, on="partition", how="inner", maintain_order="left").select(
            x="chunk_start", y=pl.col("column").list.len(), names=pl.col("column")
        )
        hover = [", ".join(n) or "none" for n in bars.get_column("names").to_list()]
        drifting.traces = [
            _Trace(
                "features drifting",
                bars.select("x", "y"),
                kind="bar",
                color=_COLORS[4],
                hover=hover,
            )
        ]
        drifting.incidents = _of(incidents, Calculator.UNIVARIATE_DRIFT.value)
    panels.append(drifting)

    quality = results.filter(
        pl.col("calculator").is_in([c.value for c in QUALITY]) & pl.col("column").is_not_null()
    )
    panel = _Panel(QUALITY_PANEL, "rate", rate=True)
    if quality.height:
        ranked = (
            quality.group_by("calculator", "column")
            .agg(
                alerts=pl.col("alert").fill_null(False).sum(),
                peak=pl.col("value").max().fill_null(-1.0),
            )
            .sort(["alerts", "peak", "calculator", "column"], descending=[True, True, False, False])
            .head(top)
        )
        for (calculator, column, *_), color in zip(
            ranked.iter_rows(), _COLORS[5:] + _COLORS, strict=False
        ):
            series = _series(results, parts, calculator, column=column)
            what = "missing" if calculator == Calculator.MISSING_VALUES.value else "unseen"
            panel.traces += _with_thresholds(f"{what} {column}", series, color, floor=0.0)
            panel.incidents += _of(incidents, calculator, column=column)
    panels.append(panel)

    ops = results.filter(pl.col("calculator") == Calculator.OPERATIONAL.value)
    for name, metric_name, unit in (
        (REQUESTS_PANEL, "requests", "requests"),
        (LATENCY_PANEL, "latency_p99_ms", "ms"),
    ):
        panel = _Panel(name, unit)
        for column, color in zip(
            sorted(ops.get_column("column").drop_nulls().unique().to_list()), _COLORS, strict=False
        ):
            series = _series(ops, parts, Calculator.OPERATIONAL.value, metric_name, column)
            if _has_values(series):
                panel.traces.append(_Trace(column, series.select("x", y="value"), color=color))
        panels.append(panel)
    return [p for p in panels if p.traces]


def _periods(
    incidents: Sequence[Incident], order: dict[str, int]
) -> list[tuple[int, int, list[Incident]]]:
    """Alert periods: incidents as partition index ranges, merged where they overlap or
    touch."""
    spans = sorted(
        (
            (order[i.first_partition], order[i.last_partition], i)
            for i in incidents
            if i.first_partition in order and i.last_partition in order
        ),
        key=lambda span: (span[0], span[1], span[2].id),
    )
    merged: list[tuple[int, int, list[Incident]]] = []
    for first, last, incident in spans:
        if merged and first <= merged[-1][1] + 1:
            lo, hi, group = merged[-1]
            merged[-1] = (lo, max(hi, last), [*group, incident])
        else:
            merged.append((first, last, [incident]))
    return merged


def summary_figure(
    results: pl.DataFrame,
    incidents: Sequence[Incident] | None = None,
    *,
    metric: str | None = None,
    title: str | None = None,
    quality_features: int = QUALITY_FEATURES,
) -> Any:
    """The plotly figure of every monitoring metric over time (see the module's doc).

    ``incidents`` default to :func:`~ml_assets.monitor.incidents.find_incidents` of
    ``results``; ``metric`` is NannyML's name of the primary metric (default
    :func:`primary_metric`). Every trace's ``meta`` says its ``panel`` and ``role``
    (:data:`VALUE` or :data:`THRESHOLD`); every shape's ``name`` says what it marks (an alert
    period's incident ids, or ``champion v<version>``). Raises ``ValueError`` on an empty table:
    there is nothing to plot.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if results.is_empty():
        raise ValueError("the results table is empty: no monitoring partition to plot yet")
    incidents = find_incidents(results) if incidents is None else list(incidents)
    metric = primary_metric(results, metric)
    parts = _partitions(results)
    panels = _panels(results, incidents, metric, quality_features)
    fig = make_subplots(
        rows=max(1, len(panels)),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.12 / max(1, len(panels)) + 0.02,
        subplot_titles=[p.name for p in panels] or ["no metric to plot"],
    )
    for row, panel in enumerate(panels, start=1):
        legend = "legend" if row == 1 else f"legend{row}"
        for trace in panel.traces:
            x, y = trace.frame.get_column("x").to_list(), trace.frame.get_column("y").to_list()
            common: dict[str, Any] = {
                "x": x,
                "y": y,
                "name": trace.name,
                "legend": legend,
                "meta": {"panel": panel.name, "role": trace.role},
            }
            if trace.hover is not None:
                common["hovertext"] = trace.hover
            if trace.kind == "bar":
                fig.add_trace(go.Bar(**common, marker_color=trace.color), row=row, col=1)
            else:
                fig.add_trace(
                    go.Scatter(
                        **common,
                        mode="lines+markers" if trace.role == VALUE else "lines",
                        line={
                            "color": trace.color,
                            "dash": trace.dash,
                            "width": 2 if trace.role == VALUE else 1,
                            "shape": "linear" if trace.role == VALUE else "hv",
                        },
                        connectgaps=False,
                    ),
                    row=row,
                    col=1,
                )
        fig.update_yaxes(title_text=panel.unit, row=row, col=1)
        if panel.rate:
            ys = [
                y for t in panel.traces for y in t.frame.get_column("y").to_list() if y is not None
            ]
            top = max([0.0, *ys])
            fig.update_yaxes(range=[0, max(0.05, top * 1.15)], row=row, col=1)
        domain = fig.layout[f"yaxis{'' if row == 1 else row}"].domain
        fig.update_layout(
            {legend: {"y": domain[1], "yanchor": "top", "x": 1.01, "font": {"size": 10}}}
        )
    _shade(fig, panels, parts)
    _mark_champions(fig, parts, len(panels))
    fig.update_layout(
        title=title or _title(parts),
        template="plotly_white",
        bargap=0.3,
        margin={"t": 90, "r": 260},
        hovermode="x unified",
    )
    fig.update_xaxes(showticklabels=True)
    return fig


def _title(parts: pl.DataFrame) -> str:
    names = parts.get_column("dataset").drop_nulls()
    keys = parts.get_column("partition").to_list()
    span = keys[0] if len(keys) == 1 else f"{keys[0]} to {keys[-1]}"
    plural = "s" if len(keys) != 1 else ""
    return f"{names[0] if names.len() else ''} monitoring: {len(keys)} partition{plural}, {span}"


def _shade(fig: Any, panels: Sequence[_Panel], parts: pl.DataFrame) -> None:
    """One band per alert period of each panel, centred on its partitions' points."""
    starts = parts.get_column("chunk_start").to_list()
    ends = parts.get_column("chunk_end").to_list()
    order = {p: n for n, p in enumerate(parts.get_column("partition").to_list())}

    def half(n: int) -> dt.timedelta:
        if starts[n] is not None and ends[n] is not None:
            return (ends[n] - starts[n]) / 2
        return dt.timedelta(days=0.5)

    for row, panel in enumerate(panels, start=1):
        for first, last, group in _periods(panel.incidents, order):
            if starts[first] is None or starts[last] is None:
                continue
            ongoing = any(i.ongoing for i in group)
            fig.add_vrect(
                x0=starts[first] - half(first),
                x1=starts[last] + half(last),
                row=row,
                col=1,
                fillcolor=_ALERT_COLOR,
                opacity=0.28 if ongoing else 0.15,
                line_width=0,
                layer="below",
                name=f"{ALERT}: " + " ".join(i.id for i in group),
            )


def champion_changes(results: pl.DataFrame) -> list[tuple[str, str]]:
    """(first partition, version) of every change of champion, in time order (the first
    champion monitored is not a change)."""
    return _changes(_partitions(results))


def _changes(parts: pl.DataFrame) -> list[tuple[str, str]]:
    versions = parts.filter(pl.col("champion_version").is_not_null())
    changed = versions.filter(
        pl.col("champion_version") != pl.col("champion_version").shift(1)
    ).select("partition", "champion_version")
    return [(p, str(v)) for p, v in changed.iter_rows()]


def _mark_champions(fig: Any, parts: pl.DataFrame, rows: int) -> None:
    start = dict(parts.select("partition", "chunk_start").iter_rows())
    for partition, version in _changes(parts):
        x = start.get(partition)
        if x is None:
            continue
        for row in range(1, rows + 1):
            fig.add_vline(
                x=x,
                row=row,
                col=1,
                line={"color": "#555555", "dash": "dot", "width": 1.5},
                name=f"{CHAMPION} v{version}",
            )
        # add_vline's own annotation fails on datetime x (plotly): a separate one on top
        fig.add_annotation(
            x=x,
            y=1.0,
            xref="x",
            yref="paper",
            yanchor="bottom",
            text=f"v{version}",
            showarrow=False,
            font={"color": "#555555"},
            name=f"{CHAMPION} v{version}",
        )


# --- files and markdown -----------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryFiles:
    png: Path | None
    html: Path


def write_figure(
    fig: Any,
    folder: str | Path,
    name: str = "summary",
    *,
    png: bool = True,
    width: int = 1400,
    height: int | None = None,
) -> SummaryFiles:
    """``<name>.html`` (loading the ``plotly.min.js`` copied beside it once, so the folder
    works offline and can be moved whole) and ``<name>.png`` (kaleido, offline)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    html = out / f"{name}.html"
    fig.write_html(html, include_plotlyjs="directory", full_html=True)
    image: Path | None = None
    if png:
        rows = len([k for k in fig.layout.to_plotly_json() if k.startswith("yaxis")])
        image = out / f"{name}.png"
        from ml_assets.monitor.plots import write_png

        if not write_png(
            fig, image, width=width, height=height or 140 + PANEL_HEIGHT * max(1, rows)
        ):
            image = None
    log.debug("monitoring summary written to %s (%s)", html, PLOTLY_JS)
    return SummaryFiles(image, html)


def png_markdown(png: Path, alt: str = "monitoring summary") -> str:
    """A PNG embedded in markdown (base64), as the Dagster UI shows metadata images."""
    data = base64.b64encode(png.read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{data})"


def incidents_markdown(incidents: Sequence[Incident], limit: int = INCIDENT_ROWS) -> str:
    """The incidents as a markdown table, the most recent first."""
    if not incidents:
        return "No incident: no metric has alerted."
    ordered = sorted(incidents, key=lambda i: (i.last_partition, i.first_partition), reverse=True)
    lines = [
        "| metric | first partition | last partition | partitions | ongoing | value | threshold |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i in ordered[:limit]:
        value = "" if i.value is None else f"{i.value:.4g}"
        threshold = "" if i.threshold is None else f"{i.threshold:.4g}"
        lines.append(
            f"| {i.label} | {i.first_partition} | {i.last_partition} | {i.length} | "
            f"{'yes' if i.ongoing else 'no'} | {value} | {threshold} |"
        )
    if len(ordered) > limit:
        lines.append(f"\n(+{len(ordered) - limit} older incidents)")
    return "\n".join(lines)


# --- the asset --------------------------------------------------------------------------------

NO_PARTITIONS = "no monitoring partitions yet"

SUMMARY_AUTOMATION = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("eager (any monitoring partition)")
"""Re-summarize whenever a monitoring partition is materialized, once no monitoring run is in
progress. Not :meth:`~dagster.AutomationCondition.eager`: its ``~any_deps_missing`` holds back
an unpartitioned asset until EVERY upstream partition exists, and most data partitions are
never monitored."""


class SummaryConfig(dg.Config):
    """How the summary is rendered (editable in the launchpad)."""

    png: bool = True
    """Render the PNG shown in the UI (kaleido, about 2 s); the HTML is always written."""
    quality_features: int = QUALITY_FEATURES
    """Features shown on the data quality panel."""


def build_summary_asset(dataset: Dataset) -> dg.AssetsDefinition:
    """``<dataset>/monitoring_summary``: every monitoring partition's metrics over time."""
    keys, name = dataset.keys, dataset.name
    metric = dataset.kind.nannyml_metrics[0]

    @dg.asset(
        key=keys.monitoring_summary,
        deps=[keys.monitoring],
        **dataset.asset_args("monitoring"),
        kinds={"plotly", "polars", "parquet"},
        automation_condition=SUMMARY_AUTOMATION,
        description=(
            f"Every monitoring metric of {name} over time, from all its monitoring partitions: "
            f"estimated and realized {metric}, multivariate and univariate drift, data quality "
            "and served traffic, with NannyML's thresholds, the alert periods (incidents) "
            "shaded and champion changes marked; one summary row per partition in the lake, "
            "the figure as PNG (here) and HTML."
        ),
    )
    def monitoring_summary(
        context: dg.AssetExecutionContext, config: SummaryConfig, lake: Lake
    ) -> dg.MaterializeResult:
        results = read_results(lake, dataset)
        table = summary_table(results, metric)
        lake.write(keys.monitoring_summary, None, table)
        folder = settings.current().monitoring_path / name / "summary"
        if results.is_empty():
            context.log.info(f"{name}: {NO_PARTITIONS}")
            return dg.MaterializeResult(
                metadata={
                    "status": f"{NO_PARTITIONS}: materialize {keys.monitoring.to_user_string()} "
                    "for a partition first",
                    "dagster/row_count": 0,
                    "partitions_monitored": 0,
                }
            )
        incidents = find_incidents(results)
        fig = summary_figure(
            results,
            incidents,
            metric=metric,
            quality_features=config.quality_features,
        )
        files = write_figure(fig, folder, png=config.png)
        partitions = table.get_column("partition").to_list()
        ongoing = [i for i in incidents if i.ongoing]
        context.log.info(
            f"{name}: {len(partitions)} partitions summarized, {len(incidents)} incidents "
            f"({len(ongoing)} ongoing): {files.html}"
        )
        metadata: dict[str, Any] = {
            "status": f"{len(partitions)} partitions monitored",
            "dagster/row_count": table.height,
            "partitions_monitored": len(partitions),
            "first_partition": partitions[0],
            "last_partition": partitions[-1],
            "champion_versions": ", ".join(
                dict.fromkeys(table.get_column("champion_version").drop_nulls().to_list())
            ),
            "incidents": dg.MetadataValue.md(incidents_markdown(incidents)),
            "incident_count": len(incidents),
            "ongoing_incidents": len(ongoing),
            "report": dg.MetadataValue.path(str(files.html)),
            "lake_path": dg.MetadataValue.path(str(lake.path(keys.monitoring_summary, None))),
        }
        if files.png is not None:
            metadata["summary"] = dg.MetadataValue.md(png_markdown(files.png))
        return dg.MaterializeResult(metadata=metadata)

    return monitoring_summary
