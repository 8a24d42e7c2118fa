"""NannyML's own plots of a suite run, as PNG and HTML files, rendered offline.

``result.plot()`` is a plotly figure; PNGs go through the locked kaleido 0.2.1 (it ships its own
renderer: no browser, no network). HTML reports reference ONE local ``plotly.min.js`` beside
them (copied into the folder once) instead of embedding 4.5 MB of plotly.js in each report or
fetching it from a CDN the viewer may not reach.

Calculators that draw a panel group per column (univariate drift, missing and unseen values:
NannyML's per-column results) are drawn column by column, from the result filtered to that
column. NannyML's own figure of many columns is quadratic in its subplots (each period separator
is a plotly ``add_vline`` that re-validates the whole layout): 26 drift subplots took 49 s to
build where the 13 one-column figures take about a second in all. Their columns are ranked by
relevance (:func:`rank_columns`: alerting first, then the highest value relative to its
threshold), and

* the HTML report is ONE page per calculator with every column's figure in that order, after
  an index of the columns;
* the PNG (shown in the Dagster UI) stacks only the :data:`PNG_COLUMNS` most relevant ones, its
  title saying how many more the HTML report has (:attr:`PlotFiles.columns` lists them all).

A result with nothing to draw (an unseen-values result of a model with no categorical input)
gives no file.
"""

from __future__ import annotations

import html as html_lib
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_assets.monitor.schema import Calculator

log = logging.getLogger(__name__)

PLOTLY_JS = "plotly.min.js"
PNG_COLUMNS = 3
"""Columns a per-column calculator's PNG shows (the most relevant; the HTML has them all)."""
PANEL_HEIGHT = 300
"""Pixels per subplot of a PNG (and of a column's figure in an HTML report, plus its title)."""


@dataclass(frozen=True)
class ColumnRank:
    """How much one column of a per-column result asks to be looked at, over its analysis chunks."""

    column: str
    alert: bool
    """Whether any of its metrics (methods) alerts in any analysis chunk."""
    closeness: float | None
    """The highest value relative to the threshold it is nearest to crossing, over its metrics
    and analysis chunks: ``value / upper`` or ``lower / value`` (1 = at the threshold, above 1 =
    beyond it); None without a value or a threshold."""


@dataclass(frozen=True)
class PlotFiles:
    """The files of one calculator's plot.

    ``columns``: for a per-column calculator, every column of the HTML report, most relevant
    first (:func:`rank_columns`); the first ``png_columns`` of them are in the PNG (0 when no
    PNG was written). Empty and 0 for the other calculators (and for files found on disk)."""

    png: Path
    html: Path
    columns: tuple[str, ...] = ()
    png_columns: int = 0

    @property
    def more_columns(self) -> int:
        """Columns the HTML report has beyond those of the PNG."""
        return len(self.columns) - self.png_columns


def figure(calculator: Calculator, result: Any) -> Any:
    """The plotly figure NannyML draws for a calculator's result (drift for univariate).

    Every key of the result in one figure: costly for a result of many columns (see the
    module's doc); :func:`plot_results` draws those column by column."""
    if calculator is Calculator.UNIVARIATE_DRIFT:
        return result.plot(kind="drift")
    return result.plot()


def per_column(result: Any) -> bool:
    """Whether NannyML draws ``result`` as one panel group per column (univariate drift,
    missing and unseen values), rather than per metric."""
    from nannyml.base import PerColumnResult, PerMetricPerColumnResult

    return isinstance(result, PerColumnResult | PerMetricPerColumnResult)


def column_figure(calculator: Calculator, result: Any, column: str) -> Any:
    """NannyML's figure of one column of a per-column result (cheap: one to a few subplots)."""
    return figure(calculator, result.filter(column_names=[column]))


