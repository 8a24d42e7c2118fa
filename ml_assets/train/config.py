"""The training configuration: one typed definition, editable in the Dagster launchpad.

The same object is the ``model`` asset's run config and what :func:`ml_assets.train.core.fit`
takes, so a hyperparameter has exactly one name and one default.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

CATBOOST_PARAMS = (
    "iterations",
    "learning_rate",
    "depth",
    "l2_leaf_reg",
    "early_stopping_rounds",
    "random_seed",
    "thread_count",
)
"""The fields that are CatBoost's own parameters (the rest are the split's and the gate's)."""


class TrainConfig(dg.Config):
    """CatBoost hyperparameters, the time split and the promotion gate's tolerances."""

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

    def catboost_params(self) -> dict[str, Any]:
        """The estimator's keyword arguments (the loss comes from the problem kind)."""
        return {
            **self.model_dump(include=set(CATBOOST_PARAMS)),
            "allow_writing_files": False,
            "verbose": False,
        }
