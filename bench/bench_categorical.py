"""CatBoost fit time and held-out metric, old vs new training defaults, side by side in one run.

Issue 10 item 9: a 140k-row dataset of 15 categorical columns took minutes to fit with the
defaults of before (CatBoost's own CTR settings: greedy categorical feature combinations up to
four features deep, four target statistics per feature and per combination). This benchmark
fits the synthetic dataset of that shape (``bench/categorical_data.py``) and the three bundled
demo datasets (car_loan, car_price, credit_card, their training sets built with the platform's
own feature code), one fit at a time, three times each: with the old defaults, with
:class:`~ml_assets.train.config.TrainConfig`'s current ones, and with the new CTR settings but
the learning rate the rule did not pick (0.08 where it picked 0.2, and the reverse). It prints
a table: wall and CPU seconds of the fit (time split + CatBoost with early stopping), boosting
rounds run, best iteration and the problem kind's primary test metric.

    .venv/bin/python bench/bench_categorical.py --out bench/results/categorical.md

``--datasets`` picks a subset (``synthetic car_loan car_price credit_card``), ``--rows`` the
synthetic dataset's size (140,000 by default: the old defaults take minutes there).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.categorical_data import EVENT_TIME, TARGET, categorical_frame, features
from ml_assets.contracts import ProblemType, load_contracts
from ml_assets.train import core
from ml_assets.train.config import CATEGORICAL_HEAVY, OLD_CATEGORICAL_DEFAULTS, TrainConfig

DATASETS = ("synthetic", "car_loan", "car_price", "credit_card")


def bundled_frame(name: str) -> tuple[pl.DataFrame, core.Problem]:
    """A bundled contract's demo training set (as ``bench_training.training_frame`` builds
    car_loan's), cut at the end of its labels, and its problem."""
    from ml_assets.features import build_training_set, compute_features, load_feature_spec
    from ml_assets.features.compute import entity_events, label_events
    from ml_assets.features.spec import Source
    from ml_assets.ingest.demo import demo_frames

    contract = load_contracts()[name]
    spec = load_feature_spec(contract)
    frames = demo_frames(contract)
    entity = frames["entity"].with_columns(pl.col(spec.event_time).dt.replace_time_zone("UTC"))
    labels = frames["labels"].with_columns(
        pl.col(contract.labels.observed_at).dt.replace_time_zone("UTC")
    )
    owners = entity.select(*spec.key, *spec.group_columns)
    events = {
        Source.ENTITY: entity_events(spec, entity).collect(),
        Source.LABELS: label_events(spec, labels, owners).collect(),
    }
    feats = compute_features(spec, entity, events)
    cutoff = labels.get_column(contract.labels.observed_at).max() + dt.timedelta(seconds=1)
    window = cutoff - entity.get_column(spec.event_time).min()
    frame = build_training_set(spec, feats, labels, cutoff, window)
    problem = core.Problem.from_frame(
        frame, contract.problem_type, contract.target, spec.names, spec.event_time
    )
    return frame, problem


def synthetic_frame(rows: int) -> tuple[pl.DataFrame, core.Problem]:
    """The categorical-heavy synthetic dataset and its (binary) problem."""
    frame = categorical_frame(rows)
    problem = core.Problem.from_frame(frame, ProblemType.BINARY, TARGET, features(), EVENT_TIME)
    return frame, problem


def fit_once(frame: pl.DataFrame, problem: core.Problem, config: TrainConfig) -> dict[str, Any]:
    """One timed fit (split + CatBoost) and its test evaluation."""
    t0, c0 = time.perf_counter(), time.process_time()
    split = core.time_split(frame, problem.event_time, config.valid_share, config.test_share)
    model = core.fit(split, problem, config)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    evaluation = core.evaluate(model, split, problem)
    rounds = len(next(iter(model.get_evals_result()["validation"].values())))
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "rounds": rounds,
        "best_iteration": model.get_best_iteration(),
        "metric": evaluation.metrics[problem.kind.primary_metric],
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--rows", type=int, default=140_000)
    parser.add_argument("--out", default="bench/results/categorical.md")
    args = parser.parse_args()
    old, new = TrainConfig(**OLD_CATEGORICAL_DEFAULTS), TrainConfig()
    argv = ["--datasets", *args.datasets, "--rows", str(args.rows), "--out", args.out]
    command = " ".join([".venv/bin/python", "bench/bench_categorical.py", *argv])
    lines = [
        f"# Categorical-heavy training, old vs new defaults ({dt.date.today()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load {os.getloadavg()[0]:.1f} at start)",
        "",
        f"`{command}`",
        "",
        f"Old: `TrainConfig(**{OLD_CATEGORICAL_DEFAULTS})`; new: `TrainConfig()` (learning rate "
        f"0.2 from {CATEGORICAL_HEAVY} categoricals on, else 0.08).",
        "",
        "| dataset | rows | categoricals | defaults | fit wall s | fit CPU s | rounds | best iteration "
        "| test metric | load (1 min) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    summary = []
    for name in args.datasets:
        frame, problem = synthetic_frame(args.rows) if name == "synthetic" else bundled_frame(name)
        # The new CTR settings with the other learning rate than the rule picks: the rule's
        # case, both ways (CATEGORICAL_HEAVY in ml_assets/train/config.py).
        heavy = len(problem.categorical) >= CATEGORICAL_HEAVY
        other = TrainConfig(learning_rate=0.08 if heavy else 0.2)
        other_label = f"new, learning rate {other.learning_rate} (not the rule's)"
        results = {}
        for label, config in (("old", old), ("new", new), (other_label, other)):
            r = results[label] = fit_once(frame, problem, config)
            lines.append(
                f"| {name} | {frame.height:,} | {len(problem.categorical)} | {label} | "
                f"{r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['rounds']} | {r['best_iteration']} | "
                f"{problem.kind.primary_metric} {r['metric']:.4f} | {r['load']:.1f} |"
            )
            print(lines[-1], flush=True)
        o, n = results["old"], results["new"]
        summary.append(
            f"| {name} | {o['wall_s'] / n['wall_s']:.1f}x | {o['cpu_s'] / n['cpu_s']:.1f}x | "
            f"{n['metric'] - o['metric']:+.4f} |"
        )
    lines += [
        "",
        "| dataset | wall old / new | CPU old / new | metric new - old |",
        "|---|---:|---:|---:|",
        *summary,
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
