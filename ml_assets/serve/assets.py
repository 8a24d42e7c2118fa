"""The ``bento`` asset: a Bento built from the current champion, rebuilt when it changes.

Thin wiring over :mod:`ml_assets.serve.bento`. Resources: ``mlflow``
(:class:`~ml_assets.registry.tracking.MlflowTracking`) and ``bento_builder``
(:class:`BentoBuilder`).
"""

import tempfile
from pathlib import Path

import dagster as dg

from ml_assets import settings
from ml_assets.dataset import Dataset
from ml_assets.registry.tracking import CHAMPION, MlflowTracking
from ml_assets.serve.bento import (
    build_bento,
    default_home,
    default_service_dir,
    export_bento,
    stage_champion,
)
from ml_assets.serve.config import DEFAULT_GRPC_PORT, ServeConfig

BENTO_BUILDER = "bento_builder"


class BentoBuilder(dg.ConfigurableResource):
    """Where Bentos are built and what the served service is told.

    ``home`` is ``BENTOML_HOME`` (default ``$ML_ASSETS_HOME/bentoml``); ``service_dir`` the
    folder with ``service.py`` and ``predictor.proto`` (default: the repository's ``bentos/``).
    """

    home: str | None = None
    service_dir: str | None = None
    grpc_port: int = DEFAULT_GRPC_PORT
    workers: int = 1
    isolate_network: bool = False
    """Build in an empty network namespace (``unshare -rn``): proof the build is offline."""

    def resolved_home(self) -> Path:
        return Path(self.home) if self.home else default_home()

    def resolved_service_dir(self) -> Path:
        return Path(self.service_dir) if self.service_dir else default_service_dir()


def build_bento_asset(dataset: Dataset) -> dg.AssetsDefinition:
    """The dataset's ``bento`` asset."""
    contract = dataset.contract

    @dg.asset(
        key=dataset.keys.bento,
        deps=[dataset.keys.champion],
        **dataset.asset_args("serving"),
        kinds={"bentoml", "catboost"},
        automation_condition=dg.AutomationCondition.eager(),
        description=(
            f"A Bento serving the `{contract.name}` champion over HTTP and gRPC: the champion "
            "imported into the BentoML model store (labels link it to the registered model "
            "version, the MLflow run, the Dagster run and the contract), and the service of "
            "`bentos/` built around it, offline and CPU only. Rebuilt whenever the champion "
            "changes."
        ),
    )
    def bento(
        context: dg.AssetExecutionContext, mlflow: MlflowTracking, bento_builder: BentoBuilder
    ) -> dg.MaterializeResult:
        with tempfile.TemporaryDirectory(prefix=f"{contract.name}-champion-") as tmp:
            try:
                staged = stage_champion(
                    mlflow,
                    contract.name,
                    Path(tmp),
                    alias=CHAMPION,
                    dagster_run_id=context.run.run_id,
                    contract_version=contract.version,
                )
            except LookupError as exc:
                raise dg.Failure(str(exc)) from exc
            built = build_bento(
                staged,
                spec=dataset.spec,
                home=bento_builder.resolved_home(),
                service_dir=bento_builder.resolved_service_dir(),
                config=ServeConfig(
                    dataset=contract.name,
                    grpc_port=bento_builder.grpc_port,
                    workers=bento_builder.workers,
                ),
                isolate_network=bento_builder.isolate_network,
            )
        store = settings.current().bento_store
        exported = export_bento(built, store, contract.name) if store else None
        if exported:
            context.log.info(f"exported {built.bento_tag} to {exported}")
        context.log.info(
            f"built {built.bento_tag} serving {contract.name} v{built.model_version} "
            f"({'reused' if built.reused_model else 'imported'} model {built.model_tag}; "
            f"{'existing' if built.reused_bento else 'new'} Bento)"
        )
        return dg.MaterializeResult(
            metadata={
                "model_version": built.model_version,
                "registered_model": contract.name,
                "mlflow_run_id": staged.run_id,
                "bento_tag": built.bento_tag,
                "bentoml_model_tag": built.model_tag,
                "reused_existing_bento": built.reused_bento,
                "bentoml_home": str(built.home),
                "bento_path": dg.MetadataValue.path(str(built.path)),
                "serve_command": dg.MetadataValue.text(built.serve_command),
                "grpc_port": bento_builder.grpc_port,
                "build_seconds": round(built.seconds, 2),
                **({"bento_export": dg.MetadataValue.url(exported)} if exported else {}),
            }
        )

    return bento


def prediction_log_spec(dataset: Dataset) -> dg.AssetSpec:
    """The prediction log as an external asset: the served Bento writes it, monitoring reads
    it, so the lineage graph shows Bento -> prediction log -> monitoring."""
    from ml_assets import settings

    return dg.AssetSpec(
        dataset.keys.prediction_log,
        deps=[dataset.keys.bento],
        description=(
            f"Every prediction the {dataset.name} service answered (HTTP and gRPC): inputs, "
            "outputs, model version, request id and latency, as Parquet segments in "
            "date=YYYY-MM-DD folders. Written by `bentoml serve`, not by a Dagster run; the "
            "monitoring partitions read it by the event time of each row."
        ),
        kinds={"bentoml", "parquet"},
        metadata={
            "path": dg.MetadataValue.path(
                str(settings.current().prediction_log_path / dataset.name)
            )
        },
        **dataset.asset_args("prediction_log", executed=False),
    )


def serving_definitions(dataset: Dataset) -> dg.Definitions:
    """The dataset's ``bento`` asset (resources needed: ``mlflow``, ``bento_builder``) and the
    prediction log its service writes."""
    return dg.Definitions(assets=[build_bento_asset(dataset), prediction_log_spec(dataset)])
