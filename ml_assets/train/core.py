"""Training, pure and deterministic: time-based splits, CatBoost fitting, evaluation.

Polars in, polars (or plain dicts) out. CatBoost is imported inside the functions that need it,
so loading the Dagster definitions stays fast.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ml_assets.contracts.model import ProblemType
from ml_assets.problems import ProblemKind, problem_kind
from ml_assets.train.config import TrainConfig

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
    categories: dict[str, list[str]] = field(default_factory=dict)
    """The values learned from the training data, per feature, of the categories the contract
    declares ``categories: learned`` (what serving accepts for them)."""

    @property
    def kind(self) -> ProblemKind:
        return problem_kind(self.problem_type)

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
        classes = problem_kind(problem_type).classes(frame.get_column(target))
        return cls(problem_type, target, features, categorical, event_time, classes)

    def to_json(self) -> str:
        """What a scorer needs to use the model (the registry tag ``problem``, the Bento's
        ``problem.json``): features, categoricals, classes."""
        return json.dumps(
            {
                "problem_type": self.problem_type.value,
                "target": self.target,
                "features": self.features,
                "categorical": self.categorical,
                "event_time": self.event_time,
                "classes": self.classes,
                **({"categories": self.categories} if self.categories else {}),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Problem:
        d = json.loads(text)
        return cls(
            ProblemType(d["problem_type"]),
            d["target"],
            d["features"],
            d["categorical"],
            d["event_time"],
            d["classes"],
            d.get("categories") or {},
        )


def check_training_frame(
    frame: pl.DataFrame, target: str, problem_type: ProblemType, why_empty: str | None = None
) -> None:
    """Refuse data that cannot train a model, with a message saying what is wrong.

    ``why_empty``: why the training set holds no row (its window, cutoff, counts and what to
    change, as the training-set asset recorded it), said when it is empty.
    """
    if frame.height == 0:
        raise TrainingDataError(
            "the training set is empty: "
            + (why_empty or "no row in its window has a label observed before the cutoff")
        )
    if target not in frame.columns:
        raise TrainingDataError(f"the training set has no target column {target!r}")
    nulls = frame.get_column(target).null_count()
    if nulls:
        raise TrainingDataError(f"target {target!r} has {nulls} null values")
    problem = problem_kind(problem_type).target_data_problem(frame.get_column(target), target)
    if problem is not None:
        raise TrainingDataError(problem)


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
    return problem.kind.encode(frame.get_column(problem.target), problem.classes)


def fit(
    split: Split,
    problem: Problem,
    config: TrainConfig,
    catboost_overrides: Mapping[str, Any] | None = None,
):
    """Fit CatBoost with early stopping on the validation set. Same inputs, same model.

    ``catboost_overrides``: CatBoost parameters on top of the config's, for measuring a
    setting :class:`TrainConfig` does not expose (``bench/bench_categorical.py --vary``)."""
    from catboost import Pool

    params = config.catboost_params(len(problem.categorical), split.train.height)
    model = problem.kind.estimator(**{**params, **(catboost_overrides or {})})
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
    """Scores, as the problem kind defines them (P(positive), class probabilities, values)."""
    if frame.height == 0:
        return problem.kind.empty_scores(problem.classes)
    return problem.kind.scores(model, to_pool_frame(frame, problem))


def score_frame(model, frame: pl.DataFrame, problem: Problem, version: str) -> pl.DataFrame:
    """Feature rows with their predictions (the kind's output columns) and the model version,
    the features themselves dropped. An empty frame (an empty partition) gets the same
    columns, typed, and no rows. Batch scoring and the serving path agree on this shape."""
    kind = problem.kind
    scores = predict(model, frame, problem)
    outputs = kind.output_columns(scores, kind.labels(scores, problem.classes), problem.classes)
    return pl.concat(
        [frame.select(pl.exclude(problem.features)), pl.DataFrame(outputs)], how="horizontal"
    ).with_columns(pl.lit(version).alias("model_version"))


# --- metrics ----------------------------------------------------------------------------


def metrics_for(y: np.ndarray, scores: np.ndarray, problem: Problem) -> dict[str, float]:
    """The kind's standard metrics (NaN where a metric is undefined on the rows)."""
    return problem.kind.metrics(y, scores, problem.classes)


def baseline_scores(split: Split, problem: Problem, rows: int) -> np.ndarray:
    """The naive model: training-set class rates (or mean) for every row."""
    return problem.kind.baseline(_labels(split.train, problem), rows, problem.classes)


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
    name = problem.kind.primary_metric
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
