"""The model search (issue 13): best vs default CV score, wall time, trials/min, share pruned,
and the platform's overhead over the same search run by plain Optuna.

For each dataset (default: car_loan, the 100k-row demo training set, and car_price), the
training set is built with the platform's feature code (as ``bench_training.py`` does), then,
side by side in one process:

* ``platform``: :func:`ml_assets.train.search.run_search` as the ``model_search`` asset runs it:
  settings checked, folds cut, an Optuna study in SQLite RDB storage, the default config
  scored on the same folds, one MLflow parent run + a nested run per trial on a local SQLite
  tracking store, the plots and the versioned best-config artifact;
* ``plain Optuna`` (the floor): the same folds, the same TPE sampler and median pruner with the
  same seeds, the same objective (CatBoost fitted per fold), an in-memory study, no tracking,
  no default-config scoring. The same seed gives the same trials, so the difference in wall
  time is the platform's (storage, tracking, default config, plots).

    .venv/bin/python bench/bench_search.py --trials 30 --out bench/results/search.md
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

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_training  # the training bench's demo training set

from ml_assets.contracts import load_contracts
from ml_assets.features.compute import fingerprint
from ml_assets.registry.tracking import STANDARD_TAGS, MlflowTracking, SearchTracking
from ml_assets.train import core, search
from ml_assets.train.config import SearchConfig, TrainConfig


def training_frame(name: str) -> tuple[pl.DataFrame, core.Problem, str]:
    """The dataset's demo training set (every labelled row), its problem and fingerprint."""
    frame, spec = bench_training.training_frame(None, name)
    contract = load_contracts()[name]
    problem = core.Problem.from_frame(
        frame, contract.problem_type, contract.target, spec.names, spec.event_time
    )
    return frame, problem, fingerprint(frame, spec.key)


