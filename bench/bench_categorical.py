"""CatBoost fit time and held-out metric, old vs new training defaults, side by side in one run.

Issue 10 item 9: a 140k-row dataset of 15 categorical columns took minutes to fit with the
defaults of before (CatBoost's own CTR settings: greedy categorical feature combinations up to
four features deep, four target statistics per feature and per combination). This benchmark
fits the synthetic dataset of that shape (``bench/categorical_data.py``) and the three bundled
demo datasets (car_loan, car_price, credit_card, their training sets built with the platform's
own feature code), one fit at a time: with the old defaults, with
:class:`~ml_assets.train.config.TrainConfig`'s current ones, with the new CTR settings but
the learning rate the rule did not pick (0.08 where it picked 0.2, and the reverse), and with
each ``--vary FIELD=VALUE`` on top of the current defaults, one change at a time. It prints a
table: wall and CPU seconds of the fit (time split + CatBoost with early stopping), the CPU
seconds of its busiest thread (a floor on the wall time on an idle machine), the cores other
processes used meanwhile (from ``/proc/stat``: on a shared machine a 2-thread fit's wall
time says more about them than about the fit), boosting rounds run, best iteration and the
problem kind's primary test metric.

    .venv/bin/python bench/bench_categorical.py --out bench/results/categorical.md

``--datasets`` picks a subset (``synthetic car_loan car_price credit_card``), ``--rows`` the
synthetic dataset's size (140,000 by default: the old defaults take minutes there),
``--configs`` which of ``old new other-lr`` to fit, ``--vary`` the single changes to measure
(e.g. ``--vary has_time=false early_stopping_rounds=25 bootstrap_type=Bernoulli``: a
TrainConfig field, or any other CatBoost parameter; values are JSON, else strings),
``--repeat`` how many times the whole sequence runs (interleaved, so repeats see the same
load; the summary takes medians; the fits are deterministic, only the times differ),
``--seeds`` over how many random seeds each configuration is fitted (42, 43, ...: the spread
of the metric across seeds is the noise a change of defaults must be judged against).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import shlex
import statistics
import sys
import threading
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
CONFIGS = ("old", "new", "other-lr")


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


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes of the machine have used since boot (None off Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by thread id (empty off Linux)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


class ThreadCpu:
    """The CPU seconds each thread spent inside a ``with`` block, sampled every 0.2 s (so a
    thread that ends inside the block still counts, up to its last sample)."""

    def __enter__(self) -> ThreadCpu:
        self._base, self._seen = _thread_cpu(), {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for tid, cpu in _thread_cpu().items():
                self._seen[tid] = max(self._seen.get(tid, 0.0), cpu)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()
        for tid, cpu in _thread_cpu().items():
            self._seen[tid] = max(self._seen.get(tid, 0.0), cpu)

    def busiest(self) -> float:
        """The most CPU one thread spent in the block: no machine runs the block in less wall
        time, however idle (one thread runs on one core at a time)."""
        return max((c - self._base.get(t, 0.0) for t, c in self._seen.items()), default=0.0)


def fit_once(
    frame: pl.DataFrame,
    problem: core.Problem,
    config: TrainConfig,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One timed fit (split + CatBoost; ``overrides``: CatBoost parameters on top of the
    config's) and its test evaluation."""
    b0 = busy_cpu_seconds()
    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadCpu() as threads:
        split = core.time_split(frame, problem.event_time, config.valid_share, config.test_share)
        model = core.fit(split, problem, config, overrides)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    b1 = busy_cpu_seconds()
    others = None if b0 is None or b1 is None else max(0.0, (b1 - b0 - cpu) / wall)
    evaluation = core.evaluate(model, split, problem)
    rounds = len(next(iter(model.get_evals_result()["validation"].values())))
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "rounds": rounds,
        "best_iteration": model.get_best_iteration(),
        "metric": evaluation.metrics[problem.kind.primary_metric],
        "load": os.getloadavg()[0],
        "others": others,
        "busiest": threads.busiest(),
    }


