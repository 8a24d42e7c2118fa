"""NannyML's plots of one monitoring partition: whole figures (before) against column by column
(after, :func:`ml_assets.monitor.plots.plot_results`), side by side in one process.

It reads (never writes) the lake of a demo home, so run the demo once first:

    ML_ASSETS_HOME=/tmp/plots-home .venv/bin/ml-assets demo            # 4-5 min
    .venv/bin/python bench/bench_plots.py --home /tmp/plots-home --rounds 2

The partition (default: the dataset's latest with batch predictions) is monitored as the monitoring
asset does (its batch predictions joined to its features and the labels in the lake, against
the latest reference, domain classifier on, as the demo does where it plots), with the suite
fitted from the dataset's contract and feature spec. Then, per round, on the same NannyML
results, alternating which goes first:

* ``before``: what ``plot_results`` did until this bench was written: NannyML's figure of each
  result whole (``figure``), ``write_html`` with the shared ``plotly.min.js``, and a PNG of 300
  px per subplot. A result with no column (no categorical input: unseen values) is skipped, as
  NannyML's plot of it raises ZeroDivisionError;
* ``after``: ``plot_results`` one calculator at a time (the same work as one call).

kaleido is started before the timers (its first PNG pays the renderer's start-up). Printed and
written (``--out``): per calculator and case, seconds (the figure alone, for ``before``), the
PNG's height in pixels, and the totals with their ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

import polars as pl

REPO = Path(__file__).resolve().parents[1]


def monitored(home: Path, name: str, partition: str | None) -> tuple[str, dict[Any, Any], int]:
    """The partition's key, the suite's NannyML results on it, and its rows."""
    from ml_assets.dataset import load_datasets
    from ml_assets.monitor.frames import analysis_frame, with_labels
    from ml_assets.monitor.suite import MonitoredModel, fit_suite
    from ml_assets.storage import Lake
    from ml_assets.train import core

    dataset = load_datasets(REPO / "ml_assets" / "contracts")[name]
    lake = Lake(base_path=str(home / "lake"))
    keys, spec, contract = dataset.keys, dataset.spec, dataset.contract
    every: list[str] = dataset.partitions.keys()
    scored = [p for p in every if lake.exists(keys.predictions, p)]
    if not scored:
        sys.exit(f"no batch predictions of {name} under {home}: run the demo into it first")

    def rows_of(p: str) -> int:
        return lake.scan(keys.predictions, [p]).select(pl.len()).collect().item()

    pk = partition or next((p for p in reversed(scored) if rows_of(p)), scored[-1])
    refs = sorted(
        lake.path(keys.reference, None).parent.glob("v*.parquet"), key=lambda p: int(p.stem[1:])
    )
    reference = pl.read_parquet(str(refs[-1]))
    problem = core.Problem.from_frame(
        reference, contract.problem_type, contract.target, spec.names, spec.event_time
    )
    batch = lake.scan(keys.predictions, [pk]).collect()
    feats = lake.scan(keys.features, [pk]).collect()
    rows = analysis_frame(problem, spec.key, batch, feats, None)
    labels_key = keys.validated["labels"]
    labelled = [p for p in every if lake.exists(labels_key, p)]
    labels = lake.scan(labels_key, labelled).collect() if labelled else None
    lab = contract.labels
    rows = with_labels(rows, labels, spec.key, lab.key_columns, contract.target, lab.observed_at)
    if rows.height == 0:
        sys.exit(f"{name} {pk} has no predictions to monitor")
    model = MonitoredModel.from_problem(problem, spec.calendar)
    suite = fit_suite(model, reference)
    start, end = dataset.partitions.utc_window(pk)
    suite.run(
        rows,
        dataset=name,
        partition=pk,
        champion_version=refs[-1].stem[1:],
        chunk_start=start,
        chunk_end=end,
        domain_classifier=True,
    )
    return pk, dict(suite.results), rows.height


def before(calculator: Any, result: Any, folder: Path) -> dict[str, float]:
    """The plots as ``plot_results`` drew them before: NannyML's whole figure."""
    from ml_assets.monitor.plots import _panels, figure, write_png

    if not result.keys():
        return {}
    t0 = time.perf_counter()
    fig = figure(calculator, result)
    t1 = time.perf_counter()
    fig.write_html(folder / f"{calculator.value}.html", include_plotlyjs="directory")
    height = max(500, 300 * _panels(fig))
    write_png(fig, folder / f"{calculator.value}.png", width=1200, height=height)
    return {"figure_s": t1 - t0, "total_s": time.perf_counter() - t0, "png_px": height}


