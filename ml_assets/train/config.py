"""The training configuration: one typed definition, editable in the Dagster launchpad.

The same object is the ``model`` asset's run config and what :func:`ml_assets.train.core.fit`
takes, so a hyperparameter has exactly one name and one default.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

NOT_CATBOOST = frozenset(
    {"valid_share", "test_share", "tolerance", "slice_tolerance", "min_slice_rows", "params_from"}
)
"""The fields that are the split's and the gate's; every other field is a CatBoost parameter."""

CATEGORICAL_HEAVY = 8
"""From this many categorical features on, an unset learning rate is 0.2 instead of 0.08.
Measured on either side only (3 and 15 categoricals): the exact threshold is a judgement."""

TIME_ORDERED_ROWS = 50_000
"""From this many rows CatBoost fits on (the time split's training part), an unset
``has_time`` is True. Measured on the synthetic 15-categorical data (issue 10): one
permutation instead of four cut a fit's CPU 1.5-1.8x from 35k fitted rows up, for 0.0013-0.0016
held-out ROC AUC (5 seeds; 3 at 98k); at 14k fitted rows it cost 0.007, where a fit takes
seconds anyway. The threshold lies between: a judgement, not a measurement."""

OLD_CATEGORICAL_DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.08,
    "max_ctr_complexity": 4,
    "simple_ctr": None,
    "combinations_ctr": None,
    "has_time": False,
}
"""The defaults before issue 10's categorical speed-up (CatBoost's own CTR settings and random
permutations), as TrainConfig overrides: what ``bench/bench_categorical.py`` and its test
compare against."""


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
    has_time: bool | None = None
    """Compute the categoricals' target statistics in the training rows' own order, which is
    event time (:func:`~ml_assets.train.core.time_split` and the search's folds sort by it;
    ties keep the training set's order, which never depends on the label): each row's
    statistic comes from the labels of earlier events only. False: CatBoost's default, four
    random permutations of the rows (a row's statistic may use later events' labels; neither
    way uses a row's own label). None: True from :data:`TIME_ORDERED_ROWS` fitted rows on
    (see :meth:`catboost_params`)."""
    one_hot_max_size: int | None = None
    """Categoricals with at most this many values are one-hot encoded instead of target
    statistics (None: CatBoost's default). Searched by the model search."""
    border_count: int | None = None
    """Histogram bins per numeric feature (None: CatBoost's default, 254). Searched."""
    random_strength: float | None = None
    """Randomness of split scores against overfitting (None: CatBoost's default, 1). Searched."""
    params_from: str | None = None
    """Take the searched hyperparameters of a model search result (issue 13) instead of the
    fields above: ``latest`` (the dataset's newest finished search) or a search id / result
    version (``v3`` or ``3``). None: this config as it is. The model's run tag
    ``params.source`` says which; the promotion gate still decides."""

    def catboost_params(
        self, categorical_features: int = 0, training_rows: int = 0
    ) -> dict[str, Any]:
        """The estimator's keyword arguments (the loss comes from the problem kind); a field
        set to None is left out, so CatBoost uses its own default for it.

        Two rules on the data's shape, for fields left unset:

        * ``learning_rate`` is 0.2 when the training set has at least
          :data:`CATEGORICAL_HEAVY` categorical features, 0.08 otherwise. Each boosting round
          costs several times more there (target statistics of the categoricals and their
          pairs), and at 0.08 a 140k-row, 15-categorical set had not converged in 500 rounds;
          0.2 came within 0.0015 held-out ROC AUC of it in about half the rounds. On the
          bundled datasets (1-3 categoricals, converging well within 500 rounds at 0.08) 0.2
          cost about 0.8% of RMSE / macro F1, so they keep 0.08.
        * ``has_time`` is True when CatBoost fits on at least :data:`TIME_ORDERED_ROWS` rows
          (``training_rows``), False below: one permutation of the rows instead of four,
          where the fit's time is the problem.

        The measurements: BENCHMARKS.md, "Categorical-heavy training".
        """
        fields = self.model_dump(exclude=set(NOT_CATBOOST))
        if fields["learning_rate"] is None:
            heavy = categorical_features >= CATEGORICAL_HEAVY
            fields["learning_rate"] = 0.2 if heavy else 0.08
        if fields["has_time"] is None:
            fields["has_time"] = training_rows >= TIME_ORDERED_ROWS
        return {
            **{k: v for k, v in fields.items() if v is not None},
            "allow_writing_files": False,
            "verbose": False,
        }


FAMILIES = ("catboost",)
"""The model families a search may use. LightGBM and XGBoost were judged not worth their
weight (README, "Model search"): CatBoost handles categoricals natively and is the one model
format the registry, the Bento and the server know."""


class SearchConfig(dg.Config):
    """A model search's budget, folds, parallelism and search space (``<dataset>/model_search``).

    Each range is ``[low, high]`` (inclusive; ``low == high`` fixes the value). Every setting is
    checked by :func:`ml_assets.train.search.check_search_config` before anything is tracked.
    """

    n_trials: int = 30
    """Most trials, counting those a resumed search already finished (complete or pruned)."""
    timeout_s: float = 600.0
    """Wall-time budget of the trials: no trial starts after it (the search ends within it
    plus one trial)."""
    folds: int = 3
    """Expanding-window folds over the training set's event time (each trial, and the default
    config, is scored on the same folds)."""
    seed: int = 42
    """Seeds the sampler; with ``parallel = 1`` the same seed, data and trial count give the
    same best config."""
    parallel: int = 1
    """Trials run at once (threads); each model gets ``cores // parallel`` threads, so model
    threads times parallel trials never exceed the cores."""
    model_family: str = "catboost"
    """One of :data:`FAMILIES`."""
    iterations: int | None = None
    """Most boosting rounds of a trial's fit (early stopping ends sooner); None: the training
    config's ``iterations``."""
    depth: list[int] = [4, 8]
    learning_rate: list[float] = [0.02, 0.3]
    """Sampled on a log scale."""
    l2_leaf_reg: list[float] = [1.0, 30.0]
    """Sampled on a log scale."""
    one_hot_max_size: list[int] = [2, 16]
    border_count: list[int] = [32, 254]
    random_strength: list[float] = [0.1, 10.0]
    """Sampled on a log scale."""
    study_name: str | None = None
    """The Optuna study (and ``search.id``); None: derived from the dataset, the training set's
    fingerprint and every setting that changes what a trial means, so the same search resumes
    and a different one starts afresh."""
    resume: bool = True
    """Continue a stored study of the same name (False: delete it and start again)."""
