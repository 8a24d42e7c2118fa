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

CATEGORICAL_HEAVY = 8
"""From this many categorical features on, an unset learning rate is 0.2 instead of 0.08.
Measured on either side only (3 and 15 categoricals): the exact threshold is a judgement."""

OLD_CATEGORICAL_DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.08,
    "max_ctr_complexity": 4,
    "simple_ctr": None,
    "combinations_ctr": None,
}
"""The defaults before issue 10's categorical speed-up (CatBoost's own CTR settings), as
TrainConfig overrides: what ``bench/bench_categorical.py`` and its test compare against."""


class TrainConfig(dg.Config):
    """CatBoost hyperparameters, the time split and the promotion gate's tolerances."""

    iterations: int = 500
    """Most boosting rounds; early stopping usually ends sooner."""
    learning_rate: float | None = None
    """None: 0.08, or 0.2 on categorical-heavy data (see :meth:`catboost_params`)."""
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
    max_ctr_complexity: int = 2
    """Most categorical features CatBoost combines into one feature (CatBoost's default is 4).
    Each tree tries combining every categorical it splits on with every other one, computing
    the combination's target statistics over all training rows: with many categoricals that
    was most of the training time (issue 10: minutes for 140k rows x 15 categoricals). Pairs
    keep the interactions that matter (1, no combinations, lost 0.018 ROC AUC there)."""
    simple_ctr: list[str] | None = ["Borders:Prior=0.5/1", "Counter"]
    """Target statistics per categorical feature: the smoothed target mean with one prior,
    and the value's frequency. CatBoost's default (None) computes the mean with three priors,
    four statistics a feature, each one more column to score at every split."""
    combinations_ctr: list[str] | None = ["Borders:Prior=0.5/1"]
    """Target statistics per combination of categoricals: the smoothed target mean with one
    prior (CatBoost's default, None, adds two more priors and a frequency)."""

    def catboost_params(self, categorical_features: int = 0) -> dict[str, Any]:
        """The estimator's keyword arguments (the loss comes from the problem kind); a field
        set to None is left out, so CatBoost uses its own default for it.

        The one rule on the data's shape: an unset ``learning_rate`` is 0.2 when the training
        set has at least :data:`CATEGORICAL_HEAVY` categorical features, 0.08 otherwise. Each
        boosting round costs several times more there (target statistics of the categoricals
        and their pairs), and at 0.08 a 140k-row, 15-categorical set had not converged in 500
        rounds; 0.2 came within 0.0015 held-out ROC AUC of it in about half the rounds. On the
        bundled datasets (1-3 categoricals, converging well within 500 rounds at 0.08) 0.2 cost
        about 0.8% of RMSE / macro F1, so they keep 0.08 (BENCHMARKS.md, "Categorical-heavy
        training").
        """
        fields = self.model_dump(exclude=set(NOT_CATBOOST))
        if fields["learning_rate"] is None:
            heavy = categorical_features >= CATEGORICAL_HEAVY
            fields["learning_rate"] = 0.2 if heavy else 0.08
        return {
            **{k: v for k, v in fields.items() if v is not None},
            "allow_writing_files": False,
            "verbose": False,
        }
