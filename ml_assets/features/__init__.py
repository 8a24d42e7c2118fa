"""Features declared once per dataset: offline feature tables, training sets, online store.

Importing this package (and :mod:`ml_assets.features.online`) does not import Dagster: the
inference service uses :func:`load_feature_spec`, :class:`OnlineClient` and
:func:`online_features` alone.

The modules: ``declarations`` (the features file's YAML schema), ``contract_fit`` (does a file
fit its contract), ``spec`` (:class:`FeatureSpec` and loading); ``compute`` (row transforms,
the feature table), ``windows`` (trailing-window aggregates, the store snapshot),
``training_set`` (training sets, fingerprints); ``online_store`` (store layout and writer),
``online_client`` (:class:`OnlineClient`), ``online`` (the serving-side feature path);
``parity`` (offline vs online). The Dagster side, the only modules importing Dagster:
``offline`` (reading the lake for features, training sets and snapshots) and ``assets``.
"""

from ml_assets.features.compute import (
    build_training_set,
    compute_features,
    compute_training_set,
    fingerprint,
)
from ml_assets.features.online import OnlineClient, online_features
from ml_assets.features.spec import FeatureSpec, FeatureSpecError, load_feature_spec

__all__ = [
    "FeatureSpec",
    "FeatureSpecError",
    "OnlineClient",
    "build_training_set",
    "compute_features",
    "compute_training_set",
    "fingerprint",
    "load_feature_spec",
    "online_features",
]