def parse_vary(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` of ``--vary``: a TrainConfig field or another CatBoost parameter, and its
    value (JSON, else a string)."""
    field, sep, raw = text.partition("=")
    if not sep or not field:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return field, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--rows", type=int, default=140_000)
    parser.add_argument("--configs", nargs="*", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--vary", nargs="*", type=parse_vary, default=[], metavar="FIELD=VALUE")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", default="bench/results/categorical.md")
    args = parser.parse_args()
    argv = ["--datasets", *args.datasets, "--rows", str(args.rows)]
    argv += ["--configs", *args.configs]
    argv += ["--vary", *(f"{k}={_raw(v)}" for k, v in args.vary)] if args.vary else []
    argv += ["--repeat", str(args.repeat)] if args.repeat != 1 else []
    argv += ["--seeds", str(args.seeds)] if args.seeds != 1 else []
    argv += ["--out", args.out]
    command = shlex.join([".venv/bin/python", "bench/bench_categorical.py", *argv])
    lines = [
        f"# Categorical-heavy training, old vs new defaults ({dt.date.today()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load {os.getloadavg()[0]:.1f} at start)",
        "",
        f"`{command}`",
        "",
        f"Old: `TrainConfig(**{OLD_CATEGORICAL_DEFAULTS})`; new: `TrainConfig()` (learning rate "
        f"0.2 from {CATEGORICAL_HEAVY} categoricals on, else 0.08). Busiest thread: the CPU "
        "seconds of the fit's busiest thread, a floor on its wall time on an idle machine (the "
        "fit's CPU seconds are a ceiling there). Others' cores: CPU the rest of the machine used "
        "during the fit, in cores.",
        "",
        "| dataset | rows | categoricals | defaults | fit wall s | fit CPU s | busiest thread "
        "CPU s | others' cores | rounds | best iteration | test metric | load (1 min) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    summary = []
    for name in args.datasets:
        frame, problem = synthetic_frame(args.rows) if name == "synthetic" else bundled_frame(name)
        configs = configurations(len(problem.categorical), args.configs, args.vary)
        results: dict[str, list[dict[str, Any]]] = {label: [] for label in configs}
        for _ in range(args.repeat):
            for (label, (config, overrides)), seed in itertools.product(
                configs.items(), seeds(args.seeds)
            ):
                config = config.model_copy(update={"random_seed": seed})
                r = {**fit_once(frame, problem, config, overrides), "seed": seed}
                results[label].append(r)
                others = "" if r["others"] is None else f"{r['others']:.2f}"
                lines.append(
                    f"| {name} | {frame.height:,} | {len(problem.categorical)} | {label} | "
                    f"{r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['busiest']:.2f} | {others} | "
                    f"{r['rounds']} | "
                    f"{r['best_iteration']} | {problem.kind.primary_metric} {r['metric']:.4f}"
                    f"{f' (seed {seed})' if args.seeds > 1 else ''} | "
                    f"{r['load']:.1f} |"
                )
                print(lines[-1], flush=True)
        o = _medians(results["old"]) if "old" in results else None
        for label, runs in results.items():
            n = _medians(runs)
            spread = f" (sd {n['metric_sd']:.4f})" if args.seeds > 1 else ""
            vs_old = (
                f"{o['wall_s'] / n['wall_s']:.1f}x | {o['cpu_s'] / n['cpu_s']:.1f}x | "
                f"{n['metric'] - o['metric']:+.4f}"
                if o is not None and label != "old"
                else " | | "
            )
            summary.append(
                f"| {name} | {label} | {n['wall_s']:.2f} | {n['cpu_s']:.2f} | "
                f"{problem.kind.primary_metric} {n['metric']:.4f}{spread} | {vs_old} |"
            )
    lines += [
        "",
        "Medians of the wall and CPU seconds over the runs"
        + (
            f"; the metric's mean and standard deviation over seeds {', '.join(map(str, seeds(args.seeds)))}"
            if args.seeds > 1
            else ""
        )
        + ":",
        "",
        "| dataset | defaults | fit wall s | fit CPU s | test metric | wall old / this "
        "| CPU old / this | metric this - old |",
        "|---|---|---:|---:|---|---:|---:|---:|",
        *summary,
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def configurations(
    categoricals: int, names: list[str], vary: list[tuple[str, Any]]
) -> dict[str, tuple[TrainConfig, dict[str, Any]]]:
    """The configurations to fit, by row label, each a TrainConfig and CatBoost parameters on
    top of it: the named ones, then each single change (a TrainConfig field goes into the
    config, any other name to CatBoost as it is)."""
    heavy = categoricals >= CATEGORICAL_HEAVY
    out: dict[str, tuple[TrainConfig, dict[str, Any]]] = {}
    if "old" in names:
        out["old"] = TrainConfig(**OLD_CATEGORICAL_DEFAULTS), {}
    if "new" in names:
        out["new"] = TrainConfig(), {}
    if "other-lr" in names:
        # The new CTR settings with the other learning rate than the rule picks: the rule's
        # case, both ways (CATEGORICAL_HEAVY in ml_assets/train/config.py).
        other = TrainConfig(learning_rate=0.08 if heavy else 0.2)
        out[f"new, learning rate {other.learning_rate} (not the rule's)"] = other, {}
    for name, value in vary:
        label = f"new, {name}={_raw(value)}"
        if name in TrainConfig.model_fields:
            out[label] = TrainConfig(**{name: value}), {}
        else:
            out[label] = TrainConfig(), {name: value}
    return out


def _raw(value: Any) -> str:
    """A ``--vary`` value as typed: a string as it is, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def seeds(n: int) -> list[int]:
    """The random seeds of ``--seeds n``: TrainConfig's default first."""
    first = TrainConfig.model_fields["random_seed"].default
    return [first + i for i in range(n)]


def _medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median wall and CPU seconds; the metric's mean and standard deviation (over seeds: each
    seed's fit is deterministic, so repeats only repeat it)."""
    metrics = list({r["seed"]: r["metric"] for r in runs}.values())
    return {
        **{k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s")},
        "metric": statistics.fmean(metrics),
        "metric_sd": statistics.stdev(metrics) if len(metrics) > 1 else 0.0,
    }


if __name__ == "__main__":
    main()
