"""Training wall time, and MLflow's logging + registration overhead as a share of it.

For the car-loan demo (100k rows) and a resampled 1M-row version: features are computed with the
platform's own feature code (as the feature table asset does), a training set is cut at the end
of the data, then, timed separately in the same process:

* ``fit``: the time split + CatBoost training with early stopping (``ml_assets.train.core``),
* ``evaluate``: test metrics, baseline and slices,
* ``track``: ``MlflowTracking.log_training`` (one MLflow run with params, metrics, the training
  set as a dataset input, plots, the model with signature and input example, registration of a
  new version with alias ``challenger``) on a local SQLite tracking store.

    .venv/bin/python bench/bench_training.py --rows 100000 1000000 --out bench/results/training.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

import polars as pl

from ml_assets.contracts import load_contracts
from ml_assets.features import build_training_set, compute_features, load_feature_spec
from ml_assets.features.compute import fingerprint
from ml_assets.ingest.demo import demo_frames
from ml_assets.registry.tracking import MlflowTracking
from ml_assets.train import core
from ml_assets.train.config import TrainConfig
from ml_assets.train.plots import evaluation_plots


def training_frame(rows: int | None, name: str = "car_loan") -> tuple[pl.DataFrame, object]:
    """A shipped dataset's demo training set (every labelled row) and its feature spec."""
    contract = load_contracts()[name]
    spec = load_feature_spec(contract)
    frames = demo_frames(contract, rows=rows)
    entity = frames["entity"].with_columns(pl.col(spec.event_time).dt.replace_time_zone("UTC"))
    labels = frames["labels"].with_columns(
        pl.col(contract.labels.observed_at).dt.replace_time_zone("UTC")
    )
    from ml_assets.features.compute import entity_events, label_events
    from ml_assets.features.spec import Source

    owners = entity.select(*spec.key, *spec.group_columns)
    events = {
        Source.ENTITY: entity_events(spec, entity).collect(),
        Source.LABELS: label_events(spec, labels, owners).collect(),
    }
    feats = compute_features(spec, entity, events)
    cutoff = labels.get_column(contract.labels.observed_at).max() + dt.timedelta(seconds=1)
    window = cutoff - entity.get_column(spec.event_time).min()
    return build_training_set(spec, feats, labels, cutoff, window), spec


def run(rows: int | None, folder: Path) -> dict:
    frame, spec = training_frame(rows)
    contract = spec.contract
    problem = core.Problem.from_frame(
        frame, contract.problem_type, contract.target, spec.names, spec.event_time
    )
    params = TrainConfig()

    t0 = time.perf_counter()
    split = core.time_split(frame, spec.event_time)
    model = core.fit(split, problem, params)
    fit_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    evaluation = core.evaluate(model, split, problem)
    plots = evaluation_plots(model, evaluation, problem, folder / "plots")
    eval_s = time.perf_counter() - t0

    tracking = MlflowTracking(
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", artifact_root=str(folder / "artifacts")
    )
    tracking.experiment_id(contract.name)  # create the store first: a one-off, not per run
    fp = fingerprint(frame, spec.key)
    tags = {
        "dagster.run_id": "bench",
        "dagster.run_url": "http://127.0.0.1:3000/runs/bench",
        "dagster.asset_key": "car_loan/model",
        "training.window": "all",
        "git.commit": "bench",
        "contract.version": contract.version,
        "training_set.fingerprint": fp,
        "features": ",".join(problem.features),
    }
    t0 = time.perf_counter()
    tracking.log_training(
        dataset=contract.name,
        tags=tags,
        params={**params.__dict__, **split.describe()},
        metrics={f"test_{k}": v for k, v in evaluation.metrics.items()},
        model=model,
        input_example=core.to_pool_frame(split.test.head(5), problem),
        training_set=frame,
        training_set_source=str(folder / "training_set.parquet"),
        fingerprint=fp,
        target=contract.target,
        plots=plots,
    )
    track_s = time.perf_counter() - t0
    return {
        "rows": frame.height,
        "train_rows": split.train.height,
        "best_iteration": model.get_best_iteration(),
        "auc": evaluation.metrics["roc_auc"],
        "fit_s": fit_s,
        "eval_s": eval_s,
        "track_s": track_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--out", default="bench/results/training.md")
    args = parser.parse_args()
    lines = [
        f"# Training benchmark ({dt.date.today()}, {os.cpu_count()} cores, Python {platform.python_version()})",
        "",
        f"`{' '.join(['.venv/bin/python', 'bench/bench_training.py', '--rows', *map(str, args.rows), '--out', args.out])}`",
        "",
        "| rows (training set) | train rows | best iteration | test ROC AUC | fit s | evaluate + plots s | MLflow log + register s | tracking share of fit |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            r = run(None if n == 100_000 else n, Path(tmp))
        share = r["track_s"] / r["fit_s"]
        lines.append(
            f"| {r['rows']:,} | {r['train_rows']:,} | {r['best_iteration']} | {r['auc']:.4f} | "
            f"{r['fit_s']:.2f} | {r['eval_s']:.2f} | {r['track_s']:.2f} | {share:.1%} |"
        )
        print(lines[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
