"""LightGBM threads of NannyML's domain classifier on one weekly partition, side by side.

The champion of the first half of the car-loan demo; its test window is the reference; one
week of the second half (2019-04-01, about 1,150 rows) is monitored with the domain classifier,
alternating n_jobs=-1 (NannyML's default) and n_jobs=1 (the suite's), ``--rounds`` times each.

    .venv/bin/python bench/bench_domain_threads.py --rounds 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

import polars as pl

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")


def main() -> None:
    from ml_assets.monitor import suite
    from ml_assets.testing import champion

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    scored = champion("car_loan", iterations=60)
    ts = scored.model.timestamp
    week = dt.datetime(2019, 4, 1, tzinfo=dt.UTC)
    end = week + dt.timedelta(days=7)
    part = scored.analysis.filter((pl.col(ts) >= week) & (pl.col(ts) < end))
    times: dict[int, list[float]] = {-1: [], 1: []}
    for _ in range(args.rounds):
        for jobs in (-1, 1):
            suite.QUIET_LGBM = {"verbosity": -1, "n_jobs": jobs}
            fitted = suite.fit_suite(scored.model, scored.reference)
            t0 = time.perf_counter()
            fitted.run(
                part,
                dataset="car_loan",
                partition="2019-04-01",
                champion_version="1",
                chunk_start=week,
                chunk_end=end,
                domain_classifier=True,
            )
            times[jobs].append(time.perf_counter() - t0)
    load = os.getloadavg()[0]
    print(f"rows {part.height}, reference {scored.reference.height}, load {load:.1f}")
    print("| n_jobs | runs (s) | median s |\n|---|---|---:|")
    for jobs, runs in times.items():
        runs_text = ", ".join(f"{r:.2f}" for r in runs)
        print(f"| {jobs} | {runs_text} | {sorted(runs)[len(runs) // 2]:.2f} |")


if __name__ == "__main__":
    main()
