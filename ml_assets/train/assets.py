"""Model, champion and batch-prediction assets: training, the promotion gate, scoring."""

import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from ml_assets.contracts.model import Contract, ProblemType
from ml_assets.features.assets import features_key, training_set_key
from ml_assets.features.compute import fingerprint
from ml_assets.features.spec import load_feature_spec
from ml_assets.ingest.assets import LAKE_IO
from ml_assets.partitions import partitions_def
from ml_assets.registry.promotion import decide
from ml_assets.registry.tracking import CHALLENGER, CHAMPION, MlflowTracking, git_commit
from ml_assets.storage import Lake
from ml_assets.train import core
from ml_assets.train.plots import evaluation_plots

GATE = "promotion_gate"


class TrainConfig(dg.Config):
    """CatBoost hyperparameters and the time split; editable in the launchpad."""

    iterations: int = 500
    learning_rate: float = 0.08
    depth: int = 6
    l2_leaf_reg: float = 3.0
    early_stopping_rounds: int = 50
    random_seed: int = 42
    thread_count: int = 2
    """Fixed, with the seed, so the same training set gives the same model."""
    valid_share: float = 0.15
    test_share: float = 0.15
    tolerance: float = 0.01
    """Promotion: the challenger's primary metric may be at most this much (relative) worse."""
    slice_tolerance: float = 0.05
    """Promotion: no slice's primary metric may be more than this much (relative) worse."""
    min_slice_rows: int = 200
    """Slices with fewer held-out rows are too noisy to judge and are left out."""


def model_key(contract: Contract) -> dg.AssetKey:
    return dg.AssetKey([contract.name, "model"])


def champion_key(contract: Contract) -> dg.AssetKey:
    return dg.AssetKey([contract.name, "champion"])


def predictions_key(contract: Contract) -> dg.AssetKey:
    return dg.AssetKey([contract.name, "predictions"])


def problem_tag(problem: core.Problem) -> str:
    """What a scorer needs to use the model: features, categoricals, classes (JSON)."""
    return json.dumps(
        {
            "problem_type": problem.problem_type.value,
            "target": problem.target,
            "features": problem.features,
            "categorical": problem.categorical,
            "event_time": problem.event_time,
            "classes": problem.classes,
        }
    )


def problem_from_tag(text: str) -> core.Problem:
    d = json.loads(text)
    return core.Problem(
        ProblemType(d["problem_type"]),
        d["target"],
        d["features"],
        d["categorical"],
        d["event_time"],
        d["classes"],
    )


def _png_markdown(paths: dict[str, Path]) -> str:
    import base64

    parts = []
    for name, path in paths.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"**{name}**\n\n![{name}](data:image/png;base64,{data})")
    return "\n\n".join(parts)


def _slices_markdown(slices: pl.DataFrame, metric: str) -> str:
    if slices.height == 0:
        return "no categorical slices with enough rows"
    lines = [f"| column | value | rows | {metric} |", "|---|---|---|---|"]
    for r in slices.iter_rows(named=True):
        lines.append(f"| {r['column']} | {r['value']} | {r['rows']} | {r[metric]:.4f} |")
    return "\n".join(lines)


