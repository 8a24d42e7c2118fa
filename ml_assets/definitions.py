"""The Dagster code location: every contract's assets, checks, jobs and resources.

Loading this module reads the contracts (``ML_ASSETS_CONTRACTS``: a folder of YAML files; the
bundled demo contracts by default) and generates the assets from them. It imports no heavy ML
library, so ``dagster dev`` starts fast.
"""

from __future__ import annotations

import warnings

import dagster as dg

from ml_assets import settings
from ml_assets.contracts import Contract, load_contracts
from ml_assets.features import feature_definitions, load_feature_spec
from ml_assets.features.assets import OnlineStore, features_key, online_key, training_set_key
from ml_assets.ingest.assets import LAKE_IO, SqlSource, build_raw_asset
from ml_assets.registry.tracking import MlflowTracking
from ml_assets.serve.assets import BentoBuilder, bento_key, serving_definitions
from ml_assets.storage import Lake, LakeIOManager
from ml_assets.train.assets import champion_key, model_key, predictions_key, training_definitions
from ml_assets.validate.assets import build_validated_assets, freshness_checks

# BackfillPolicy and partitioned freshness checks are marked beta; we rely on them knowingly.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.SupersessionWarning)


def pipeline_job_name(contract: Contract) -> str:
    return f"{contract.name}_pipeline"


def train_job_name(contract: Contract) -> str:
    return f"{contract.name}_train"


def score_job_name(contract: Contract) -> str:
    return f"{contract.name}_score"


def dataset_definitions(contract: Contract) -> dg.Definitions:
    """Assets, checks and jobs of one dataset, all generated from its contract (and features).

    Three jobs, in pipeline order: ``<name>_pipeline`` (partitioned: SQL to validated data and
    the feature table), ``<name>_train`` (training set, online store, model, champion) and
    ``<name>_score`` (partitioned batch predictions by the champion).
    """
    ingest: list[dg.AssetsDefinition] = []
    for role in contract.tables:
        ingest.append(build_raw_asset(contract, role))
        ingest.append(build_validated_assets(contract, role))
    train = [
        training_set_key(contract),
        model_key(contract),
        champion_key(contract),
        bento_key(contract),
    ]
    if load_feature_spec(contract).aggregates:
        train.append(online_key(contract))
    jobs = [
        dg.define_asset_job(
            pipeline_job_name(contract),
            selection=dg.AssetSelection.assets(*ingest, features_key(contract)),
            description=f"{contract.name} from the SQL source to validated data and features.",
        ),
        dg.define_asset_job(
            train_job_name(contract),
            selection=dg.AssetSelection.assets(*train),
            description=f"Training set, online store, model, champion and Bento of {contract.name}.",
        ),
        dg.define_asset_job(
            score_job_name(contract),
            selection=dg.AssetSelection.assets(predictions_key(contract)),
            description=f"Batch predictions of {contract.name} by its champion.",
        ),
    ]
    return dg.Definitions.merge(
        dg.Definitions(assets=ingest, asset_checks=freshness_checks(contract), jobs=jobs),
        feature_definitions(contract),
        training_definitions(contract),
        serving_definitions(contract),
    )


def resources() -> dict[str, object]:
    s = settings.current()
    lake = Lake(base_path=s.lake_path)
    return {
        "lake": lake,
        LAKE_IO: LakeIOManager(lake=lake),
        "source": SqlSource(url=s.source_url_override),
        "online_store": OnlineStore(),
        "mlflow": MlflowTracking(),
        "bento_builder": BentoBuilder(),
    }


def build_definitions(contracts: dict[str, Contract] | None = None) -> dg.Definitions:
    contracts = contracts or load_contracts(settings.current().contracts_path)
    per_dataset = [dataset_definitions(c) for c in contracts.values()]
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
    return dg.Definitions.merge(
        *per_dataset,
        dg.Definitions(sensors=[freshness_sensor, automation_sensor], resources=resources()),
    )


defs = build_definitions()