def plain_optuna(frame: pl.DataFrame, problem: core.Problem, config: SearchConfig) -> dict:
    """The floor: the same search by Optuna alone (in-memory study, no tracking)."""
    import optuna

    t0 = time.perf_counter()
    folds = search.time_folds(frame.get_column(problem.event_time), config.folds)
    data = search.SearchData.build(frame, problem, folds)
    startup = max(1, min(10, config.n_trials // 3))
    study = optuna.create_study(
        direction="maximize" if problem.kind.higher_is_better else "minimize",
        sampler=optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=startup),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=min(3, startup), n_warmup_steps=2 * search.REPORT_EVERY
        ),
    )
    threads = max(1, search.cores() // config.parallel)
    base = TrainConfig()

    def objective(trial):
        params = search.suggest(trial, config)

        def report(k, score):
            trial.report(score, step=search.fold_step(k))
            if trial.should_prune():
                raise optuna.TrialPruned()

        cfg = search.trial_config(base, config, params)
        hook = search.round_hook(trial, problem.kind)
        try:
            return float(np.mean(search.fold_scores(data, cfg, threads, report, hook)))
        except search.Pruned:
            raise optuna.TrialPruned() from None

    study.optimize(
        objective, n_trials=config.n_trials, timeout=config.timeout_s, n_jobs=config.parallel
    )
    seconds = time.perf_counter() - t0
    states = [t.state.name for t in study.trials]
    return {
        "seconds": seconds,
        "best": study.best_value,
        "trials": len(study.trials),
        "pruned": states.count("PRUNED"),
    }


def flaml_search(frame: pl.DataFrame, problem: core.Problem, config: SearchConfig) -> dict:
    """The alternative library: FLAML's ``tune.run`` (its default BlendSearch: Optuna's TPE
    for the global search, FLAML's cost-frugal CFO around the best points) over the same
    space, the same folds and the same objective; FLAML has no pruner, so every trial runs all
    folds. Same trial count and time budget; in memory, no tracking."""
    from flaml import tune

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    folds = search.time_folds(frame.get_column(problem.event_time), config.folds)
    data = search.SearchData.build(frame, problem, folds)
    threads = max(1, search.cores() // config.parallel)
    base = TrainConfig()
    space = {}
    for name in search.SEARCHED:
        low, high = getattr(config, name)
        if name in search.INT_RANGES:
            space[name] = tune.randint(int(low), int(high) + 1)  # upper bound exclusive
        elif name in search.LOG_RANGES:
            space[name] = tune.loguniform(float(low), float(high))
        else:
            space[name] = tune.uniform(float(low), float(high))

    def evaluate(params: dict) -> dict:
        chosen = {
            k: int(v) if k in search.INT_RANGES else float(v)
            for k, v in params.items()
            if k in search.SEARCHED
        }
        cfg = search.trial_config(base, config, chosen)
        return {"score": float(np.mean(search.fold_scores(data, cfg, threads)))}

    analysis = tune.run(
        evaluate,
        config=space,
        metric="score",
        mode="max" if problem.kind.higher_is_better else "min",
        num_samples=config.n_trials,
        time_budget_s=config.timeout_s,
        verbose=0,
    )
    return {
        "seconds": time.perf_counter() - t0,
        "cpu": time.process_time() - cpu0,
        "best": float(analysis.best_result["score"]),
        "trials": len(analysis.trials),
    }


def platform_search(
    frame: pl.DataFrame, problem: core.Problem, fp: str, name: str, config: SearchConfig
) -> search.SearchResult:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tracking = MlflowTracking(
            tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
            artifact_root=str(folder / "artifacts"),
        )
        tracking.experiment_id(name)  # create the store first: a one-off, not per search
        tags = {t: f"bench-{t}" for t in STANDARD_TAGS}
        return search.run_search(
            frame,
            problem,
            config,
            name=name,
            fingerprint=fp,
            tracking=SearchTracking(tracking),
            tags=tags,
            storage=folder / "search" / f"{name}.sqlite",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["car_loan", "car_price"])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--out", default="bench/results/search.md")
    parser.add_argument(
        "--flaml", action="store_true", help="also run the same search with FLAML's tune.run"
    )
    args = parser.parse_args()
    config = SearchConfig(n_trials=args.trials, timeout_s=args.timeout, parallel=args.parallel)
    command = " ".join(
        ["bench/bench_search.py", "--datasets", *args.datasets, "--trials", str(args.trials)]
        + (["--parallel", str(args.parallel)] if args.parallel != 1 else [])
        + (["--flaml"] if args.flaml else [])
    )
    lines = [
        f"# Model search benchmark ({dt.date.today()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()})",
        "",
        f"`.venv/bin/python {command} --out {args.out}`",
        "",
        f"Load average at the start: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        "| dataset | training rows | metric | default CV (fold spread) | best CV (fold spread) "
        "| trials (pruned) | share pruned | platform s | trials/min | plain Optuna s "
        "| plain best | overhead | of which default config s | overhead without it "
        "| CPU s platform / plain | CPU overhead |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    flaml_rows = []
    for name in args.datasets:
        frame, problem, fp = training_frame(name)
        # alternate which runs first would need two runs each; the floor runs first, so the
        # platform's run is not helped by a warm process (imports, CatBoost's first fit)
        # CPU seconds of this process (every thread: CatBoost fits in-process) beside wall
        # time: on a shared machine the wall clock also counts the other tenants' load
        cpu0 = time.process_time()
        floor = plain_optuna(frame, problem, config)
        cpu1 = time.process_time()
        result = platform_search(frame, problem, fp, name, config)
        cpu2 = time.process_time()
        floor_cpu, platform_cpu = cpu1 - cpu0, cpu2 - cpu1
        overhead = result.seconds / floor["seconds"] - 1
        tracking_only = (result.seconds - result.default_seconds) / floor["seconds"] - 1
        lines.append(
            f"| {name} | {frame.height:,} | {result.metric} | {result.default_score:.4f} "
            f"(±{result.default_spread:.4f}) | {result.best_score:.4f} (±{result.best_spread:.4f}) "
            f"| {result.trials} ({result.trials_pruned}) | {result.pruned_share:.0%} "
            f"| {result.seconds:.1f} | {result.trials / result.seconds * 60:.1f} "
            f"| {floor['seconds']:.1f} | {floor['best']:.4f} | {overhead:+.1%} "
            f"| {result.default_seconds:.1f} | {tracking_only:+.1%} "
            f"| {platform_cpu:.0f} / {floor_cpu:.0f} | {platform_cpu / floor_cpu - 1:+.1%} |"
        )
        print(lines[-1], flush=True)
        if args.flaml:
            other = flaml_search(frame, problem, config)
            flaml_rows.append(
                f"| {name} | {result.metric} | {result.best_score:.4f} | {result.seconds:.1f} "
                f"| {platform_cpu:.0f} | {other['best']:.4f} | {other['trials']} "
                f"| {other['seconds']:.1f} | {other['cpu']:.0f} |"
            )
            print(flaml_rows[-1], flush=True)
    if flaml_rows:
        lines += [
            "",
            "FLAML (`tune.run`, BlendSearch, no pruner) on the same space, folds and objective:",
            "",
            "| dataset | metric | platform best | platform s | platform CPU s | FLAML best "
            "| FLAML trials | FLAML s | FLAML CPU s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
            *flaml_rows,
        ]
    lines += ["", f"Load average at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