def after(calculator: Any, result: Any, folder: Path) -> dict[str, float]:
    from ml_assets.monitor.plots import plot_results

    t0 = time.perf_counter()
    files = plot_results({calculator: result}, folder)
    seconds = time.perf_counter() - t0
    if calculator not in files:
        return {}
    f = files[calculator]
    out = {"total_s": seconds, "png_px": int.from_bytes(f.png.read_bytes()[20:24], "big")}
    return {**out, "columns": len(f.columns)} if f.columns else out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", default=os.environ.get("ML_ASSETS_HOME", ".ml_assets"))
    parser.add_argument("--dataset", default="car_loan")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="bench/results/plots.md")
    args = parser.parse_args()

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("nannyml").setLevel(logging.ERROR)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    pk, results, rows = monitored(Path(args.home), args.dataset, args.partition)
    print(f"{args.dataset} {pk}: {rows} rows monitored in {time.perf_counter() - t0:.1f} s")

    import plotly.graph_objects as go

    from ml_assets.monitor.plots import write_png

    with tempfile.TemporaryDirectory() as tmp:
        write_png(go.Figure(), Path(tmp) / "warm.png", width=100, height=100)  # start kaleido
        runs: dict[str, list[dict[Any, dict[str, float]]]] = {"before": [], "after": []}
        for r in range(args.rounds):
            order = ("before", "after") if r % 2 == 0 else ("after", "before")
            for case in order:
                folder = Path(tmp) / f"{case}-{r}"
                folder.mkdir()
                fn = before if case == "before" else after
                runs[case].append({c: fn(c, res, folder) for c, res in results.items()})
                total = sum(x.get("total_s", 0.0) for x in runs[case][-1].values())
                print(f"round {r + 1} {case}: {total:.2f} s", flush=True)
    load_end = os.getloadavg()[0]
    table = report(runs, args, pk, rows, load, load_end)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)


def report(
    runs: dict[str, list[dict[Any, dict[str, float]]]],
    args: argparse.Namespace,
    pk: str,
    rows: int,
    load: float,
    load_end: float,
) -> str:
    def cell(case: str, calculator: Any, what: str) -> str:
        xs = [run[calculator][what] for run in runs[case] if what in run[calculator]]
        if not xs:
            return "-"
        return ", ".join(f"{x:.2f}" if what.endswith("_s") else f"{int(x)}" for x in xs)

    calculators = list(runs["before"][0])
    lines = [
        f"# NannyML plots of {args.dataset} {pk} ({rows} rows): before / after",
        "",
        f"{dt.date.today()} on {platform.node()} ({os.cpu_count()} cores), load average "
        f"{load:.1f} at the start, {load_end:.1f} at the end; rounds: {args.rounds}, "
        "alternating which case goes first.",
        "",
        f"`.venv/bin/python bench/bench_plots.py --home {args.home} --dataset {args.dataset} "
        f"--partition {pk} --rounds {args.rounds}`",
        "",
        "| calculator | columns | before: figure s | before: all s | after: all s "
        "| PNG px before | PNG px after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in calculators:
        lines.append(
            f"| {c.value} | {cell('after', c, 'columns')} | {cell('before', c, 'figure_s')} "
            f"| {cell('before', c, 'total_s')} | {cell('after', c, 'total_s')} "
            f"| {cell('before', c, 'png_px')} | {cell('after', c, 'png_px')} |"
        )
    totals = {
        case: [sum(x.get("total_s", 0.0) for x in run.values()) for run in runs[case]]
        for case in runs
    }
    ratios = [b / a for b, a in zip(totals["before"], totals["after"], strict=True) if a > 0]
    lines += [
        "",
        "| total | " + " | ".join(f"round {i + 1}" for i in range(len(ratios))) + " |",
        "|---|" + "---:|" * len(ratios),
        "| before s | " + " | ".join(f"{x:.2f}" for x in totals["before"]) + " |",
        "| after s | " + " | ".join(f"{x:.2f}" for x in totals["after"]) + " |",
        "| before / after | " + " | ".join(f"{x:.1f}x" for x in ratios) + " |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