def build_model_asset(contract: Contract) -> dg.AssetsDefinition:
    """CatBoost trained on the training set, tracked and registered in MLflow, then gated."""
    key = model_key(contract)
    spec = load_feature_spec(contract)

    @dg.asset(
        key=key,
        deps=[training_set_key(contract)],
        group_name=contract.name,
        kinds={"catboost", "mlflow"},
        tags={"stage": "model", "dataset": contract.name},
        check_specs=[
            dg.AssetCheckSpec(
                GATE,
                asset=key,
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
        ts_key = training_set_key(contract)
        frame = lake.scan(ts_key, [None]).collect()
        # Bad training data stops here, before anything reaches the tracking server or registry.
        core.check_training_frame(frame, contract.target, contract.problem_type)
        problem = core.Problem.from_frame(
            frame, contract.problem_type, contract.target, spec.names, spec.event_time
        )
        split = core.time_split(frame, spec.event_time, config.valid_share, config.test_share)
        params = core.TrainParams(
            iterations=config.iterations,
            learning_rate=config.learning_rate,
            depth=config.depth,
            l2_leaf_reg=config.l2_leaf_reg,
            early_stopping_rounds=config.early_stopping_rounds,
            random_seed=config.random_seed,
            thread_count=config.thread_count,
        )
        context.log.info(
            f"training on {split.train.height} rows, validating on {split.valid.height}, "
            f"testing on {split.test.height} ({len(problem.features)} features, "
            f"{len(problem.categorical)} categorical)"
        )
        t0 = dt.datetime.now(dt.UTC)
        fitted = core.fit(split, problem, params)
        train_seconds = (dt.datetime.now(dt.UTC) - t0).total_seconds()
        evaluation = core.evaluate(fitted, split, problem, config.min_slice_rows)
        metric, higher_better = core.primary_metric(contract.problem_type)

        ts_event = context.instance.get_latest_materialization_event(ts_key)
        ts_meta = ts_event.asset_materialization.metadata if ts_event else {}
        cutoff = ts_meta["cutoff"].value if "cutoff" in ts_meta else "unknown"
        window_start = ts_meta["window_start"].value if "window_start" in ts_meta else "unknown"
        fp = fingerprint(frame, spec.key)

        with tempfile.TemporaryDirectory() as tmp:
            plots = evaluation_plots(fitted, evaluation, problem, Path(tmp))
            plots_md = _png_markdown(plots)
            tags = {
                "dagster.run_id": context.run_id,
                "dagster.run_url": f"{mlflow.dagster_ui_url}/runs/{context.run_id}",
                "dagster.asset_key": key.to_user_string(),
                "training.window": f"{window_start} .. {cutoff}",
                "git.commit": git_commit(),
                "contract.version": contract.version,
                "training_set.fingerprint": fp,
                "features": ",".join(problem.features),
                "problem": problem_tag(problem),
            }
            all_params: dict[str, Any] = {
                **config.model_dump(),
                **split.describe(),
                "cutoff": cutoff,
                "window_start": window_start,
                "best_iteration": fitted.get_best_iteration(),
            }
            metrics = {
                **{f"test_{k}": v for k, v in evaluation.metrics.items()},
                **{f"baseline_{k}": v for k, v in evaluation.baseline.items()},
                **{
                    f"slice_{r['column']}={r['value']}_{metric}": r[metric]
                    for r in evaluation.slices.iter_rows(named=True)
                },
                "train_seconds": train_seconds,
            }
            example = core.to_pool_frame(split.test.head(5), problem)
            logged = mlflow.log_training(
                dataset=contract.name,
                tags=tags,
                params=all_params,
                metrics=metrics,
                model=fitted,
                input_example=example,
                training_set=frame,
                training_set_source=str(lake.path(ts_key, None)),
                fingerprint=fp,
                target=contract.target,
                plots=plots,
                extra_artifacts={"slices.json": evaluation.slices.write_json()},
            )
        mlflow.client().set_model_version_tag(
            contract.name, logged.version, "problem", tags["problem"]
        )

        # --- the promotion gate: challenger and champion on the same held-out rows ----------
        champion_version = mlflow.alias_version(contract.name, CHAMPION)
        champion_metrics = champion_slices = None
        note = ""
        if champion_version is not None:
            champ_problem = problem_from_tag(
                mlflow.version_tags(contract.name, champion_version).get("problem", tags["problem"])
            )
            missing = [f for f in champ_problem.features if f not in split.test.columns]
            if missing:
                note = f" (champion v{champion_version} needs features {missing}: compared to baseline)"
                champion_version = None
            else:
                champ_model = mlflow.load_model(contract.name, champion_version)
                champ_scores = core.predict(champ_model, split.test, champ_problem)
                champion_metrics = core.metrics_for(evaluation.y, champ_scores, problem)
                champion_slices = core.slice_metrics(
                    split.test, evaluation.y, champ_scores, problem, config.min_slice_rows
                )
        decision = decide(
            metric=metric,
            higher_better=higher_better,
            challenger=evaluation.metrics,
            baseline=evaluation.baseline,
            champion=champion_metrics,
            challenger_slices=evaluation.slices,
            champion_slices=champion_slices,
            tolerance=config.tolerance,
            slice_tolerance=config.slice_tolerance,
        )
        decision.reason += note
        numbers = {
            **decision.numbers,
            "champion_version": champion_version or "none",
            "held_out_from": str(split.boundaries[1]),
            "held_out_rows": split.test.height,
        }
        mlflow.record_decision(
            contract.name,
            logged.version,
            "promote" if decision.promote else "reject",
            f"Promotion gate: {'PROMOTE' if decision.promote else 'REJECT'}: {decision.reason}",
            numbers,
        )
        context.log.info(f"promotion gate for v{logged.version}: {decision.reason}")
        return dg.MaterializeResult(
            metadata={
                "model_version": logged.version,
                "registered_model": contract.name,
                "mlflow_run_id": logged.run_id,
                "mlflow_run": dg.MetadataValue.url(logged.run_url),
                "model_uri": logged.model_uri,
                "primary_metric": metric,
                **{f"test_{k}": round(v, 6) for k, v in evaluation.metrics.items()},
                **{f"baseline_{k}": round(v, 6) for k, v in evaluation.baseline.items()},
                "train_seconds": round(train_seconds, 3),
                "best_iteration": fitted.get_best_iteration(),
                "training_set_fingerprint": fp,
                "split": dg.MetadataValue.json(split.describe()),
                "slices": dg.MetadataValue.md(_slices_markdown(evaluation.slices, metric)),
                "plots": dg.MetadataValue.md(plots_md),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=GATE,
                    passed=decision.promote,
                    description=decision.reason,
                    metadata={
                        **{k: v for k, v in numbers.items() if isinstance(v, (int, float, str))},
                        "slice_regressions_list": dg.MetadataValue.json(decision.slice_regressions),
                    },
                )
            ],
        )

    return model


def build_champion_asset(contract: Contract) -> dg.AssetsDefinition:
    """The registry's ``champion`` alias, moved to the challenger that passed the gate."""

    @dg.asset(
        key=champion_key(contract),
        deps=[model_key(contract)],
        group_name=contract.name,
        kinds={"mlflow"},
        tags={"stage": "champion", "dataset": contract.name},
        description=(
            "The model version serving traffic: the registry alias `champion`. Runs only after "
            "the promotion gate passed (a blocking check on the model), and refuses a version "
            "the gate rejected. Roll back with `ml-assets rollback DATASET [VERSION]`."
        ),
    )
    def champion(context: dg.AssetExecutionContext, mlflow: MlflowTracking) -> dg.MaterializeResult:
        version = mlflow.alias_version(contract.name, CHALLENGER)
        if version is None:
            raise dg.Failure(f"{contract.name} has no challenger to promote")
        tags = mlflow.version_tags(contract.name, version)
        if tags.get("promotion.decision") != "promote":
            raise dg.Failure(
                f"{contract.name} v{version} was not cleared by the promotion gate "
                f"(decision: {tags.get('promotion.decision', 'none')})"
            )
        current = mlflow.alias_version(contract.name, CHAMPION)
        if current == version:
            previous = tags.get("promotion.previous_champion", "none")
        else:
            previous = mlflow.promote(contract.name, version) or "none"
            mlflow.client().set_model_version_tag(
                contract.name, version, "promotion.previous_champion", previous
            )
        context.log.info(f"{contract.name} champion: v{version} (was {previous})")
        return dg.MaterializeResult(
            metadata={
                "champion_version": version,
                "previous_champion": previous,
                "model_uri": f"models:/{contract.name}@{CHAMPION}",
                "mlflow_run_id": mlflow.client().get_model_version(contract.name, version).run_id,
                "training_set_fingerprint": tags.get("training_set.fingerprint", ""),
            }
        )

    return champion


def score_frame(model, frame: pl.DataFrame, problem: core.Problem, version: str) -> pl.DataFrame:
    """Predictions for feature rows: probabilities and label, or a value; with model version.

    An empty frame (an empty partition) gets the same columns, typed, and no rows.
    """
    multiclass = problem.problem_type is ProblemType.MULTICLASS
    if frame.height:
        scores = core.predict(model, frame, problem)
    else:
        scores = np.empty((0, len(problem.classes)) if multiclass else 0)
    label_dtype = pl.Series(problem.classes).dtype if problem.classes else pl.Float64()
    out: dict[str, Any] = {}
    if problem.problem_type is ProblemType.REGRESSION:
        out["prediction"] = pl.Series(scores, dtype=pl.Float64)
    elif problem.problem_type is ProblemType.BINARY:
        out["probability"] = pl.Series(scores, dtype=pl.Float64)
        labels = [problem.classes[int(s >= 0.5)] for s in scores]
        out["prediction"] = pl.Series(labels, dtype=label_dtype)
    else:
        for i, c in enumerate(problem.classes):
            out[f"probability_{c}"] = pl.Series(scores[:, i], dtype=pl.Float64)
        labels = [problem.classes[i] for i in np.argmax(scores, axis=1)]
        out["prediction"] = pl.Series(labels, dtype=label_dtype)
    preds = pl.DataFrame(out)
    return pl.concat(
        [frame.select(pl.exclude(problem.features)), preds], how="horizontal"
    ).with_columns(pl.lit(version).alias("model_version"))


def build_predictions_asset(contract: Contract) -> dg.AssetsDefinition:
    """Batch inference: each feature partition scored by the current champion."""
    spec = load_feature_spec(contract)
    pdef = partitions_def(contract)

    @dg.asset(
        key=predictions_key(contract),
        partitions_def=pdef,
        backfill_policy=dg.BackfillPolicy.single_run(),
        io_manager_key=LAKE_IO,
        deps=[features_key(contract), champion_key(contract)],
        group_name=contract.name,
        kinds={"catboost", "polars", "parquet"},
        tags={"stage": "predictions", "dataset": contract.name},
        description=(
            "Every row of the feature table scored by the champion in-process (the fast path "
            "for batch scoring), with the model version and the scoring time."
        ),
    )
    def predictions(
        context: dg.AssetExecutionContext, lake: Lake, mlflow: MlflowTracking
    ) -> dg.MaterializeResult:
        version = mlflow.alias_version(contract.name, CHAMPION)
        if version is None:
            raise dg.Failure(f"{contract.name} has no champion yet: train and promote one first")
        problem = problem_from_tag(mlflow.version_tags(contract.name, version)["problem"])
        model = mlflow.load_model(contract.name, version)
        scored_at = dt.datetime.now(dt.UTC)
        total = 0
        for i, pk in enumerate(context.partition_keys, 1):
            feats = lake.scan(features_key(contract), [pk]).collect()
            keep = [*spec.key, spec.event_time, *problem.features]
            feats = feats.select(keep)
            scored = score_frame(model, feats, problem, version)
            lake.write(
                context.asset_key, pk, scored.with_columns(pl.lit(scored_at).alias("scored_at"))
            )
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


def training_definitions(contract: Contract) -> dg.Definitions:
    """Model, champion and predictions of one dataset (resources: lake, mlflow, lake_io_manager)."""
    return dg.Definitions(
        assets=[
            build_model_asset(contract),
            build_champion_asset(contract),
            build_predictions_asset(contract),
        ]
    )
