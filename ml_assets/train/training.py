"""One training, from a training-set frame to a tracked model: what the ``model`` asset runs.

:func:`train` checks the data, splits it by time, fits and evaluates (all in
:mod:`ml_assets.train.core`); :func:`tracking_record` turns the result into the MLflow run the
experiment-tracking standard asks for; :func:`model_metadata` into the Dagster metadata.
Nothing here touches Dagster's context, so each step is testable on its own.
"""

from __future__ import annotations

import base64
import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from ml_assets.dataset import Dataset
from ml_assets.features.training_set import fingerprint
from ml_assets.registry.tracking import PARAMS_SOURCE_TAG
from ml_assets.train import core
from ml_assets.train.config import TrainConfig


@dataclass
class TrainedModel:
    """A fitted model with the split it was fitted on and its evaluation."""

    model: Any
    problem: core.Problem
    split: core.Split
    evaluation: core.Evaluation
    frame: pl.DataFrame
    fingerprint: str
    train_seconds: float

    @property
    def best_iteration(self) -> int:
        return int(self.model.get_best_iteration() or 0)

    def describe(self) -> str:
        s, p = self.split, self.problem
        return (
            f"trained on {s.train.height} rows, validated on {s.valid.height}, tested on "
            f"{s.test.height} ({len(p.features)} features, {len(p.categorical)} categorical)"
        )


def learned_categories(dataset: Dataset, frame: pl.DataFrame) -> dict[str, list[str]]:
    """The values of each ``categories: learned`` column in the training frame, per feature
    that passes it through (sorted): the only values the champion knows."""
    from ml_assets.features.declarations import Passthrough

    columns = dataset.contract.entity.columns
    return {
        f.name: sorted(frame.get_column(f.name).drop_nulls().cast(pl.String).unique().to_list())
        for f in dataset.spec.row
        if isinstance(f, Passthrough)
        and columns[f.column].categories == "learned"
        and f.name in frame.columns
    }


def train(
    dataset: Dataset, frame: pl.DataFrame, config: TrainConfig, why_empty: str | None = None
) -> TrainedModel:
    """Fit and evaluate a model of the dataset's kind on a training-set frame.

    Bad training data raises :class:`~ml_assets.train.core.TrainingDataError` here, before
    anything reaches the tracking server or the registry; an empty frame's error says
    ``why_empty`` (the training set's own account of its window and labels).
    """
    contract, spec = dataset.contract, dataset.spec
    core.check_training_frame(frame, contract.target, contract.problem_type, why_empty)
    problem = core.Problem.from_frame(
        frame, contract.problem_type, contract.target, spec.names, spec.event_time
    )
    problem.categories = learned_categories(dataset, frame)
    split = core.time_split(frame, spec.event_time, config.valid_share, config.test_share)
    started = dt.datetime.now(dt.UTC)
    model = core.fit(split, problem, config)
    seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
    evaluation = core.evaluate(model, split, problem, config.min_slice_rows)
    return TrainedModel(
        model, problem, split, evaluation, frame, fingerprint(frame, spec.key), seconds
    )


def resolve_params(tracking: Any, name: str, config: TrainConfig) -> tuple[TrainConfig, str]:
    """The config a training fits and where its hyperparameters came from (the run tag
    ``params.source``): with ``params_from`` set, the searched fields of that model search's
    result (``latest``, a search id or a version) over ``config``, and the search id; else
    ``config`` as it is and ``default``. An unknown reference raises ``ValueError`` before
    anything is trained."""
    from ml_assets.registry.tracking import SearchTracking
    from ml_assets.train.search import SEARCHED

    if config.params_from is None:
        return config, "default"
    result = SearchTracking(tracking).load_result(name, config.params_from)
    update = {k: v for k, v in result["params"].items() if k in SEARCHED}
    return config.model_copy(update=update), str(result["search_id"])


@dataclass(frozen=True)
class TrainingWindow:
    """Where the training set came from (its asset's latest materialization metadata)."""

    start: str
    cutoff: str

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> TrainingWindow:
        def value(name: str) -> str:
            return str(metadata[name].value) if name in metadata else "unknown"

        return cls(value("window_start"), value("cutoff"))


@dataclass(frozen=True)
class TrackingRecord:
    """Tags, params and metrics of one training's MLflow run."""

    tags: dict[str, str]
    params: dict[str, Any]
    metrics: dict[str, float]


def tracking_record(
    dataset: Dataset,
    trained: TrainedModel,
    config: TrainConfig,
    window: TrainingWindow,
    *,
    run_id: str,
    run_url: str,
    asset_key: str,
    git_commit: str,
    params_source: str = "default",
) -> TrackingRecord:
    """What the experiment-tracking standard records for a training; ``params_source`` is
    where its hyperparameters came from (a model search's id, or ``default``)."""
    ev, metric = trained.evaluation, dataset.kind.primary_metric
    tags = {
        "dagster.run_id": run_id,
        "dagster.run_url": run_url,
        "dagster.asset_key": asset_key,
        "training.window": f"{window.start} .. {window.cutoff}",
        "git.commit": git_commit,
        "contract.version": dataset.contract.version,
        "training_set.fingerprint": trained.fingerprint,
        "features": ",".join(trained.problem.features),
        "problem": trained.problem.to_json(),
        PARAMS_SOURCE_TAG: params_source,
    }
    params = {
        **config.model_dump(),
        # the values CatBoost was given (an unset learning rate or has_time follows the data)
        **config.catboost_params(len(trained.problem.categorical), trained.split.train.height),
        **trained.split.describe(),
        "cutoff": window.cutoff,
        "window_start": window.start,
        "best_iteration": trained.best_iteration,
    }
    metrics = {
        **{f"test_{k}": v for k, v in ev.metrics.items()},
        **{f"baseline_{k}": v for k, v in ev.baseline.items()},
        **{
            f"slice_{r['column']}={r['value']}_{metric}": r[metric]
            for r in ev.slices.iter_rows(named=True)
        },
        "train_seconds": trained.train_seconds,
    }
    return TrackingRecord(tags, params, metrics)


