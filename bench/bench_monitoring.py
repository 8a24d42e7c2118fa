"""Monitoring cost: the platform's suite against NannyML called directly, side by side.

A CatBoost champion is trained on the first half of the car-loan demo's time range with the
platform's training core (its test window, 25k rows, is the reference: five reference chunks of
5,000 rows). The demo rows are resampled to ``--rows`` rows (``demo_frames(rows=N)``) and scored
by the champion; the scored rows are monitored as ONE partition. Each case runs in a fresh
process (the script re-runs itself with ``--case``) so peak RSS (``ru_maxrss``) is the case's own:

* ``import``: ``import nannyml`` alone (reported separately; the other cases import it before
  their timer starts);
* ``platform``: ``ml_assets.monitor.suite.run_suite`` from polars frames: conversion to pandas,
  fit on the reference, every calculator on the partition, tidy result rows (the domain
  classifier is off by default above 50k rows, so it is off here);
* ``nannyml``: the floor: the same calculators with the same settings and chunking, fitted and
  run directly on the pandas frames the platform would build (converted before the timer), no
  tidying;
* ``weekly``: in a warm process (one partition already monitored), one new weekly partition of
  the resampled rows: ``run_suite`` (fit + run) and ``FittedSuite.run`` on a suite fitted once per
  champion, with and without the domain classifier (on by default at this size).

    .venv/bin/python bench/bench_monitoring.py --rows 1000000 --out bench/results/monitoring.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

import polars as pl

REPO = Path(__file__).resolve().parents[1]
SUITE_KW = {"reference_chunk_rows": 5_000}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(folder: Path, rows: int) -> dict[str, Any]:
    """Train the champion, score ``rows`` resampled demo rows; write both frames as parquet."""
    from ml_assets.contracts import load_contracts
    from ml_assets.ingest.demo import demo_frames
    from ml_assets.testing import champion

    started = time.perf_counter()
    scored = champion("car_loan", test_share=0.5)

    car_loan = load_contracts()["car_loan"]
    frames = demo_frames(car_loan, rows=rows)
    labels = frames["labels"].select("id", car_loan.target)
    big = frames["entity"].join(labels, on="id", how="left")
    big = big.with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))
    big = scored.score(big)
    big.write_parquet(folder / "analysis.parquet")
    scored.reference.write_parquet(folder / "reference.parquet")
    (folder / "model.json").write_text(
        json.dumps(
            {
                "problem": scored.problem.to_json(),
                "reference_rows": scored.reference.height,
                "rows": big.height,
            }
        )
    )
    return {"prepare_s": time.perf_counter() - started, "reference_rows": scored.reference.height}


def _load(folder: Path) -> tuple[Any, pl.DataFrame, pl.DataFrame]:
    from ml_assets.monitor.suite import MonitoredModel
    from ml_assets.train.core import Problem

    meta = json.loads((folder / "model.json").read_text())
    model = MonitoredModel.from_problem(Problem.from_json(meta["problem"]))
    return (
        model,
        pl.read_parquet(folder / "reference.parquet"),
        pl.read_parquet(folder / "analysis.parquet"),
    )


def case_import(folder: Path) -> dict[str, Any]:
    started = time.perf_counter()
    import nannyml  # noqa: F401

    return {"seconds": time.perf_counter() - started, "rss_mb": _rss_mb()}


def case_platform(folder: Path) -> dict[str, Any]:
    import nannyml  # noqa: F401

    from ml_assets.monitor.suite import run_suite

    model, reference, analysis = _load(folder)
    started = time.perf_counter()
    results = run_suite(
        model.kind,
        reference,
        analysis,
        features=model.features,
        categorical=model.categorical,
        classes=model.classes,
        target=model.target,
        timestamp=model.timestamp,
        dataset="car_loan",
        partition="all",
        champion_version="1",
        chunk_start=None,
        chunk_end=None,
        strict=True,
        **SUITE_KW,
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rss_mb": _rss_mb(),
        "result_rows": results.height,
        "alerts": int(results["alert"].fill_null(False).sum()),
    }


def case_nannyml(folder: Path) -> dict[str, Any]:
    """The same calculators, configured as the suite configures them, on pandas frames."""
    import warnings

    import nannyml as nml

    from ml_assets.monitor.chunking import ANALYSIS, REFERENCE, partition_chunker
    from ml_assets.monitor.suite import CATEGORICAL_METHODS, CONTINUOUS_METHODS, to_nannyml_frame

    model, reference, analysis = _load(folder)
    ref, _ = to_nannyml_frame(reference, model)
    ana, _ = to_nannyml_frame(analysis, model)
    del reference, analysis
    n = len(ref) // SUITE_KW["reference_chunk_rows"]
    ts = model.timestamp
    common = {"timestamp_column_name": ts}
    perf = {
        "y_pred_proba": model.proba,
        "y_pred": "prediction",
        "y_true": model.target,
        "problem_type": model.kind.nannyml_problem_type,
        "metrics": list(model.kind.nannyml_metrics),
    }
    makers = [
        lambda ch: nml.UnivariateDriftCalculator(
            column_names=model.features,
            treat_as_categorical=model.categorical,
            treat_as_numerical=model.continuous,
            continuous_methods=list(CONTINUOUS_METHODS),
            categorical_methods=list(CATEGORICAL_METHODS),
            chunker=ch,
            **common,
        ),
        lambda ch: nml.DataReconstructionDriftCalculator(
            column_names=model.features, chunker=ch, **common
        ),
        lambda ch: nml.CBPE(chunker=ch, **perf, **common),
        lambda ch: nml.PerformanceCalculator(chunker=ch, **perf, **common),
        lambda ch: nml.MissingValuesCalculator(column_names=model.features, chunker=ch, **common),
        lambda ch: nml.UnseenValuesCalculator(column_names=model.categorical, chunker=ch, **common),
    ]
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for make in makers:
            chunker = partition_chunker(n, ts)
            calc = make(chunker)
            calc.fit(ref)
            chunker.phase = ANALYSIS
            (calc.estimate if hasattr(calc, "estimate") else calc.calculate)(ana)
            chunker.phase = REFERENCE
    return {"seconds": time.perf_counter() - started, "rss_mb": _rss_mb()}


def case_weekly(folder: Path) -> dict[str, Any]:
    import nannyml  # noqa: F401

    from ml_assets.monitor.suite import fit_suite, run_suite

    model, reference, analysis = _load(folder)
    weeks = analysis.with_columns(pl.col("timestamp").dt.truncate("1w").alias("week"))
    counts = weeks.group_by("week").len().sort("week")
    week_starts = counts["week"].to_list()
    parts = [weeks.filter(pl.col("week") == w).drop("week") for w in week_starts[-3:-1]]
    # A weekly partition of about 1-2k rows: the resampled weeks hold ~10x that; take a slice.
    parts = [p.head(1_500) for p in parts]
    kw = {
        "dataset": "car_loan",
        "champion_version": "1",
        "chunk_end": None,
    }

    def full(part: pl.DataFrame, start: dt.datetime, dc: bool | None) -> float:
        t0 = time.perf_counter()
        run_suite(
            model.kind,
            reference,
            part,
            features=model.features,
            categorical=model.categorical,
            classes=model.classes,
            target=model.target,
            timestamp=model.timestamp,
            partition=str(start.date()),
            chunk_start=start,
            domain_classifier=dc,
            strict=True,
            **SUITE_KW,
            **kw,
        )
        return time.perf_counter() - t0

    full(parts[0], week_starts[-3], False)  # warm-up: imports, first-call costs
    out: dict[str, Any] = {"partition_rows": parts[1].height}
    out["run_suite_s"] = full(parts[1], week_starts[-2], False)
    out["run_suite_dc_s"] = full(parts[1], week_starts[-2], True)
    t0 = time.perf_counter()
    suite = fit_suite(model, reference, strict=True, **SUITE_KW)
    out["fit_s"] = time.perf_counter() - t0
    suite.run(parts[0], partition="w0", chunk_start=week_starts[-3], **kw, domain_classifier=True)
    t0 = time.perf_counter()
    suite.run(parts[1], partition="w1", chunk_start=week_starts[-2], **kw, domain_classifier=False)
    out["fitted_run_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    suite.run(parts[1], partition="w1", chunk_start=week_starts[-2], **kw, domain_classifier=True)
    out["fitted_run_dc_s"] = time.perf_counter() - t0
    out["rss_mb"] = _rss_mb()
    return out


CASES = {
    "prepare": prepare,
    "import": case_import,
    "platform": case_platform,
    "nannyml": case_nannyml,
    "weekly": case_weekly,
}


def run_case(name: str, folder: Path, rows: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--case", name, "--workdir", str(folder), "--rows", str(rows)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"case {name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", default="bench/results/monitoring.md")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--case", choices=sorted(CASES), default=None)
    args = parser.parse_args()
    if args.case:
        extra = (args.rows,) if args.case == "prepare" else ()
        print(json.dumps(CASES[args.case](Path(args.workdir), *extra)))
        return

    command = " ".join(
        [
            ".venv/bin/python",
            "bench/bench_monitoring.py",
            "--rows",
            str(args.rows),
            "--out",
            args.out,
        ]
    )
    print(command, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.workdir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        load = os.getloadavg()[0]
        # Every step in a child process, the data preparation too: Linux keeps a process's peak
        # RSS across fork + exec, so a child of a big parent would report the parent's peak.
        results = {name: run_case(name, folder, args.rows) for name in CASES}
    prep = results["prepare"]
    imp, plat, direct, weekly = (results[k] for k in ("import", "platform", "nannyml", "weekly"))
    ratio = plat["seconds"] / direct["seconds"]

    def ok(flag: bool) -> str:
        return "yes" if flag else "**no**"

    lines = [
        f"# Monitoring benchmark ({dt.date.today()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {load:.2f} at start)",
        "",
        f"`{command}`",
        "",
        f"Champion: CatBoost on the first half of the car-loan demo; reference = its test window "
        f"({prep['reference_rows']:,} rows, 5 reference chunks of 5,000). Partition: "
        f"{args.rows:,} resampled demo rows scored by the champion, monitored as one chunk. "
        "Each case in a fresh process; peak RSS is `ru_maxrss` of that process (imports, the "
        "frames read from parquet and everything after). Calculators: univariate drift "
        "(JS + KS / chi2 + JS), reconstruction error, CBPE (roc_auc, f1), realized performance, "
        "missing and unseen values; the domain classifier is off above 50k rows.",
        "",
        "| case | wall s | peak RSS MB | target | met |",
        "|---|---:|---:|---|---|",
        f"| `import nannyml` (alone) | {imp['seconds']:.2f} | {imp['rss_mb']:,.0f} | | |",
        f"| platform `run_suite`, {args.rows:,} rows (polars in, tidy rows out) | "
        f"{plat['seconds']:.2f} | {plat['rss_mb']:,.0f} | <= 30 s, <= 3 GB | "
        f"{ok(plat['seconds'] <= 30 and plat['rss_mb'] <= 3072)} |",
        f"| NannyML direct, same calculators on the pandas frames | {direct['seconds']:.2f} | "
        f"{direct['rss_mb']:,.0f} | floor | |",
        f"| platform / NannyML direct | {ratio:.2f}x | | <= 1.3x | {ok(ratio <= 1.3)} |",
        "",
        f"One new weekly partition ({weekly['partition_rows']:,} rows) in a warm process "
        f"(peak RSS {weekly['rss_mb']:,.0f} MB):",
        "",
        "| path | wall s | target <= 3 s |",
        "|---|---:|---|",
        f"| `run_suite` (fit on the reference + run), no domain classifier | "
        f"{weekly['run_suite_s']:.2f} | {ok(weekly['run_suite_s'] <= 3)} |",
        f"| `run_suite` with the domain classifier (the default at this size) | "
        f"{weekly['run_suite_dc_s']:.2f} | {ok(weekly['run_suite_dc_s'] <= 3)} |",
        f"| `fit_suite` once per champion | {weekly['fit_s']:.2f} | |",
        f"| `FittedSuite.run`, no domain classifier | {weekly['fitted_run_s']:.2f} | "
        f"{ok(weekly['fitted_run_s'] <= 3)} |",
        f"| `FittedSuite.run` with the domain classifier | {weekly['fitted_run_dc_s']:.2f} | "
        f"{ok(weekly['fitted_run_dc_s'] <= 3)} |",
        "",
        f"The full run gave {plat['result_rows']} result rows, {plat['alerts']} of them alerts "
        "(the resampled rows mix both halves of the demo, so drift alerts are expected). "
        f"Preparing the data (training + scoring, not timed above) took {prep['prepare_s']:.1f} s.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
