"""The Dagster code location: every contract's assets, checks, jobs and resources.

Loading this module reads the contracts (``ML_ASSETS_CONTRACTS``: a folder of YAML files; the
bundled demo contracts by default) and generates the assets from them. It imports no heavy ML
library, so ``dagster dev`` starts fast.
"""

from __future__ import annotations

import os
import warnings

import dagster as dg

from ml_assets import settings
from ml_assets.contracts import Contract, load_contracts
from ml_assets.ingest.assets import LAKE_IO, SqlSource, build_raw_asset
from ml_assets.partitions import partitions_def
from ml_assets.storage import Lake, LakeIOManager
from ml_assets.validate.assets import build_validated_assets, freshness_checks

# BackfillPolicy and partitioned freshness checks are marked beta; we rely on them knowingly.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.SupersessionWarning)


def pipeline_job_name(contract: Contract) -> str:
    return f"{contract.name}_pipeline"


def dataset_definitions(contract: Contract) -> dg.Definitions:
    """Assets, checks and the end-to-end job of one dataset, all generated from its contract."""
    assets: list[dg.AssetsDefinition] = []
    for role in contract.tables:
        assets.append(build_raw_asset(contract, role))
        assets.append(build_validated_assets(contract, role))
    job = dg.define_asset_job(
        pipeline_job_name(contract),
        selection=dg.AssetSelection.groups(contract.name),
        partitions_def=partitions_def(contract),
        description=f"Everything of {contract.name}, from the SQL source on.",
    )
    return dg.Definitions(assets=assets, asset_checks=freshness_checks(contract), jobs=[job])


def resources() -> dict[str, object]:
    lake = Lake(base_path=os.environ.get("ML_ASSETS_LAKE", str(settings.home() / "lake")))
    return {
        "lake": lake,
        LAKE_IO: LakeIOManager(lake=lake),
        "source": SqlSource(url=os.environ.get("ML_ASSETS_SOURCE_URL_OVERRIDE") or None),
    }


def build_definitions(contracts: dict[str, Contract] | None = None) -> dg.Definitions:
    contracts = contracts or load_contracts(os.environ.get("ML_ASSETS_CONTRACTS") or None)
    per_dataset = [dataset_definitions(c) for c in contracts.values()]
    freshness_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=[c for d in per_dataset for c in (d.asset_checks or [])],
        name="freshness_checks_sensor",
    )
    return dg.Definitions.merge(
        *per_dataset, dg.Definitions(sensors=[freshness_sensor], resources=resources())
    )


defs = build_definitions()
