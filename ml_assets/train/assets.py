"""Model, champion and batch-prediction assets: training, the promotion gate, scoring.

Thin wiring: a training is :func:`ml_assets.train.training.train`, its MLflow run
:func:`~ml_assets.train.training.tracking_record` + :meth:`MlflowTracking.log_training`, the gate
:func:`ml_assets.registry.promotion.run_gate`, batch scoring :func:`ml_assets.train.core.score_frame`.
"""

import datetime as dt

import dagster as dg
import polars as pl

from ml_assets.dataset import Dataset
from ml_assets.features.assets import EMPTY_REASON
from ml_assets.registry.promotion import run_gate
from ml_assets.registry.tracking import (
    CHALLENGER,
    CHAMPION,
    REFERENCE_FROM_TAG,
    MlflowTracking,
    git_commit,
)
from ml_assets.storage import LAKE_IO, Lake
from ml_assets.train import core
from ml_assets.train.config import SearchConfig, TrainConfig
from ml_assets.train.training import (
    TrainingWindow,
    log_and_register,
    model_metadata,
    resolve_params,
    search_metadata,
    tracking_record,
    train,
)

GATE = "promotion_gate"


def build_model_asset(dataset: Dataset) -> dg.AssetsDefinition:
    """CatBoost trained on the training set, tracked and registered in MLflow, then gated."""
    contract, keys = dataset.contract, dataset.keys

    @dg.asset(
        key=keys.model,
        deps=[keys.training_set],
        **dataset.asset_args("model"),
        kinds={"catboost", "mlflow"},
        check_specs=[
            dg.AssetCheckSpec(
                GATE,
                asset=keys.model,
                blocking=True,
                description=(
                    "Challenger vs champion on the most recent held-out window: the primary "
                    "metric no worse beyond the tolerance and no slice degrading beyond its "
                    "bound; a first model must beat the naive baseline."
                ),
            )
        ],
        description=(
            f"A CatBoost {contract.problem_type.value} model of `{contract.target}`, trained on "
            "the training set with a time-based train/validation/test split and early stopping. "
            "Every training is an MLflow run (experiment = dataset) and a new registered model "
            "version with alias `challenger`; the promotion gate decides whether it may become "
            "the champion."
        ),
    )
    def model(
        context: dg.AssetExecutionContext, config: TrainConfig, lake: Lake, mlflow: MlflowTracking
    ) -> dg.MaterializeResult:
        frame = lake.scan(keys.training_set, [None]).collect()
        event = context.instance.get_latest_materialization_event(keys.training_set)
        set_meta = event.asset_materialization.metadata if event else {}
        why_empty = set_meta[EMPTY_REASON].value if EMPTY_REASON in set_meta else None
        try:
            config, params_source = resolve_params(mlflow, dataset.name, config)
        except ValueError as exc:
            raise dg.Failure(str(exc)) from exc
        trained = train(dataset, frame, config, why_empty)
        context.log.info(trained.describe())
        window = TrainingWindow.from_metadata(set_meta)
        run_id = context.run.run_id
        record = tracking_record(
            dataset,
            trained,
            config,
            window,
            run_id=run_id,
            run_url=f"{mlflow.dagster_ui_url}/runs/{run_id}",
            asset_key=keys.model.to_user_string(),
            git_commit=git_commit(),
            params_source=params_source,
        )
        source = str(lake.path(keys.training_set, None))
        logged, plots_md = log_and_register(mlflow, dataset, trained, record, source)
        _record_incident_start(context, dataset, mlflow, logged.version)
        gate = run_gate(mlflow, contract.name, trained, config)
        mlflow.record_decision(
            contract.name, logged.version, gate.verdict, gate.summary, gate.numbers
        )
        context.log.info(f"promotion gate for v{logged.version}: {gate.decision.reason}")
        return dg.MaterializeResult(
            metadata={
                **model_metadata(dataset, trained, logged, plots_md),
                "params_source": params_source,
            },
            check_results=[gate.check_result(GATE)],
        )

    return model