def log_and_register(
    tracking: Any, dataset: Dataset, trained: TrainedModel, record: TrackingRecord, source: str
) -> tuple[Any, str]:
    """Log the training as one MLflow run by the standard (plots, slices, the model with its
    input example, the training set as a dataset input from ``source``) and register it as a
    new version with alias ``challenger``. Returns the logged model and the plots as markdown."""
    from ml_assets.train.plots import evaluation_plots

    name = dataset.name
    with tempfile.TemporaryDirectory() as tmp:
        plots = evaluation_plots(trained.model, trained.evaluation, trained.problem, Path(tmp))
        logged = tracking.log_training(
            dataset=name,
            tags=record.tags,
            params=record.params,
            metrics=record.metrics,
            model=trained.model,
            input_example=core.to_pool_frame(trained.split.test.head(5), trained.problem),
            training_set=trained.frame,
            training_set_source=source,
            fingerprint=trained.fingerprint,
            target=dataset.contract.target,
            plots=plots,
            extra_artifacts={"slices.json": trained.evaluation.slices.write_json()},
        )
        plots_md = png_markdown(plots)
    tracking.client().set_model_version_tag(name, logged.version, "problem", record.tags["problem"])
    return logged, plots_md


def png_markdown(paths: dict[str, Path] | dict[str, bytes]) -> str:
    """Plots inline in Dagster's metadata (markdown with data: URLs), from files or bytes."""
    parts = []
    for name, path in paths.items():
        png = path if isinstance(path, bytes) else path.read_bytes()
        data = base64.b64encode(png).decode()
        parts.append(f"**{name}**\n\n![{name}](data:image/png;base64,{data})")
    return "\n\n".join(parts)


def slices_markdown(slices: pl.DataFrame, metric: str) -> str:
    if slices.height == 0:
        return "no categorical slices with enough rows"
    lines = [f"| column | value | rows | {metric} |", "|---|---|---|---|"]
    for r in slices.iter_rows(named=True):
        lines.append(f"| {r['column']} | {r['value']} | {r['rows']} | {r[metric]:.4f} |")
    return "\n".join(lines)


def model_metadata(
    dataset: Dataset, trained: TrainedModel, logged: Any, plots_md: str
) -> dict[str, Any]:
    """The ``model`` asset's materialization metadata."""
    ev, metric = trained.evaluation, dataset.kind.primary_metric
    return {
        "model_version": logged.version,
        "registered_model": dataset.name,
        "mlflow_run_id": logged.run_id,
        "mlflow_run": dg.MetadataValue.url(logged.run_url),
        "model_uri": logged.model_uri,
        "primary_metric": metric,
        **{f"test_{k}": round(v, 6) for k, v in ev.metrics.items()},
        **{f"baseline_{k}": round(v, 6) for k, v in ev.baseline.items()},
        "train_seconds": round(trained.train_seconds, 3),
        "best_iteration": trained.best_iteration,
        "training_set_fingerprint": trained.fingerprint,
        "split": dg.MetadataValue.json(trained.split.describe()),
        "slices": dg.MetadataValue.md(slices_markdown(ev.slices, metric)),
        "plots": dg.MetadataValue.md(plots_md),
    }


def search_metadata(result: Any, tracking: Any) -> dict[str, Any]:
    """The ``model_search`` asset's materialization metadata: best and default CV scores on
    the same folds (with their spread), the trial counts, the plots, and the result's version
    and artifact (what ``TrainConfig.params_from`` names)."""
    from ml_assets.registry.tracking import BEST_CONFIG

    metric = result.metric
    meta: dict[str, Any] = {
        "search_id": result.search_id,
        "config_version": result.version,
        "params_from": f"v{result.version}",
        "primary_metric": metric,
        f"best_cv_{metric}": round(result.best_score, 6),
        f"best_cv_{metric}_spread": round(result.best_spread, 6),
        f"default_cv_{metric}": round(result.default_score, 6),
        f"default_cv_{metric}_spread": round(result.default_spread, 6),
        "trials": result.trials,
        "trials_pruned": result.trials_pruned,
        "pruned_share": round(result.pruned_share, 4),
        "trials_this_run": result.trials_this_run,
        "stopped_by": result.stopped_by,
        "search_seconds": round(result.seconds, 2),
        "best_params": dg.MetadataValue.json(result.best_params),
        "folds": result.folds,
    }
    if result.parent_run_id is not None:
        run = tracking.client().get_run(result.parent_run_id)
        meta["mlflow_run_id"] = result.parent_run_id
        meta["mlflow_run"] = dg.MetadataValue.url(
            tracking.run_url(run.info.experiment_id, result.parent_run_id)
        )
        meta["config_artifact"] = f"{run.info.artifact_uri}/{BEST_CONFIG}"
    if result.plots:
        meta["plots"] = dg.MetadataValue.md(png_markdown(result.plots))
    if result.notes:
        meta["notes"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in result.notes))
    return meta
