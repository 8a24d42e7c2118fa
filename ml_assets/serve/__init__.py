"""Serving: the champion as a Bento with HTTP and gRPC, contract-generated validation, a
prediction log.

Importing this package is cheap and pulls in neither Dagster nor MLflow (the service imports
it). The Dagster side is :mod:`ml_assets.serve.assets`; the reader of the prediction log is
:func:`read_prediction_log`.
"""

from ml_assets.serve.prediction_log import read_prediction_log

__all__ = ["read_prediction_log"]