def _record_incident_start(
    context: dg.AssetExecutionContext, dataset: Dataset, mlflow: MlflowTracking, version: str
) -> None:
    """On a model trained by the retrain sensor (its run names the incident), record where the
    incident began on the model version: its monitoring reference starts there."""
    from ml_assets.monitor.sensors import INCIDENT_FIRST_PARTITION_TAG

    first = context.run.tags.get(INCIDENT_FIRST_PARTITION_TAG)
    if not first:
        return
    start = dataset.partitions.utc_window(first)[0]
    mlflow.client().set_model_version_tag(
        dataset.name, version, REFERENCE_FROM_TAG, start.isoformat()
    )
    context.log.info(f"v{version} was trained for an incident from {first}: recorded")


def build_model_search_asset(dataset: Dataset) -> dg.AssetsDefinition:
    """The model search (issue 13): a budgeted Optuna search of CatBoost's hyperparameters on
    the training set, in its own job; its result feeds training only by opt-in."""
    contract, keys = dataset.contract, dataset.keys

    @dg.asset(
        key=keys.model_search,
        deps=[keys.training_set],
        **dataset.asset_args("model_search"),
        kinds={"catboost", "optuna", "mlflow"},
        description=(
            f"A hyperparameter search of the {contract.problem_type.value} model of "
            f"`{contract.target}`: TPE-sampled CatBoost configs scored on expanding-window "
            "folds over event time (the default config on the same folds), pruned after each "
            "fold, within a trial and a time budget; resumable (an Optuna study per dataset "
            "under `$ML_ASSETS_HOME/search`). One MLflow parent run per search, one nested "
            "run per trial. The best config is a versioned artifact that training uses only "
            "when its config says `params_from: latest` (or a search id/version)."
        ),
    )
    def model_search(
        context: dg.AssetExecutionContext, config: SearchConfig, lake: Lake, mlflow: MlflowTracking
    ) -> dg.MaterializeResult:
        from ml_assets.features.training_set import fingerprint
        from ml_assets.registry.tracking import SearchTracking
        from ml_assets.train.search import SearchError, check_search_config, run_search

        try:
            check_search_config(config)  # before reading anything
        except SearchError as exc:
            raise dg.Failure(f"model search: {exc}") from exc
        frame = lake.scan(keys.training_set, [None]).collect()
        event = context.instance.get_latest_materialization_event(keys.training_set)
        set_meta = event.asset_materialization.metadata if event else {}
        why_empty = set_meta[EMPTY_REASON].value if EMPTY_REASON in set_meta else None
        core.check_training_frame(frame, contract.target, contract.problem_type, why_empty)
        spec = dataset.spec
        problem = core.Problem.from_frame(
            frame, contract.problem_type, contract.target, spec.names, spec.event_time
        )
        window = TrainingWindow.from_metadata(set_meta)
        fp = fingerprint(frame, spec.key)
        run_id = context.run.run_id
        tags = {
            "dagster.run_id": run_id,
            "dagster.run_url": f"{mlflow.dagster_ui_url}/runs/{run_id}",
            "dagster.asset_key": keys.model_search.to_user_string(),
            "training.window": f"{window.start} .. {window.cutoff}",
            "git.commit": git_commit(),
            "contract.version": contract.version,
            "training_set.fingerprint": fp,
            "features": ",".join(problem.features),
        }
        try:
            result = run_search(
                frame,
                problem,
                config,
                name=dataset.name,
                fingerprint=fp,
                tracking=SearchTracking(mlflow),
                tags=tags,
            )
        except SearchError as exc:
            raise dg.Failure(f"model search: {exc}") from exc
        context.log.info(
            f"search {result.search_id}: best {result.metric} {result.best_score:.4f} "
            f"(default {result.default_score:.4f}), {result.trials} trials "
            f"({result.trials_pruned} pruned), stopped by {result.stopped_by}"
        )
        return dg.MaterializeResult(metadata=search_metadata(result, mlflow))

    return model_search