def rank_columns(result: Any) -> list[ColumnRank]:
    """The columns of a per-column result, most relevant first: alerting ones first, then by
    :attr:`ColumnRank.closeness` (highest first; None last), then by name."""
    analysis = result.filter(period="analysis")
    ranks: dict[str, ColumnRank] = {}
    for key in analysis.keys():  # noqa: SIM118  (a NannyML result, not a dict)
        column = str(key.properties[0])
        alerts = _floats(analysis.alerts(key))
        values = _floats(analysis.values(key))
        lowers = _floats(analysis.lower_thresholds(key), len(values))
        uppers = _floats(analysis.upper_thresholds(key), len(values))
        alert = any(a is not None and a != 0 for a in alerts)
        near = [_closeness(v, lo, up) for v, lo, up in zip(values, lowers, uppers, strict=True)]
        closeness = max((c for c in near if c is not None), default=None)
        seen = ranks.get(column)
        if seen is not None:
            alert = alert or seen.alert
            if seen.closeness is not None:
                closeness = seen.closeness if closeness is None else max(closeness, seen.closeness)
        ranks[column] = ColumnRank(column, alert, closeness)
    return sorted(
        ranks.values(),
        key=lambda r: (not r.alert, r.closeness is None, -(r.closeness or 0.0), r.column),
    )


def _floats(series: Any, length: int | None = None) -> list[float | None]:
    """A NannyML result property (a pandas Series, or None when the result lacks it) as floats,
    None where missing."""
    if series is None:
        return [None] * (length or 0)
    out: list[float | None] = []
    for x in series.tolist():
        try:
            f = float(x)
        except (TypeError, ValueError):
            f = math.nan
        out.append(f if math.isfinite(f) else None)
    return out


def _closeness(value: float | None, lower: float | None, upper: float | None) -> float | None:
    if value is None or (lower is None and upper is None):
        return None
    sides = []
    if upper is not None:
        sides.append(value / upper if upper > 0 else (math.inf if value > upper else 0.0))
    if lower is not None:
        if lower > 0:
            sides.append(lower / value if value > 0 else math.inf)
        else:
            sides.append(math.inf if value < lower else 0.0)
    return max(sides)


# --- stacking figures (the PNG) ---------------------------------------------------------------

_AXIS_REF = re.compile(r"^([xy])(\d*)( domain)?$")
_AXIS_KEY = re.compile(r"^([xy])axis(\d*)$")
STACK_GAP_PX = 80
"""Pixels between two panels of a stacked figure (room for the lower one's subplot title)."""


def stack_figures(figures: Sequence[Any], *, title: str, height: int | None = None) -> Any:
    """NannyML figures (each a column of subplots) stacked into one figure, in order.

    Works on the figures' JSON: axes are renumbered, every panel gets the same height, subplot
    titles (paper-referenced annotations at a panel's top) follow their panel, period
    separators (shapes) and labels follow their axes, and each legend entry is shown once. The
    layout of the first figure (template, colours, legend) is kept; ``title`` replaces its
    title. Building it validates the figure once, instead of once per added shape."""
    import plotly.graph_objects as go

    parts = [f.to_plotly_json() for f in figures]
    panels = sum(len(_y_axes(p["layout"])) for p in parts)
    height = height or max(500, PANEL_HEIGHT * panels)
    gap = min(0.5 / max(panels, 1), STACK_GAP_PX / height)
    size = (1.0 - gap * (panels - 1)) / max(panels, 1)

    layout = {
        k: v
        for k, v in parts[0]["layout"].items()
        if not _AXIS_KEY.match(k) and k not in ("annotations", "shapes", "title", "height")
    }
    layout.update(title={"text": title}, height=height, annotations=[], shapes=[])
    data: list[dict[str, Any]] = []
    shown: set[tuple[Any, Any]] = set()
    offset = row = 0
    for part in parts:
        lay = part["layout"]
        ys = _y_axes(lay)
        top = {}  # old top of a y axis's domain -> its new top
        new_domain = {}
        for n in sorted(ys, key=lambda n: -ys[n][1]):
            hi = 1.0 - row * (size + gap)
            new_domain[n] = [max(0.0, hi - size), hi]
            top[ys[n][1]] = hi
            row += 1
        old_span = (min(d[0] for d in ys.values()), max(d[1] for d in ys.values()))
        new_span = (min(d[0] for d in new_domain.values()), max(d[1] for d in new_domain.values()))
        place = _Placement(top, old_span, new_span)
        numbers = set(ys)
        for key, axis in lay.items():
            m = _AXIS_KEY.match(key)
            if not m:
                continue
            n = int(m.group(2) or 1)
            numbers.add(n)
            axis = dict(axis)
            for ref in ("anchor", "matches", "overlaying", "scaleanchor"):
                if isinstance(axis.get(ref), str) and axis[ref] != "free":
                    axis[ref] = _renumber(axis[ref], offset)
            if m.group(1) == "y" and n in new_domain:
                axis["domain"] = new_domain[n]
            layout[f"{m.group(1)}axis{n + offset}"] = axis
        for trace in part["data"]:
            trace = dict(trace)
            trace["xaxis"] = _renumber(trace.get("xaxis", "x"), offset)
            trace["yaxis"] = _renumber(trace.get("yaxis", "y"), offset)
            entry = (trace.get("legendgroup"), trace.get("name"))
            if trace.get("showlegend"):
                trace["showlegend"] = entry not in shown
                shown.add(entry)
            data.append(trace)
        for shape in lay.get("shapes", ()):
            layout["shapes"].append(_moved(shape, offset, place))
        for note in lay.get("annotations", ()):
            layout["annotations"].append(_moved(note, offset, place))
        offset += max(numbers, default=0)
    return go.Figure(data=data, layout=layout)


