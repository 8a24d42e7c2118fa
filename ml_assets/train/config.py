"""The training configuration: one typed definition, editable in the Dagster launchpad.

The same object is the ``model`` asset's run config and what :func:`ml_assets.train.core.fit`
takes, so a hyperparameter has exactly one name and one default.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

NOT_CATBOOST = frozenset(
    {"valid_share", "test_share", "tolerance", "slice_tolerance", "min_slice_rows"}
)
"""The fields that are the split's and the gate's; every other field is a CatBoost parameter."""


class TrainConfig(dg.Config):
    """CatBoost hyperparameters, the time split and the promotion gate's tolerances."""

    iterations: int = 500
    """Most boosting rounds; early stopping usually ends sooner."""
    learning_rate: float = 0.08
    depth: int = 6
    """Depth of each (symmetric) tree."""
    l2_leaf_reg: float = 3.0
    """L2 regularization of leaf values."""
    early_stopping_rounds: int = 50
    """Stop after this many rounds without improvement on the validation set."""
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
            **self.model_dump(exclude=set(NOT_CATBOOST)),
            "allow_writing_files": False,
            "verbose": False,
        }
