"""Features declared once per dataset: offline feature tables, training sets, online store.

Importing this package (and :mod:`ml_assets.features.online`) does not import Dagster: the
inference service uses :func:`load_feature_spec`, :class:`OnlineClient` and
:func:`online_features` alone. :func:`feature_definitions` builds the Dagster side on demand.

The modules: ``declarations`` (the features file's YAML schema), ``contract_fit`` (does a file
fit its contract), ``spec`` (:class:`FeatureSpec` and loading); ``compute`` (row transforms,
the feature table), ``windows`` (trailing-window aggregates, the store snapshot),
``training_set`` (training sets, fingerprints); ``online_store`` (store layout and writer),
``online_client`` (:class:`OnlineClient`), ``online`` (the serving-side feature path);
``parity`` (offline vs online); ``assets`` (the Dagster side, the only one importing Dagster).
"""

from typing import TYPE_CHECKING

from ml_assets.features.compute import build_training_set, compute_features, fingerprint
from ml_assets.features.online import OnlineClient, online_features
from ml_assets.features.spec import FeatureSpec, FeatureSpecError, load_feature_spec

if TYPE_CHECKING:
    import dagster as dg

    from ml_assets.contracts.model import Contract


def feature_definitions(contract: "Contract") -> "dg.Definitions":
    """The dataset's feature table, training set and online-store assets with their checks.

    Resources needed (not included): ``lake``, ``lake_io_manager`` and ``online_store``
    (:class:`ml_assets.features.assets.OnlineStore`).
    """
    from ml_assets.features.assets import build_feature_definitions

    return build_feature_definitions(contract)


__all__ = [
    "FeatureSpec",
    "FeatureSpecError",
    "OnlineClient",
    "build_training_set",
    "compute_features",
    "feature_definitions",
    "fingerprint",
    "load_feature_spec",
    "online_features",
]
