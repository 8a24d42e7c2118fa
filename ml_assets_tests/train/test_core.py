"""Training core: splits, determinism, refusal of bad data, metrics, the promotion rule."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from ml_assets.contracts import ProblemType
from ml_assets.registry.promotion import decide
from ml_assets.train import core
from ml_assets.train.config import TrainConfig


def _frame(problem: ProblemType, n: int = 3000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    band = rng.choice(["low", "mid", "high"], size=n)
    shift = np.select([band == "low", band == "mid"], [-1.0, 0.0], 1.0)
    signal = 2 * x + shift + rng.normal(scale=0.5, size=n)
    if problem is ProblemType.BINARY:
        y = (signal > 0).astype(int)
    elif problem is ProblemType.MULTICLASS:
        y = np.array(["a", "b", "c"])[np.digitize(signal, [-1, 1])]
    else:
        y = 100 + 10 * signal
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return pl.DataFrame(
        {
            "id": np.arange(n),
            "ts": [start + dt.timedelta(minutes=int(i)) for i in range(n)],
            "x": x,
            "band": band,
            "y": y,
        }
    )


def _problem(frame: pl.DataFrame, kind: ProblemType) -> core.Problem:
    return core.Problem.from_frame(frame, kind, "y", ["x", "band"], "ts")


FAST = TrainConfig(iterations=80, early_stopping_rounds=20)


def test_time_split_is_ordered_and_disjoint():
    frame = _frame(ProblemType.BINARY).sample(fraction=1.0, shuffle=True, seed=1)
    split = core.time_split(frame, "ts")
    assert split.train["ts"].max() < split.valid["ts"].min()
    assert split.valid["ts"].max() < split.test["ts"].min()
    assert split.train.height + split.valid.height + split.test.height == frame.height
    ids = [set(p["id"]) for p in (split.train, split.valid, split.test)]
    assert not (ids[0] & ids[1] or ids[1] & ids[2] or ids[0] & ids[2])


def test_rows_sharing_a_timestamp_stay_together():
    frame = _frame(ProblemType.BINARY, n=100).with_columns(
        pl.col("ts").dt.truncate("10m")  # ten rows per timestamp
    )
    split = core.time_split(frame, "ts")
    assert not set(split.train["ts"]) & set(split.valid["ts"])
    assert not set(split.valid["ts"]) & set(split.test["ts"])


@pytest.mark.parametrize("kind", list(ProblemType))
def test_each_problem_type_trains_and_beats_the_baseline(kind):
    frame = _frame(kind)
    problem = _problem(frame, kind)
    assert problem.categorical == ["band"]
    split = core.time_split(frame, "ts")
    model = core.fit(split, problem, FAST)
    ev = core.evaluate(model, split, problem)
    metric, higher = problem.kind.primary_metric, problem.kind.higher_is_better
    better = (
        ev.metrics[metric] > ev.baseline[metric]
        if higher
        else ev.metrics[metric] < ev.baseline[metric]
    )
    assert better, (ev.metrics, ev.baseline)
    assert set(ev.slices["value"]) == {"low", "mid", "high"}
    expected = {
        ProblemType.BINARY: {"roc_auc", "pr_auc", "log_loss", "brier", "calibration_error"},
        ProblemType.MULTICLASS: {"macro_f1", "log_loss"},
        ProblemType.REGRESSION: {"rmse", "mae", "r2"},
    }[kind]
    assert expected <= set(ev.metrics)


def test_training_is_deterministic():
    frame = _frame(ProblemType.BINARY)
    problem = _problem(frame, ProblemType.BINARY)
    split = core.time_split(frame, "ts")
    a = core.evaluate(core.fit(split, problem, FAST), split, problem)
    b = core.evaluate(core.fit(split, problem, FAST), split, problem)
    assert a.metrics == b.metrics
    assert np.array_equal(a.scores, b.scores)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.head(0), "empty"),
        (lambda f: f.with_columns(pl.lit(1).alias("y")), "single class"),
        (
            lambda f: f.with_columns(
                pl.when(pl.col("id") == 5).then(None).otherwise(pl.col("y")).alias("y")
            ),
            "1 null",
        ),
        (lambda f: f.drop("y"), "no target column"),
    ],
)
def test_bad_training_sets_are_refused_clearly(mutate, message):
    with pytest.raises(core.TrainingDataError, match=message):
        core.check_training_frame(mutate(_frame(ProblemType.BINARY)), "y", ProblemType.BINARY)


def test_constant_regression_target_is_refused():
    frame = _frame(ProblemType.REGRESSION).with_columns(pl.lit(3.0).alias("y"))
    with pytest.raises(core.TrainingDataError, match="constant"):
        core.check_training_frame(frame, "y", ProblemType.REGRESSION)


def _slices(**values: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "column": ["band"] * len(values),
            "value": list(values),
            "rows": [100] * len(values),
            "roc_auc": list(values.values()),
        }
    )


def test_gate_first_model_must_beat_baseline():
    kw = dict(
        metric="roc_auc",
        higher_better=True,
        champion=None,
        champion_slices=None,
        challenger_slices=_slices(),
    )
    assert decide(challenger={"roc_auc": 0.8}, baseline={"roc_auc": 0.5}, **kw).promote
    assert not decide(challenger={"roc_auc": 0.5}, baseline={"roc_auc": 0.5}, **kw).promote


def test_gate_compares_with_the_champion_within_tolerance():
    base = dict(metric="roc_auc", higher_better=True, baseline={"roc_auc": 0.5}, tolerance=0.01)
    same_slices = dict(challenger_slices=_slices(a=0.8), champion_slices=_slices(a=0.8))
    assert decide(
        challenger={"roc_auc": 0.905}, champion={"roc_auc": 0.91}, **base, **same_slices
    ).promote
    worse = decide(challenger={"roc_auc": 0.85}, champion={"roc_auc": 0.91}, **base, **same_slices)
    assert not worse.promote and "worse than the champion" in worse.reason


def test_gate_blocks_a_degrading_slice():
    d = decide(
        metric="roc_auc",
        higher_better=True,
        baseline={"roc_auc": 0.5},
        challenger={"roc_auc": 0.95},
        champion={"roc_auc": 0.9},
        challenger_slices=_slices(low=0.95, high=0.70),
        champion_slices=_slices(low=0.90, high=0.90),
        slice_tolerance=0.05,
    )
    assert not d.promote
    assert d.slice_regressions == ["band=high: 0.7000 vs 0.9000"]


def test_gate_lower_is_better_for_rmse():
    kw = dict(
        metric="rmse",
        higher_better=False,
        baseline={"rmse": 50.0},
        challenger_slices=_slices(),
        champion_slices=None,
    )
    assert decide(challenger={"rmse": 10.0}, champion={"rmse": 10.05}, **kw).promote
    assert not decide(challenger={"rmse": 12.0}, champion={"rmse": 10.0}, **kw).promote
