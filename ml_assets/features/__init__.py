"""Features declared once per dataset: offline feature tables, training sets, online store.

Importing this package (and :mod:`ml_assets.features.online`) does not import Dagster: the
inference service uses :func:`load_feature_spec`, :class:`OnlineClient` and
:func:`online_features` alone. The Dagster side is :mod:`ml_assets.features.assets`.
"""

from ml_assets.features.compute import build_training_set, compute_features, fingerprint
from ml_assets.features.online import OnlineClient, online_features
from ml_assets.features.spec import FeatureSpec, FeatureSpecError, load_feature_spec

__all__ = [
    "FeatureSpec",
    "FeatureSpecError",
    "OnlineClient",
    "build_training_set",
    "compute_features",
    "fingerprint",
    "load_feature_spec",
    "online_features",
]
