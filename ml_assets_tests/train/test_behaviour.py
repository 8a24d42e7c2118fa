"""Behavioural tests of the car-loan model, in the style of Made-With-ML's: what a sensible model
does, with the expectation stated from the contract, the domain or the labelled data, never from
the model's own predictions.

* invariance: the application id (the primary key), columns no feature reads and columns that
  are not in the contract at all (a name, an e-mail) do not change a prediction;
* direction: a heavier debt burden moves the repayment probability the way the data does; a
  higher salary band does not lower it;
* minimum functionality: applications whose outcome is obvious from the data are predicted right.

One real CatBoost model is trained per module with the training core on the demo feature table
(what the ``model`` asset does, without Dagster and MLflow). Perturbations are applied to the
raw applications and go through the feature code again, as a serving request would.

Note on PII: the contract marks ``salary_range`` as ``pii: true``, yet the feature spec reads it
(``salary_rank`` and the four salary-band aggregates), so a prediction is *expected* to depend on
it; what is checked is that no PII column reaches the model as a raw feature.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pytest

from ml_assets import testing
from ml_assets.contracts import Contract
from ml_assets.features import build_training_set
from ml_assets.features.spec import FeatureSpec, Source
from ml_assets.train import core
from ml_assets.train.config import TrainConfig

# Rows the labelled data leaves no doubt about: in the training year each rule holds for at
# least OBVIOUS_PURITY of the applications it selects (checked in the test, not assumed).
OBVIOUS_DEFAULT = pl.col("debt_to_income_ratio") <= 0.30
OBVIOUS_REPAID = (
    ~pl.col("repaid_loan_on_prev_car")
    & (pl.col("salary_rank") >= 1)
    & (pl.col("driver_tenure") < 2.8)
)
OBVIOUS_PURITY = 0.95
PICKED_PER_RULE = 5


@dataclass(frozen=True)
class Trained:
    """A car-loan model and the rows around it."""

    contract: Contract
    spec: FeatureSpec
    problem: core.Problem
    model: Any
    train: pl.DataFrame  # labelled feature rows the model was fitted on
    test: pl.DataFrame  # labelled feature rows after the validation period, never seen


@pytest.fixture(scope="module")
def trained() -> Trained:
    contract, spec = testing.car_loan()
    _, labels = testing.demo_tables()
    ts = build_training_set(
        spec, testing.feature_table(), labels, testing.CUTOFF, dt.timedelta(days=365)
    )
    problem = core.Problem.from_frame(
        ts, contract.problem_type, contract.target, spec.names, spec.event_time
    )
    split = core.time_split(ts, spec.event_time)
    model = core.fit(split, problem, TrainConfig(iterations=150))
    return Trained(contract, spec, problem, model, split.train, split.test)


def p_repaid(t: Trained, features: pl.DataFrame) -> np.ndarray:
    """P(repaid = 1) of feature rows."""
    assert t.problem.classes == [0, 1]  # so the binary score is P(repaid)
    return core.predict(t.model, features, t.problem)


def rescored(
    t: Trained, entity: pl.DataFrame, labels: pl.DataFrame, ids: pl.Series | None = None
) -> np.ndarray:
    """P(repaid) of the test applications (or of ``ids``, in that order) with their features
    recomputed from ``entity`` and ``labels``."""
    key = t.contract.entity.primary_key
    ids = t.test[key[0]] if ids is None else ids
    feats = testing.features_of(entity, labels)
    rows = pl.DataFrame({key[0]: ids}).join(feats, on=key, how="left", maintain_order="left")
    assert rows.height == len(ids) and rows[t.spec.event_time].null_count() == 0
    return p_repaid(t, rows)


def test_the_model_reads_no_key_no_event_time_and_no_raw_pii_column(trained: Trained) -> None:
    entity = trained.contract.entity
    pii = {name for name, col in entity.columns.items() if col.pii}
    assert pii, "the car-loan contract marks a PII column"
    used = set(trained.model.feature_names_)
    assert used == set(trained.problem.features)
    assert not used & {*entity.primary_key, entity.event_time}
    assert not used & pii


def test_relabelled_ids_do_not_change_features_or_predictions(trained: Trained) -> None:
    """Shuffle the ids among the applications (a seeded permutation of the same values, so a
    model splitting on the id would see other ids from its training range), in both tables."""
    entity, labels = testing.demo_tables()
    (key,) = trained.contract.entity.primary_key
    old = entity[key]
    new = old.shuffle(seed=3)
    assert (old != new).mean() > 0.99

    def relabel(frame: pl.DataFrame, src: pl.Series, dst: pl.Series) -> pl.DataFrame:
        return frame.with_columns(pl.col(key).replace_strict(src, dst))

    unchanged = rescored(trained, entity, labels)
    np.testing.assert_array_equal(unchanged, p_repaid(trained, trained.test))
    before = testing.features_of(entity, labels)
    after = relabel(
        testing.features_of(relabel(entity, old, new), relabel(labels, old, new)), new, old
    )
    assert before.sort(key).equals(after.sort(key))
    test_ids = trained.test.select(pl.col(key).replace_strict(old, new))[key]
    np.testing.assert_array_equal(
        rescored(trained, relabel(entity, old, new), relabel(labels, old, new), test_ids),
        unchanged,
    )


def test_columns_no_feature_reads_do_not_change_predictions(trained: Trained) -> None:
    """Contract columns outside every feature's inputs are shuffled; columns a source may carry
    beyond the contract (here a name and an e-mail address) are added."""
    spec, contract = trained.spec, trained.contract
    entity, labels = testing.demo_tables()
    read = {
        *spec.request_inputs(),
        spec.event_time,
        *contract.entity.primary_key,
        *(a.column for a in spec.aggregates if a.source is Source.ENTITY and a.column),
    }
    unread = [c for c in contract.entity.columns if c not in read]
    (key,) = contract.entity.primary_key
    changed = entity.with_columns(
        *(pl.col(c).shuffle(seed=7) for c in unread),
        pl.format("Applicant {}", pl.col(key)).alias("applicant_name"),
        pl.format("applicant{}@example.com", pl.col(key)).alias("email"),
    )
    np.testing.assert_array_equal(
        rescored(trained, changed, labels), rescored(trained, entity, labels)
    )


def test_debt_to_income_moves_repayment_the_way_the_data_does(trained: Trained) -> None:
    """+0.5 debt-to-income on every test application (clipped to the contract's maximum).

    Lenders expect a heavier debt burden to lower repayment. NannyML's synthetic car-loan data
    says the opposite (repayment rises with the ratio), and a model should learn its data, so the
    expected direction is the sign of the ratio's rank correlation with ``repaid`` in the
    training rows, required to be clear (|rho| >= 0.1); the model must not move against it.
    """
    column = "debt_to_income_ratio"
    rho = trained.train.select(pl.corr(column, trained.problem.target, method="spearman")).item()
    assert abs(rho) >= 0.1, f"no clear direction in the data (rho={rho:.3f})"
    entity, labels = testing.demo_tables()
    top = trained.contract.entity.columns[column].max
    test_ids = trained.test[trained.contract.entity.primary_key[0]]
    heavier = entity.with_columns(
        pl.when(pl.col("id").is_in(test_ids.implode()))
        .then((pl.col(column) + 0.5).clip(upper_bound=top))
        .otherwise(pl.col(column))
        .alias(column)
    )
    before = rescored(trained, entity, labels).mean()
    after = rescored(trained, heavier, labels).mean()
    moved = after - before
    assert np.sign(moved) in (0.0, np.sign(rho)), (rho, before, after)


def test_a_higher_salary_band_does_not_lower_repayment(trained: Trained) -> None:
    """Every test application one salary band up (the top band stays): mean P(repaid) does not
    fall. (Domain expectation; the demo data agrees: 26 % repaid in the lowest band, ~65 % in
    the others.)"""
    column = "salary_range"
    bands = trained.contract.entity.columns[column].allowed
    assert bands is not None
    up = {b: bands[min(i + 1, len(bands) - 1)] for i, b in enumerate(bands)}
    entity, labels = testing.demo_tables()
    test_ids = trained.test[trained.contract.entity.primary_key[0]]
    richer = entity.with_columns(
        pl.when(pl.col("id").is_in(test_ids.implode()))
        .then(pl.col(column).replace_strict(up, default=None, return_dtype=entity.schema[column]))
        .otherwise(pl.col(column))
        .alias(column)
    )
    before = rescored(trained, entity, labels).mean()
    after = rescored(trained, richer, labels).mean()
    assert after >= before, (before, after)


@pytest.mark.parametrize(
    ("rule", "outcome", "order"),
    [
        (OBVIOUS_DEFAULT, 0, "debt_to_income_ratio"),
        (OBVIOUS_REPAID, 1, "driver_tenure"),
    ],
    ids=["low-debt-to-income-defaults", "no-previous-loan-salaried-new-driver-repays"],
)
def test_obvious_applications_are_predicted_right(
    trained: Trained, rule: pl.Expr, outcome: int, order: str
) -> None:
    """The rule is near-certain in the training year; the test applications that match it most
    clearly (the extreme of ``order``) and had that outcome get it predicted."""
    target = trained.problem.target
    selected = trained.train.filter(rule)
    purity = (selected[target] == outcome).mean()
    assert selected.height >= 100 and purity >= OBVIOUS_PURITY, (selected.height, purity)
    picked = (
        trained.test.filter(rule & (pl.col(target) == outcome))
        .sort(order, nulls_last=True)
        .head(PICKED_PER_RULE)
    )
    assert picked.height == PICKED_PER_RULE
    predicted = (p_repaid(trained, picked) >= 0.5).astype(int)
    assert predicted.tolist() == [outcome] * PICKED_PER_RULE, picked.to_dicts()
