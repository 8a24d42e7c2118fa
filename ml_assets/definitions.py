"""The Dagster code location: every dataset's assets, checks, jobs and resources.

Loading this module reads the contracts folder in effect (:mod:`ml_assets.settings`:
``ML_ASSETS_CONTRACTS``, the bundled demo contracts by default), builds one
:class:`~ml_assets.dataset.Dataset` per contract and hands it to each stage's builder. It
imports no heavy ML library, so ``dagster dev`` starts fast.
"""

from __future__ import annotations

import warnings

import dagster as dg

from ml_assets import settings
from ml_assets.dataset import Dataset, load_datasets
from ml_assets.execution import executor
from ml_assets.features.assets import OnlineStore, build_feature_definitions
from ml_assets.ingest.assets import SqlSource, build_raw_asset
from ml_assets.monitor.assets import monitoring_definitions
from ml_assets.monitor.sensors import build_late_labels_sensor, build_retrain_sensor
from ml_assets.registry.tracking import MlflowTracking
from ml_assets.serve.assets import BentoBuilder, serving_definitions
from ml_assets.storage import LAKE_IO, Lake, LakeIOManager
from ml_assets.train.assets import training_definitions
from ml_assets.validate.assets import build_validated_assets, freshness_checks

# Dagster features used knowingly, each silenced by its own message (nothing else is):
# single-run backfills (a partition range as one run) and a features lookback that may reach
# before the first partition are beta; the per-partition freshness checks and their sensor are
# superseded by FreshnessPolicy, which does not yet express a deadline per time partition;
# partitioned asset checks (one monitoring verdict per partition) are a preview.
for _message in (
    r"Specifying a partitions_def on an AssetCheckSpec is currently in preview",
    r"Parameter `backfill_policy` of function `asset` is currently in beta",
    r"Parameter `allow_nonexistent_upstream_partitions` of initializer "
    r"`TimeWindowPartitionMapping.__init__` is currently in beta",
    r"Function `build_time_partition_freshness_checks` is superseded",
    r"Function `build_sensor_for_freshness_checks` is superseded",
):
    warnings.filterwarnings("ignore", message=_message)


def dataset_definitions(dataset: Dataset) -> dg.Definitions:
    """Assets, checks and jobs of one dataset, all generated from its contract (and features).

    Three jobs, in pipeline order: ``<name>_pipeline`` (partitioned: SQL to validated data and
    the feature table), ``<name>_train`` (training set, online store, model, champion, Bento)
    and ``<name>_score`` (partitioned batch predictions by the champion); beside them the
    monitoring jobs and ``<name>_model_search`` (the opt-in hyperparameter search, never part
    of the train job).
    """
    keys, jobs, name = dataset.keys, dataset.jobs, dataset.name
    ingest: list[dg.AssetsDefinition] = []
    for role in dataset.tables:
        ingest.append(build_raw_asset(dataset, role))
        ingest.append(build_validated_assets(dataset, role))
    train = [keys.training_set, keys.model, keys.champion, keys.reference, keys.bento]
    if dataset.spec.aggregates:
        train.append(keys.online)
    job_defs = [
        dg.define_asset_job(
            jobs.pipeline,
            tags=dataset.run_tags("ingest"),
            selection=dg.AssetSelection.assets(*ingest, keys.features),
            description=f"{name} from the SQL source to validated data and features.",
        ),
        dg.define_asset_job(
            jobs.train,
            tags=dataset.run_tags("train"),
            selection=dg.AssetSelection.assets(*train),
            description=f"Training set, online store, model, champion and Bento of {name}.",
        ),
        dg.define_asset_job(
            jobs.score,
            tags=dataset.run_tags("score"),
            selection=dg.AssetSelection.assets(keys.predictions),
            description=f"Batch predictions of {name} by its champion.",
        ),
        dg.define_asset_job(
            jobs.monitor,
            tags=dataset.run_tags("monitor"),
            selection=dg.AssetSelection.assets(keys.monitoring),
            description=f"NannyML monitoring of {name}, one partition per run.",
        ),
        dg.define_asset_job(
            jobs.search,
            tags=dataset.run_tags("search"),
            selection=dg.AssetSelection.assets(keys.model_search),
            description=(
                f"The model search of {name}: a budgeted hyperparameter search on the training "
                "set (opt-in: training uses its result only with `params_from`)."
            ),
        ),
        dg.define_asset_job(
            jobs.monitoring_summary,
            tags=dataset.run_tags("monitor"),
            selection=dg.AssetSelection.assets(keys.monitoring_summary),
            description=f"The monitoring summary of {name}: every monitored partition over time.",
        ),
    ]
    return dg.Definitions.merge(
        dg.Definitions(assets=ingest, asset_checks=freshness_checks(dataset), jobs=job_defs),
        build_feature_definitions(dataset),
        training_definitions(dataset),
        serving_definitions(dataset),
        monitoring_definitions(dataset),
    )


def resources(s: settings.Settings | None = None) -> dict[str, object]:
    """The resources every dataset's assets use, configured from the settings."""
    s = s or settings.current()
    lake = Lake(base_path=s.lake_path)
    return {
        "lake": lake,
        LAKE_IO: LakeIOManager(lake=lake),
        "source": SqlSource(url=s.source_url_override),
        "online_store": OnlineStore(),
        "mlflow": MlflowTracking(),
        "bento_builder": BentoBuilder(),
    }


def build_definitions(datasets: dict[str, Dataset] | None = None) -> dg.Definitions:
    datasets = datasets or load_datasets()
    per_dataset = [dataset_definitions(d) for d in datasets.values()]
    freshness_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=[c for d in per_dataset for c in (d.asset_checks or [])],
        name="freshness_checks_sensor",
    )
    # Runs the assets' automation conditions (validated follows raw, the online store follows
    # the features, the Bento follows the champion) whenever the daemon runs (`dagster dev`).
    automation_sensor = dg.AutomationConditionSensorDefinition(
        "automation_sensor",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    # One retrain sensor per dataset: a sustained performance incident in the monitoring
    # results launches the dataset's train job, once per incident.
    retrain_sensors = [build_retrain_sensor(d) for d in datasets.values()]
    # And one late-labels sensor: a label batch re-monitors the realized performance of the
    # partitions it labels, and nothing else.
    late_labels_sensors = [build_late_labels_sensor(d) for d in datasets.values()]
    return dg.Definitions.merge(
        *per_dataset,
        dg.Definitions(
            sensors=[freshness_sensor, automation_sensor, *retrain_sensors, *late_labels_sensors],
            resources=resources(),
            executor=executor(),
        ),
    )


defs = build_definitions()