def _y_axes(layout: Mapping[str, Any]) -> dict[int, tuple[float, float]]:
    """The y axes of a figure's layout: number -> domain."""
    out = {}
    for key, axis in layout.items():
        m = _AXIS_KEY.match(key)
        if m and m.group(1) == "y":
            lo, hi = axis.get("domain", (0.0, 1.0))
            out[int(m.group(2) or 1)] = (float(lo), float(hi))
    return out


def _renumber(ref: str, offset: int) -> str:
    """An axis reference (``x``, ``y3``, ``x2 domain``) moved ``offset`` axes on; others as is."""
    m = _AXIS_REF.match(ref)
    if not m:
        return ref
    n = int(m.group(2) or 1) + offset
    return f"{m.group(1)}{'' if n == 1 else n}{m.group(3) or ''}"


@dataclass(frozen=True)
class _Placement:
    """Where one figure's panels went in a stack (paper coordinates)."""

    top: Mapping[float, float]
    """The old top of each of its panels -> the new one."""
    old: tuple[float, float]
    """The span of its panels, bottom to top, before..."""
    new: tuple[float, float]
    """... and after."""

    def y(self, y: float) -> float:
        """A paper ``y``: a panel's top goes to the panel's new top (subplot titles), anything
        else scales with the figure's span."""
        for old, new in self.top.items():
            if abs(old - y) < 1e-6:
                return new
        (a, b), (c, d) = self.old, self.new
        return c + (y - a) * (d - c) / (b - a) if b > a else y


def _moved(item: Mapping[str, Any], offset: int, place: _Placement) -> dict[str, Any]:
    """A shape or annotation of a stacked figure: axis references renumbered, paper ``y``s
    placed (:meth:`_Placement.y`)."""
    out = dict(item)
    for ref in ("xref", "yref"):
        if isinstance(out.get(ref), str):
            out[ref] = _renumber(out[ref], offset)
    if out.get("yref") == "paper":
        for key in ("y", "y0", "y1"):
            if isinstance(out.get(key), int | float):
                out[key] = place.y(out[key])
    return out


# --- writing ----------------------------------------------------------------------------------


