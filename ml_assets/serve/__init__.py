"""Serving: the champion as a Bento with HTTP and gRPC, contract-generated validation, a
prediction log.

Importing this package is cheap and pulls in neither Dagster nor MLflow (the service imports
it). The Dagster side is :func:`serving_definitions` (built on demand); the reader of the
prediction log is :func:`read_prediction_log`.
"""

from typing import TYPE_CHECKING

from ml_assets.serve.prediction_log import read_prediction_log

if TYPE_CHECKING:
    import dagster as dg

    from ml_assets.contracts.model import Contract


def serving_definitions(contract: "Contract") -> "dg.Definitions":
    """The dataset's ``bento`` asset. Resources needed (not included): ``mlflow``
    (:class:`~ml_assets.registry.tracking.MlflowTracking`) and ``bento_builder``
    (:class:`ml_assets.serve.assets.BentoBuilder`)."""
    from ml_assets.serve.assets import serving_definitions as build

    return build(contract)


__all__ = ["read_prediction_log", "serving_definitions"]
