"""The training defaults for categorical-heavy data (issue 10 item 9) reach CatBoost, and on a
sample of the synthetic categorical-heavy benchmark data they cost no held-out quality."""

from __future__ import annotations

import pytest

from bench.categorical_data import CARDINALITIES, EVENT_TIME, TARGET, categorical_frame, features
from ml_assets.contracts import ProblemType
from ml_assets.train import core
from ml_assets.train.config import (
    CATEGORICAL_HEAVY,
    OLD_CATEGORICAL_DEFAULTS,
    TIME_ORDERED_ROWS,
    TrainConfig,
)


def _problem(frame) -> core.Problem:
    return core.Problem.from_frame(frame, ProblemType.BINARY, TARGET, features(), EVENT_TIME)


def _ctr_types(descriptions: list[str]) -> list[tuple[str, list[str]]]:
    """``(type, priors)`` of CatBoost's expanded CTR descriptions (as get_all_params gives)."""
    out = []
    for d in descriptions:
        kind, *options = d.split(":")
        out.append((kind, [o.removeprefix("Prior=") for o in options if o.startswith("Prior=")]))
    return out


@pytest.fixture(scope="module")
def sample():
    frame = categorical_frame(rows=6000, seed=3)
    return frame, _problem(frame), core.time_split(frame, EVENT_TIME)


def test_synthetic_data_has_the_issues_shape(sample) -> None:
    frame, problem, _ = sample
    assert len(problem.categorical) == 15 == len(CARDINALITIES)
    assert set(problem.categorical) == set(CARDINALITIES)
    assert sorted(frame.get_column(TARGET).unique().to_list()) == [0, 1]
    # Deterministic: the same seed gives the same frame.
    assert categorical_frame(rows=6000, seed=3).equals(frame)
    # Realistic cardinalities: some small, several medium, a few large.
    seen = {c: frame.get_column(c).n_unique() for c in CARDINALITIES}
    assert min(seen.values()) <= 10 and max(seen.values()) >= 500


def test_chosen_parameters_reach_catboost(sample) -> None:
    _, problem, split = sample
    model = core.fit(split, problem, TrainConfig(iterations=10))
    params = model.get_all_params()
    assert params["max_ctr_complexity"] == 2
    # 4,200 fitted rows: below TIME_ORDERED_ROWS, so CatBoost's random permutations.
    assert params["has_time"] is False
    timed = core.fit(split, problem, TrainConfig(iterations=10, has_time=True))
    assert timed.get_all_params()["has_time"] is True
    # 15 categoricals: categorical-heavy, so the unset learning rate is the larger one.
    assert params["learning_rate"] == pytest.approx(0.2)
    # One smoothed target mean (one prior) and the frequency per feature; only the mean for
    # combinations (get_all_params spells out every option CatBoost filled in).
    assert _ctr_types(params["simple_ctr"]) == [("Borders", ["0.5/1"]), ("Counter", ["0/1"])]
    assert _ctr_types(params["combinations_ctr"]) == [("Borders", ["0.5/1"])]

    old = core.fit(split, problem, TrainConfig(iterations=10, **OLD_CATEGORICAL_DEFAULTS))
    old_params = old.get_all_params()
    assert old_params["max_ctr_complexity"] == 4
    assert old_params["has_time"] is False
    assert old_params["learning_rate"] == pytest.approx(0.08)
    assert _ctr_types(old_params["simple_ctr"]) == [
        ("Borders", ["0/1", "0.5/1", "1/1"]),
        ("Counter", ["0/1"]),
    ]


def test_learning_rate_rule_follows_the_number_of_categoricals() -> None:
    config = TrainConfig()
    assert config.catboost_params(categorical_features=CATEGORICAL_HEAVY)["learning_rate"] == 0.2
    light = config.catboost_params(categorical_features=CATEGORICAL_HEAVY - 1)
    assert light["learning_rate"] == 0.08
    # A learning rate set explicitly wins over the rule, and None fields stay CatBoost's.
    explicit = TrainConfig(learning_rate=0.05, simple_ctr=None).catboost_params(15)
    assert explicit["learning_rate"] == 0.05 and "simple_ctr" not in explicit


def test_time_order_rule_follows_the_rows_catboost_fits_on() -> None:
    config = TrainConfig()
    assert config.catboost_params(15, training_rows=TIME_ORDERED_ROWS)["has_time"] is True
    assert config.catboost_params(15, training_rows=TIME_ORDERED_ROWS - 1)["has_time"] is False
    # Set explicitly, it wins over the rule both ways.
    assert TrainConfig(has_time=False).catboost_params(15, 10**6)["has_time"] is False
    assert TrainConfig(has_time=True).catboost_params(15, 10)["has_time"] is True


def test_new_defaults_keep_the_held_out_metric(sample) -> None:
    _, problem, split = sample
    metric = problem.kind.primary_metric
    old = core.fit(split, problem, TrainConfig(**OLD_CATEGORICAL_DEFAULTS))
    new = core.fit(split, problem, TrainConfig())
    old_auc = core.evaluate(old, split, problem).metrics[metric]
    new_auc = core.evaluate(new, split, problem).metrics[metric]
    assert old_auc > 0.6  # the data carries signal, so the comparison means something
    assert new_auc >= old_auc - 0.005, (old_auc, new_auc)


def test_catboost_gets_the_rows_in_event_time_order(sample) -> None:
    """``has_time`` (the default from :data:`TIME_ORDERED_ROWS` fitted rows on) takes the
    rows' order as time: the time split (training) and the search's
    folds hand CatBoost its rows sorted by event time, whatever order the training set came in,
    so a row's target statistic is computed from earlier events' labels only."""
    from ml_assets.train.search import time_folds

    frame, _, _ = sample
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=5)
    assert not shuffled.get_column(EVENT_TIME).is_sorted()
    split = core.time_split(shuffled, EVENT_TIME)
    for part in (split.train, split.valid):
        assert part.get_column(EVENT_TIME).is_sorted()
    times = shuffled.get_column(EVENT_TIME)
    for fold in time_folds(times, 3):
        assert times.gather(fold.train).is_sorted()