def write_report(
    figures: Sequence[Any],
    path: Path,
    *,
    title: str,
    intro: str = "",
    anchors: Sequence[str] | None = None,
) -> Path:
    """ONE HTML page of ``figures`` in order, loading the ``plotly.min.js`` beside it (written
    into the folder once, as plotly's ``include_plotlyjs="directory"`` does).

    ``intro`` is HTML put under the title; ``anchors`` the element ids of the figures (to link
    to them from the intro)."""
    from plotly.offline import get_plotlyjs

    bundle = path.parent / PLOTLY_JS
    if not bundle.exists():
        bundle.write_text(get_plotlyjs(), encoding="utf-8")
    divs = []
    for i, fig in enumerate(figures):
        div = fig.to_html(
            include_plotlyjs="directory" if i == 0 else False,
            full_html=False,
            div_id=anchors[i] if anchors else None,
        )
        divs.append(div)
    page = (
        '<!DOCTYPE html>\n<html>\n<head><meta charset="utf-8" />'
        f"<title>{html_lib.escape(title)}</title>\n"
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{padding:2px 10px;text-align:left}tr.alert td{color:#b00020;font-weight:bold}"
        "</style></head>\n<body>\n"
        f"<h1>{html_lib.escape(title)}</h1>\n{intro}\n" + "\n".join(divs) + "\n</body>\n</html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path


PNG_TIMEOUT_SECONDS = 120.0
"""Longest a PNG may take: kaleido 0.2.1 can hang on a starved machine, and a plot must never
hold up a monitoring run (the HTML report is written regardless)."""


def write_png(fig: Any, path: Path, *, width: int, height: int) -> bool:
    """``fig`` as a PNG through kaleido, given at most :data:`PNG_TIMEOUT_SECONDS`.

    On a timeout (or an error) the PNG is left out, logged, and kaleido's renderer is restarted
    on the next call; returns whether the file was written."""
    import threading

    failure: list[BaseException] = []

    def render() -> None:
        try:
            fig.write_image(path, format="png", width=width, height=height)
        except BaseException as exc:  # reported below, in the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=render, name="kaleido-png", daemon=True)
    worker.start()
    worker.join(PNG_TIMEOUT_SECONDS)
    if worker.is_alive() or failure:
        why = failure[0] if failure else f"no answer from kaleido in {PNG_TIMEOUT_SECONDS:.0f} s"
        log.error("PNG %s not written: %s (the HTML report is)", path, why)
        try:
            import plotly.io as pio

            pio.kaleido.scope._shutdown_kaleido()  # a fresh renderer next time
        except Exception:  # best effort: the PNG is already given up
            pass
        return False
    return True


def plot_results(
    results: Mapping[Calculator, Any],
    folder: str | Path,
    *,
    prefix: str = "",
    png: bool = True,
    width: int = 1200,
    height: int | None = None,
    png_columns: int = PNG_COLUMNS,
) -> dict[Calculator, PlotFiles]:
    """Write ``<prefix><calculator>.png`` and ``.html`` per NannyML result into ``folder``.

    ``results`` is :attr:`~ml_assets.monitor.suite.FittedSuite.results` after a run. The folder
    gets one ``plotly.min.js`` that every report loads by a relative path, so the folder can be
    moved or served as a whole. ``png=False`` skips kaleido (0.1-2 s per figure); ``height``
    fixes the PNGs' height (default :data:`PANEL_HEIGHT` per subplot). A per-column result
    (:func:`per_column`) is drawn column by column: its report has every column, most relevant
    first, its PNG the ``png_columns`` most relevant. A result with nothing to draw is left out
    of the returned files (and gets none).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[Calculator, PlotFiles] = {}
    for calculator, result in results.items():
        if not result.keys():
            log.debug("%s: nothing to plot (no column, no metric)", calculator.value)
            continue
        name = f"{prefix}{calculator.value}"
        html, image = out / f"{name}.html", out / f"{name}.png"
        if per_column(result):
            files[calculator] = _plot_columns(
                calculator, result, html, image, png, width, height, png_columns
            )
        else:
            fig = figure(calculator, result)
            write_report([fig], html, title=_title(fig, calculator))
            if png:
                write_png(fig, image, width=width, height=height or _height(fig))
            files[calculator] = PlotFiles(image, html)
        log.debug("plotted %s to %s", calculator.value, html)
    return files


@dataclass(frozen=True)
class ColumnFigures:
    """A per-column result drawn column by column, most relevant column first."""

    title: str
    """NannyML's title of the result's figure."""
    ranks: list[ColumnRank]
    figures: list[Any]
    """One figure per column, in the order of ``ranks``, each titled with its column."""


def column_figures(calculator: Calculator, result: Any) -> ColumnFigures:
    """Every column of a per-column result as its own figure, most relevant first
    (:func:`rank_columns`), each titled with its column, alert and value relative to threshold."""
    ranks = rank_columns(result)
    figs = [column_figure(calculator, result, r.column) for r in ranks]
    title = _title(figs[0], calculator) if figs else calculator.value.replace("_", " ")
    for r, fig in zip(ranks, figs, strict=True):
        fig.update_layout(title_text=_column_title(r), height=100 + PANEL_HEIGHT * _panels(fig))
    return ColumnFigures(title, ranks, figs)


def top_figure(
    columns: ColumnFigures, count: int = PNG_COLUMNS, *, report: str = "", height: int | None = None
) -> Any:
    """The ``count`` most relevant columns' figures stacked into one (the PNG's), its title
    saying how many columns there are in all and, when there are more, that ``report`` has them."""
    shown = min(max(count, 1), len(columns.figures))
    more = len(columns.figures) - shown
    title = (
        f"{columns.title}: the {shown} most relevant of {len(columns.figures)} columns, "
        "alerting first"
    )
    if more:
        title += f"<br>{more} more in the HTML report" + (f", {report}" if report else "")
    return stack_figures(columns.figures[:shown], title=title, height=height)


def _plot_columns(
    calculator: Calculator,
    result: Any,
    html: Path,
    image: Path,
    png: bool,
    width: int,
    height: int | None,
    png_columns: int,
) -> PlotFiles:
    columns = column_figures(calculator, result)
    anchors = [f"column-{i}" for i in range(len(columns.ranks))]
    intro = _index(columns.ranks, anchors)
    write_report(columns.figures, html, title=columns.title, intro=intro, anchors=anchors)
    shown = 0
    if png:
        fig = top_figure(columns, png_columns, report=html.name, height=height)
        if write_png(fig, image, width=width, height=int(fig.layout.height)):
            shown = min(max(png_columns, 1), len(columns.ranks))
    return PlotFiles(image, html, tuple(r.column for r in columns.ranks), shown)


def _title(fig: Any, calculator: Calculator) -> str:
    text = fig.layout.title.text
    return str(text).strip() if text else calculator.value.replace("_", " ")


def _column_title(rank: ColumnRank) -> str:
    notes = ["ALERT"] if rank.alert else []
    if rank.closeness is not None and math.isfinite(rank.closeness):
        notes.append(f"{rank.closeness:.2f} of its threshold")
    head = f"<b>{html_lib.escape(rank.column)}</b>"
    return f"{head}: {', '.join(notes)}" if notes else head


def _index(ranks: Iterable[ColumnRank], anchors: Sequence[str]) -> str:
    """The report's index: one row per column, in the order of the figures below."""
    rows = []
    for r, anchor in zip(ranks, anchors, strict=True):
        near = "" if r.closeness is None else f"{r.closeness:.3g}"
        rows.append(
            f'<tr{" class=alert" if r.alert else ""}><td><a href="#{anchor}">'
            f"{html_lib.escape(r.column)}</a></td><td>{'yes' if r.alert else ''}</td>"
            f"<td>{near}</td></tr>"
        )
    return (
        "<p>Columns in order of relevance: alerting first, then by value relative to the "
        "threshold it is nearest to crossing (1 = at the threshold).</p>\n"
        "<table><tr><th>column</th><th>alert</th><th>value / threshold</th></tr>\n"
        + "\n".join(rows)
        + "\n</table>"
    )


def _height(fig: Any) -> int:
    return max(500, PANEL_HEIGHT * _panels(fig))


def _panels(fig: Any) -> int:
    """How many rows of subplots a figure has (NannyML stacks one per column or metric)."""
    layout = fig.layout
    axes = [k for k in layout.to_plotly_json() if k.startswith("yaxis")]
    return max(1, len(axes))