def build_champion_asset(dataset: Dataset) -> dg.AssetsDefinition:
    """The registry's ``champion`` alias, moved to the challenger that passed the gate."""
    name = dataset.name

    @dg.asset(
        key=dataset.keys.champion,
        deps=[dataset.keys.model],
        **dataset.asset_args("champion"),
        kinds={"mlflow"},
        description=(
            "The model version serving traffic: the registry alias `champion`. Runs only after "
            "the promotion gate passed (a blocking check on the model), and refuses a version "
            "the gate rejected. Roll back with `ml-assets rollback DATASET [VERSION]`."
        ),
    )
    def champion(context: dg.AssetExecutionContext, mlflow: MlflowTracking) -> dg.MaterializeResult:
        version = mlflow.alias_version(name, CHALLENGER)
        if version is None:
            raise dg.Failure(f"{name} has no challenger to promote")
        tags = mlflow.version_tags(name, version)
        if tags.get("promotion.decision") != "promote":
            raise dg.Failure(
                f"{name} v{version} was not cleared by the promotion gate "
                f"(decision: {tags.get('promotion.decision', 'none')})"
            )
        if mlflow.alias_version(name, CHAMPION) == version:
            previous = tags.get("promotion.previous_champion", "none")
        else:
            previous = mlflow.promote(name, version) or "none"
            mlflow.client().set_model_version_tag(
                name, version, "promotion.previous_champion", previous
            )
        context.log.info(f"{name} champion: v{version} (was {previous})")
        return dg.MaterializeResult(
            metadata={
                "champion_version": version,
                "previous_champion": previous,
                "model_uri": f"models:/{name}@{CHAMPION}",
                "mlflow_run_id": mlflow.client().get_model_version(name, version).run_id,
                "training_set_fingerprint": tags.get("training_set.fingerprint", ""),
            }
        )

    return champion


def build_predictions_asset(dataset: Dataset) -> dg.AssetsDefinition:
    """Batch inference: each feature partition scored by the current champion."""
    name, spec, keys = dataset.name, dataset.spec, dataset.keys

    @dg.asset(
        key=keys.predictions,
        partitions_def=dataset.partitions.definition,
        backfill_policy=dg.BackfillPolicy.single_run(),
        io_manager_key=LAKE_IO,
        deps=[keys.features, keys.champion],
        **dataset.asset_args("predictions"),
        kinds={"catboost", "polars", "parquet"},
        description=(
            "Every row of the feature table scored by the champion in-process (the fast path "
            "for batch scoring), with the model version and the scoring time."
        ),
    )
    def predictions(
        context: dg.AssetExecutionContext, lake: Lake, mlflow: MlflowTracking
    ) -> dg.MaterializeResult:
        version = mlflow.alias_version(name, CHAMPION)
        if version is None:
            raise dg.Failure(f"{name} has no champion yet: train and promote one first")
        problem = core.Problem.from_json(mlflow.version_tags(name, version)["problem"])
        model = mlflow.load_model(name, version)
        scored_at = dt.datetime.now(dt.UTC)
        keep = [*spec.key, spec.event_time, *problem.features]
        total = 0
        # a range is committed together: a run that fails part-way changes no partition
        with lake.batch() as batch:
            for i, pk in enumerate(context.partition_keys, 1):
                feats = lake.scan(keys.features, [pk]).select(keep).collect()
                scored = core.score_frame(model, feats, problem, version)
                scored = scored.with_columns(pl.lit(scored_at).alias("scored_at"))
                lake.write(context.asset_key, pk, scored, batch=batch)
                total += feats.height
                context.log.info(
                    f"[{i}/{len(context.partition_keys)}] {pk}: {feats.height} rows scored"
                )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": total,
                "model_version": version,
                "scored_at": scored_at.isoformat(),
            }
        )

    return predictions


def training_definitions(dataset: Dataset) -> dg.Definitions:
    """Model, champion and predictions of one dataset (resources: lake, mlflow, lake_io_manager)."""
    return dg.Definitions(
        assets=[
            build_model_asset(dataset),
            build_model_search_asset(dataset),
            build_champion_asset(dataset),
            build_predictions_asset(dataset),
        ]
    )
