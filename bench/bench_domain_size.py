"""What the domain classifier adds to one monitoring partition, by partition size.

The champion of the first half of the car-loan demo; its test window is the reference; the
second half's rows resampled (with replacement, seeded) to each size and monitored as one
partition with the whole suite, with and without NannyML's domain classifier (LightGBM, 5-fold
CV, one thread: the suite's ``QUIET_LGBM``), alternating, ``--rounds`` times each. The suite
runs the classifier by default on partitions of at most ``DOMAIN_CLASSIFIER_MAX_ROWS`` rows.

    .venv/bin/python bench/bench_domain_size.py --sizes 1156 10000 50000 --rounds 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")


def main() -> None:
    from ml_assets.monitor import suite
    from ml_assets.testing import champion

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1156, 10_000, 50_000])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    scored = champion("car_loan", iterations=60)
    fitted = suite.fit_suite(scored.model, scored.reference)
    start = dt.datetime(2019, 4, 1, tzinfo=dt.UTC)
    rows: list[tuple[int, float, float]] = []
    for size in args.sizes:
        part = scored.analysis.sample(size, with_replacement=True, seed=7)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for with_dc in (False, True):
                t0 = time.perf_counter()
                fitted.run(
                    part,
                    dataset="car_loan",
                    partition="bench",
                    champion_version="1",
                    chunk_start=start,
                    chunk_end=start + dt.timedelta(days=7),
                    domain_classifier=with_dc,
                )
                times[with_dc].append(time.perf_counter() - t0)
        rows.append((size, statistics.median(times[False]), statistics.median(times[True])))
    print(f"reference {scored.reference.height} rows, load {os.getloadavg()[0]:.1f}")
    print("| partition rows | suite without (s) | with the domain classifier (s) | added (s) |")
    print("|---:|---:|---:|---:|")
    for size, off, on in rows:
        print(f"| {size:,} | {off:.2f} | {on:.2f} | {on - off:.2f} |")


if __name__ == "__main__":
    main()
