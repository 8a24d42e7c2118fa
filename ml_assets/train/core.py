"""Training, pure and deterministic: time-based splits, CatBoost fitting, evaluation.

Polars in, polars (or plain dicts) out. CatBoost is imported inside the functions that need it,
so loading the Dagster definitions stays fast.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ml_assets.contracts.model import ProblemType

# A column whose polars type is one of these is a categorical feature for CatBoost.
CATEGORICAL_DTYPES = (pl.String, pl.Categorical, pl.Enum, pl.Boolean)


class TrainingDataError(ValueError):
    """A training set that cannot give a meaningful model; raised before anything is logged."""


@dataclass(frozen=True)
class Split:
    """Train / validation / test rows, consecutive in time, never overlapping."""

    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame
    boundaries: tuple[dt.datetime, dt.datetime]

    def describe(self) -> dict[str, Any]:
        return {
            "train_rows": self.train.height,
            "valid_rows": self.valid.height,
            "test_rows": self.test.height,
            "valid_from": str(self.boundaries[0]),
            "test_from": str(self.boundaries[1]),
        }


@dataclass
class Problem:
    """What to learn: the target, the features and their kinds, the problem type."""

    problem_type: ProblemType
    target: str
    features: list[str]
    categorical: list[str]
    event_time: str
    classes: list[Any] = field(default_factory=list)

    @classmethod
    def from_frame(
        cls,
        frame: pl.DataFrame,
        problem_type: ProblemType,
        target: str,
        features: list[str],
        event_time: str,
    ) -> Problem:
        categorical = [f for f in features if isinstance(frame.schema[f], CATEGORICAL_DTYPES)]
        classes: list[Any] = []
        if problem_type is not ProblemType.REGRESSION:
            classes = sorted(frame.get_column(target).drop_nulls().unique().to_list())
        return cls(problem_type, target, features, categorical, event_time, classes)


def check_training_frame(frame: pl.DataFrame, target: str, problem_type: ProblemType) -> None:
    """Refuse data that cannot train a model, with a message saying what is wrong."""
    if frame.height == 0:
        raise TrainingDataError("the training set is empty: no labelled rows before the cutoff")
    if target not in frame.columns:
        raise TrainingDataError(f"the training set has no target column {target!r}")
    nulls = frame.get_column(target).null_count()
    if nulls:
        raise TrainingDataError(f"target {target!r} has {nulls} null values")
    if problem_type is not ProblemType.REGRESSION:
        n_classes = frame.get_column(target).n_unique()
        if n_classes < 2:
            only = frame.get_column(target).unique().to_list()
            raise TrainingDataError(
                f"target {target!r} has a single class {only}: a classifier needs two or more"
            )
    elif frame.get_column(target).cast(pl.Float64).std() in (0.0, None):
        raise TrainingDataError(f"target {target!r} is constant: nothing to learn")


def time_split(
    frame: pl.DataFrame, event_time: str, valid_share: float = 0.15, test_share: float = 0.15
) -> Split:
    """Split by event time: the oldest rows train, the next validate, the newest test.

    Boundaries are timestamps, so rows sharing a timestamp never straddle two sets.
    """
    ordered = frame.sort(event_time, maintain_order=True)
    times = ordered.get_column(event_time)
    n = ordered.height
    valid_from = times[min(n - 1, int(n * (1 - valid_share - test_share)))]
    test_from = times[min(n - 1, int(n * (1 - test_share)))]
    train = ordered.filter(pl.col(event_time) < valid_from)
    valid = ordered.filter((pl.col(event_time) >= valid_from) & (pl.col(event_time) < test_from))
    test = ordered.filter(pl.col(event_time) >= test_from)
    for name, part in (("train", train), ("validation", valid), ("test", test)):
        if part.height == 0:
            raise TrainingDataError(
                f"the time split leaves the {name} set empty ({n} rows): widen the window"
            )
    return Split(train, valid, test, (valid_from, test_from))


def to_pool_frame(frame: pl.DataFrame, problem: Problem):
    """Features as CatBoost wants them: categoricals as text with a placeholder for missing."""
    exprs = []
    for f in problem.features:
        if f in problem.categorical:
            exprs.append(pl.col(f).cast(pl.String).fill_null("__missing__"))
        else:
            exprs.append(pl.col(f).cast(pl.Float64))
    return frame.select(exprs).to_pandas()


def _labels(frame: pl.DataFrame, problem: Problem) -> np.ndarray:
    y = frame.get_column(problem.target)
    if problem.problem_type is ProblemType.REGRESSION:
        return y.cast(pl.Float64).to_numpy()
    # Class indices in sorted class order: stable across runs and across train/test.
    index = {c: i for i, c in enumerate(problem.classes)}
    return np.array([index[v] for v in y.to_list()], dtype=np.int64)


@dataclass(frozen=True)
class TrainParams:
    iterations: int = 500
    learning_rate: float = 0.08
    depth: int = 6
    l2_leaf_reg: float = 3.0
    early_stopping_rounds: int = 50
    random_seed: int = 42
    thread_count: int = 2


def fit(split: Split, problem: Problem, params: TrainParams):
    """Fit CatBoost with early stopping on the validation set. Same inputs, same model."""
    from catboost import CatBoostClassifier, CatBoostRegressor, Pool

    common = {
        "iterations": params.iterations,
        "learning_rate": params.learning_rate,
        "depth": params.depth,
        "l2_leaf_reg": params.l2_leaf_reg,
        "random_seed": params.random_seed,
        "thread_count": params.thread_count,
        "early_stopping_rounds": params.early_stopping_rounds,
        "allow_writing_files": False,
        "verbose": False,
    }
    if problem.problem_type is ProblemType.REGRESSION:
        model = CatBoostRegressor(loss_function="RMSE", **common)
    elif problem.problem_type is ProblemType.BINARY:
        model = CatBoostClassifier(loss_function="Logloss", **common)
    else:
        model = CatBoostClassifier(loss_function="MultiClass", **common)
    train = Pool(
        to_pool_frame(split.train, problem),
        _labels(split.train, problem),
        cat_features=problem.categorical,
    )
    valid = Pool(
        to_pool_frame(split.valid, problem),
        _labels(split.valid, problem),
        cat_features=problem.categorical,
    )
    model.fit(train, eval_set=valid, use_best_model=True)
    return model


def predict(model, frame: pl.DataFrame, problem: Problem) -> np.ndarray:
    """Scores: P(positive) for binary, class probabilities for multiclass, values for regression."""
    x = to_pool_frame(frame, problem)
    if problem.problem_type is ProblemType.REGRESSION:
        return np.asarray(model.predict(x), dtype=np.float64)
    proba = np.asarray(model.predict_proba(x), dtype=np.float64)
    return proba[:, 1] if problem.problem_type is ProblemType.BINARY else proba


# --- metrics ----------------------------------------------------------------------------


def metrics_for(y: np.ndarray, scores: np.ndarray, problem: Problem) -> dict[str, float]:
    """The standard metrics of the problem type (NaN where a metric is undefined on the rows)."""
    from sklearn import metrics as skm

    out: dict[str, float] = {"rows": float(len(y))}
    if problem.problem_type is ProblemType.REGRESSION:
        out["rmse"] = float(math.sqrt(skm.mean_squared_error(y, scores)))
        out["mae"] = float(skm.mean_absolute_error(y, scores))
        out["r2"] = float(skm.r2_score(y, scores)) if len(y) > 1 else float("nan")
        return out
    n = len(problem.classes)
    if problem.problem_type is ProblemType.BINARY:
        p = np.clip(scores, 1e-15, 1 - 1e-15)
        both = len(np.unique(y)) == 2
        out["roc_auc"] = float(skm.roc_auc_score(y, p)) if both else float("nan")
        out["pr_auc"] = float(skm.average_precision_score(y, p)) if both else float("nan")
        out["log_loss"] = float(skm.log_loss(y, p, labels=[0, 1]))
        out["brier"] = float(skm.brier_score_loss(y, p, pos_label=1))
        out["accuracy"] = float(skm.accuracy_score(y, (p >= 0.5).astype(int)))
        out["calibration_error"] = expected_calibration_error(y, p)
        return out
    p = np.clip(scores, 1e-15, 1)
    out["macro_f1"] = float(
        skm.f1_score(y, p.argmax(axis=1), average="macro", labels=list(range(n)))
    )
    out["log_loss"] = float(skm.log_loss(y, p, labels=list(range(n))))
    out["accuracy"] = float(skm.accuracy_score(y, p.argmax(axis=1)))
    return out


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - predicted probability| over equal-width bins, weighted by size."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    err = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            err += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(err)


PRIMARY = {
    ProblemType.BINARY: ("roc_auc", True),
    ProblemType.MULTICLASS: ("macro_f1", True),
    ProblemType.REGRESSION: ("rmse", False),
}


def primary_metric(problem_type: ProblemType) -> tuple[str, bool]:
    """The metric promotion is decided on, and whether higher is better."""
    return PRIMARY[problem_type]


def baseline_scores(split: Split, problem: Problem, rows: int) -> np.ndarray:
    """The naive model: training-set class rates (or mean) for every row."""
    y = _labels(split.train, problem)
    if problem.problem_type is ProblemType.REGRESSION:
        return np.full(rows, float(y.mean()))
    rates = np.bincount(y, minlength=len(problem.classes)) / len(y)
    if problem.problem_type is ProblemType.BINARY:
        return np.full(rows, rates[1])
    return np.tile(rates, (rows, 1))


@dataclass
class Evaluation:
    metrics: dict[str, float]
    baseline: dict[str, float]
    slices: pl.DataFrame  # column, value, rows, <primary metric>
    scores: np.ndarray
    y: np.ndarray


def evaluate(model, split: Split, problem: Problem, min_slice_rows: int = 30) -> Evaluation:
    """Metrics on the test set, for the naive baseline, and per value of each categorical."""
    test = split.test
    y = _labels(test, problem)
    scores = predict(model, test, problem)
    metrics = metrics_for(y, scores, problem)
    baseline = metrics_for(y, baseline_scores(split, problem, len(y)), problem)
    return Evaluation(
        metrics, baseline, slice_metrics(test, y, scores, problem, min_slice_rows), scores, y
    )


def slice_metrics(
    test: pl.DataFrame, y: np.ndarray, scores: np.ndarray, problem: Problem, min_rows: int = 30
) -> pl.DataFrame:
    """The primary metric per value of every categorical feature (slices of enough rows)."""
    name, _ = primary_metric(problem.problem_type)
    rows = []
    for col in problem.categorical:
        values = test.get_column(col).cast(pl.String).fill_null("__missing__").to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            if mask.sum() < min_rows:
                continue
            m = metrics_for(y[mask], scores[mask], problem)
            rows.append(
                {"column": col, "value": str(value), "rows": int(mask.sum()), name: m[name]}
            )
    schema = {"column": pl.String, "value": pl.String, "rows": pl.Int64, name: pl.Float64}
    return pl.DataFrame(rows, schema=schema)
