"""NannyML's own plots of a suite run, as PNG and HTML files, rendered offline.

``result.plot()`` is a plotly figure; PNGs go through the locked kaleido 0.2.1 (it ships its own
renderer: no browser, no network). HTML reports reference ONE local ``plotly.min.js`` beside
them (plotly's ``include_plotlyjs="directory"`` copies it into the folder once) instead of
embedding 4.5 MB of plotly.js in each report or fetching it from a CDN the viewer may not reach.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_assets.monitor.schema import Calculator

log = logging.getLogger(__name__)

PLOTLY_JS = "plotly.min.js"


@dataclass(frozen=True)
class PlotFiles:
    """The files of one calculator's plot."""

    png: Path
    html: Path


def figure(calculator: Calculator, result: Any) -> Any:
    """The plotly figure NannyML draws for a calculator's result (drift for univariate)."""
    if calculator is Calculator.UNIVARIATE_DRIFT:
        return result.plot(kind="drift")
    return result.plot()


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
) -> dict[Calculator, PlotFiles]:
    """Write ``<prefix><calculator>.png`` and ``.html`` per NannyML result into ``folder``.

    ``results`` is :attr:`~ml_assets.monitor.suite.FittedSuite.results` after a run. The folder
    gets one ``plotly.min.js`` that every report loads by a relative path, so the folder can be
    moved or served as a whole. ``png=False`` skips kaleido (about 2 s per figure).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[Calculator, PlotFiles] = {}
    for calculator, result in results.items():
        fig = figure(calculator, result)
        name = f"{prefix}{calculator.value}"
        html = out / f"{name}.html"
        fig.write_html(html, include_plotlyjs="directory", full_html=True)
        image = out / f"{name}.png"
        if png:
            fig_height = height or max(500, 300 * _panels(fig))
            write_png(fig, image, width=width, height=fig_height)
        files[calculator] = PlotFiles(image, html)
        log.debug("plotted %s to %s", calculator.value, html)
    return files


def _panels(fig: Any) -> int:
    """How many rows of subplots a figure has (NannyML stacks one per column or metric)."""
    layout = fig.layout
    axes = [k for k in layout.to_plotly_json() if k.startswith("yaxis")]
    return max(1, len(axes))
