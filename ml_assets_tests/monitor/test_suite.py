"""The monitoring suite on real NannyML and real CatBoost champions, trained on the demo data.

Expectations come from the data, not from the code under test: NannyML documents that its
synthetic car-loan data drift from about the middle of the analysis period, and the stack notes
measured where (CBPE alerts from the 5,000-row chunk starting 2019-03-31 on, with the dataset's
shipped predictions); missing and unseen rates follow from how the bad frames are built.
"""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest

from ml_assets.monitor.schema import RESULTS_SCHEMA, Calculator
from ml_assets.monitor.suite import (
    CATEGORICAL_METHODS,
    CONTINUOUS_METHODS,
    FittedSuite,
    estimate_gap,
    fit_suite,
    run_suite,
)
from ml_assets.testing import Scored, champion, month_bounds

# Every test here fits NannyML on a real CatBoost champion of the demo data (the first one
# pays ~30 s for the champion and the nannyml import): the fast core leaves them out.
pytestmark = pytest.mark.slow

C = Calculator
NO_DOMAIN = [c for c in C if c not in (C.DOMAIN_CLASSIFIER, C.OPERATIONAL)]
MAY = dt.datetime(2019, 5, 1, tzinfo=dt.UTC)


def _car_loan() -> Scored:
    # Half of the first half's rows as the test window: 25k reference rows, so five reference
    # chunks of 5,000 rows, the size of a monthly partition (the setup of the stack notes).
    return champion("car_loan", test_share=0.5)


def _month(scored: Scored, month: dt.datetime) -> pl.DataFrame:
    start, end = month_bounds(month)
    return scored.analysis.filter(pl.col("timestamp") >= start, pl.col("timestamp") < end)


_SUITES: dict[str, FittedSuite] = {}


def _suite(**kw) -> FittedSuite:
    key = repr(sorted(kw.items()))
    if key not in _SUITES:
        scored = _car_loan()
        _SUITES[key] = fit_suite(scored.model, scored.reference, reference_chunk_rows=5_000, **kw)
    return _SUITES[key]


def _run(suite: FittedSuite, frame: pl.DataFrame, **kw) -> pl.DataFrame:
    return suite.run(
        frame,
        dataset="car_loan",
        partition="2019-05",
        champion_version="3",
        chunk_start=MAY,
        chunk_end=month_bounds(MAY)[1],
        **kw,
    )


def _one(results: pl.DataFrame, calculator: C, metric: str, column: str | None = None) -> dict:
    rows = results.filter(pl.col("calculator") == calculator.value, pl.col("metric") == metric)
    rows = rows.filter(pl.col("column").is_null() if column is None else pl.col("column") == column)
    assert rows.height == 1, rows
    return rows.row(0, named=True)


def _expected_rows(scored: Scored, calculators: list[C]) -> int:
    m = scored.model
    per = {
        C.UNIVARIATE_DRIFT: len(m.continuous) * len(CONTINUOUS_METHODS)
        + len(m.categorical) * len(CATEGORICAL_METHODS),
        C.MULTIVARIATE_DRIFT: 1,
        C.DOMAIN_CLASSIFIER: 1,
        C.ESTIMATED_PERFORMANCE: len(m.kind.nannyml_metrics),
        C.REALIZED_PERFORMANCE: len(m.kind.nannyml_metrics),
        C.MISSING_VALUES: len(m.features),
        C.UNSEEN_VALUES: len(m.categorical),
    }
    return sum(per[c] for c in calculators)


# --- the shift on car_loan ---------------------------------------------------------------


def test_car_loan_shift_is_flagged_by_cbpe_in_the_shifted_months_only():
    """Monthly partitions of the second half, against the champion's test window.

    Stable months 2018-11 .. 2019-03 (before the shift the stack notes place at 2019-03-31):
    no CBPE alert, and estimated ROC AUC within 0.01 of the realized one (CBPE's sampling error
    on 5,000 rows is about 0.002, so 0.01 is five of them). Shifted months 2019-04 .. 2019-08:
    CBPE's estimated ROC AUC alerts, and so does the reconstruction error (the stack notes: it
    fires on the same chunks). The partial month 2018-10 (207 rows) is not asserted on.
    """
    scored = _car_loan()
    suite = _suite(
        calculators=[C.ESTIMATED_PERFORMANCE, C.REALIZED_PERFORMANCE, C.MULTIVARIATE_DRIFT]
    )
    stable = [dt.datetime(2018, 11, 1), *[dt.datetime(2019, m, 1) for m in (1, 2, 3)]]
    stable.insert(1, dt.datetime(2018, 12, 1))
    shifted = [dt.datetime(2019, m, 1) for m in range(4, 9)]
    by_month = {}
    for month in [*stable, *shifted]:
        month = month.replace(tzinfo=dt.UTC)
        part = _month(scored, month)
        assert part.height > 4_000
        by_month[month.date()] = suite.run(
            part,
            dataset="car_loan",
            partition=str(month.date()),
            champion_version="3",
            chunk_start=month,
            chunk_end=month_bounds(month)[1],
        )
    results = pl.concat(by_month.values())
    assert results.schema == pl.Schema(RESULTS_SCHEMA)
    estimated = results.filter(calculator=C.ESTIMATED_PERFORMANCE.value, metric="roc_auc")
    alerts = dict(zip(estimated["partition"].to_list(), estimated["alert"].to_list(), strict=True))
    assert [alerts[str(m.date())] for m in stable] == [False] * len(stable), estimated
    assert [alerts[str(m.date())] for m in shifted] == [True] * len(shifted), estimated
    recon = results.filter(calculator=C.MULTIVARIATE_DRIFT.value)
    assert recon.filter(pl.col("partition") >= "2019-04-01")["alert"].all()
    assert not recon.filter(pl.col("partition") < "2019-04-01")["alert"].any()

    gap = estimate_gap(results).filter(metric="roc_auc")
    stable_gap = gap.filter(pl.col("partition") < "2019-04-01")
    assert stable_gap.height == len(stable)
    assert stable_gap["label_coverage"].to_list() == [1.0] * len(stable)
    assert stable_gap["gap"].abs().max() < 0.01, stable_gap


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["car_loan", "car_price", "credit_card"])
def test_every_problem_kind_gives_finite_estimated_and_realized_performance(dataset):
    """Binary (CBPE), regression (DLE) and multiclass (CBPE with one probability column per
    class): every estimated and realized metric of the kind is a finite number on a partition of
    the second half whose labels have all arrived; every other calculator gives its rows."""
    scored = champion(dataset)
    part = scored.analysis.head(3_000)
    results = run_suite(
        scored.model.kind,
        scored.reference,
        part,
        features=scored.model.features,
        categorical=scored.model.categorical,
        classes=scored.model.classes,
        target=scored.model.target,
        timestamp=scored.model.timestamp,
        dataset=dataset,
        partition="p",
        champion_version="1",
        chunk_start=None,
        chunk_end=None,
        domain_classifier=False,
        strict=True,
    )
    assert results.height == _expected_rows(scored, NO_DOMAIN)
    metrics = list(scored.model.kind.nannyml_metrics)
    for calculator in (C.ESTIMATED_PERFORMANCE, C.REALIZED_PERFORMANCE):
        perf = results.filter(calculator=calculator.value)
        assert perf["metric"].to_list() == metrics
        assert all(math.isfinite(v) for v in perf["value"].to_list()), perf
    estimator = results.filter(calculator=C.ESTIMATED_PERFORMANCE.value)["method"].unique()
    assert estimator.to_list() == [scored.model.kind.nannyml_estimator]
    realized = results.filter(calculator=C.REALIZED_PERFORMANCE.value)
    assert realized["label_coverage"].to_list() == [1.0] * len(metrics)
    assert (
        results.filter(pl.col("calculator") != C.REALIZED_PERFORMANCE.value)["label_coverage"]
        .is_null()
        .all()
    )


def test_the_domain_classifier_runs_on_small_partitions_by_default():
    scored = _car_loan()
    suite = _suite(calculators=[C.DOMAIN_CLASSIFIER])
    small = _run(suite, _month(scored, MAY).head(500))
    auroc = _one(small, C.DOMAIN_CLASSIFIER, "domain_classifier_auroc")
    assert 0.0 <= auroc["value"] <= 1.0
    assert (auroc["lower_threshold"], auroc["upper_threshold"]) == (0.45, 0.65)
    assert _run(suite, _month(scored, MAY).head(500), domain_classifier=False).height == 0


# --- bad input -----------------------------------------------------------------------------


def test_an_empty_partition_gives_an_empty_typed_table():
    scored = _car_loan()
    results = _run(_suite(), scored.analysis.head(0))
    assert results.height == 0
    assert results.schema == pl.Schema(RESULTS_SCHEMA)


def test_an_all_null_feature_is_fully_missing_and_its_drift_is_null():
    scored = _car_loan()
    part = _month(scored, MAY).with_columns(pl.lit(None, dtype=pl.Float64).alias("car_value"))
    suite = _suite()
    results = _run(suite, part, domain_classifier=False)
    assert results.height == _expected_rows(scored, NO_DOMAIN)
    missing = _one(results, C.MISSING_VALUES, "missing_values_rate", "car_value")
    assert missing["value"] == 1.0
    assert missing["alert"] is True
    drift = results.filter(calculator=C.UNIVARIATE_DRIFT.value, column="car_value")
    assert drift["method"].to_list() == list(CONTINUOUS_METHODS)
    assert drift["value"].is_null().all(), drift
    assert drift["alert"].is_null().all()
    # the other features are unaffected
    other = _one(results, C.MISSING_VALUES, "missing_values_rate", "loan_length")
    assert other["value"] == 0.0


def test_only_unseen_categories_give_an_unseen_rate_of_one():
    scored = _car_loan()
    part = _month(scored, MAY).with_columns(pl.lit("999K+ €").alias("salary_range"))
    results = _run(_suite(), part, domain_classifier=False)
    unseen = _one(results, C.UNSEEN_VALUES, "unseen_values_rate", "salary_range")
    assert unseen["value"] == 1.0
    assert unseen["alert"] is True
    assert (
        _one(results, C.UNSEEN_VALUES, "unseen_values_rate", "size_of_downpayment")["value"] == 0.0
    )
    js = _one(results, C.UNIVARIATE_DRIFT, "jensen_shannon", "salary_range")
    assert js["alert"] is True  # a distribution with no overlap at all has drifted


def test_a_single_row_gives_every_row_without_crashing():
    scored = _car_loan()
    part = _month(scored, MAY).head(1)
    results = _run(_suite(), part)  # the domain classifier included: 1 row <= 50k
    assert results.height == _expected_rows(scored, [*NO_DOMAIN, C.DOMAIN_CLASSIFIER])
    assert results["rows"].unique().to_list() == [1]
    missing = results.filter(calculator=C.MISSING_VALUES.value)
    assert missing["value"].to_list() == [0.0] * missing.height
    # a null value never carries an alert
    assert results.filter(pl.col("value").is_null())["alert"].is_null().all()


def test_a_partition_missing_a_feature_reports_it_fully_missing():
    """An older model's log segment has no ``driver_tenure`` column at all."""
    scored = _car_loan()
    part = _month(scored, MAY).drop("driver_tenure")
    results = _run(_suite(), part, domain_classifier=False)
    assert results.height == _expected_rows(scored, NO_DOMAIN)
    missing = _one(results, C.MISSING_VALUES, "missing_values_rate", "driver_tenure")
    assert missing["value"] == 1.0
    assert missing["alert"] is True
    assert (
        results.filter(calculator=C.UNIVARIATE_DRIFT.value, column="driver_tenure")["value"]
        .is_null()
        .all()
    )
    assert math.isfinite(_one(results, C.ESTIMATED_PERFORMANCE, "roc_auc")["value"])


def test_a_partition_with_no_labels_yet_has_null_realized_performance_and_zero_coverage():
    scored = _car_loan()
    part = _month(scored, MAY).with_columns(pl.lit(None, dtype=pl.Int64).alias("repaid"))
    results = _run(_suite(), part, domain_classifier=False)
    realized = results.filter(calculator=C.REALIZED_PERFORMANCE.value)
    assert realized["metric"].to_list() == ["roc_auc", "f1"]
    assert realized["value"].is_null().all()
    assert realized["alert"].is_null().all()
    assert realized["label_coverage"].to_list() == [0.0, 0.0]
    assert realized["lower_threshold"].is_not_null().all()  # the reference's thresholds
    assert math.isfinite(_one(results, C.ESTIMATED_PERFORMANCE, "roc_auc")["value"])
    gap = estimate_gap(results)
    assert gap["gap"].is_null().all() and gap["estimated"].is_not_null().all()


def test_label_coverage_is_the_share_of_labelled_rows():
    scored = _car_loan()
    part = _month(scored, MAY).head(2_000)
    part = part.with_columns(
        pl.when(pl.int_range(pl.len()) % 4 == 0).then(pl.col("repaid")).alias("repaid")
    )
    results = _run(_suite(), part, domain_classifier=False)
    realized = results.filter(calculator=C.REALIZED_PERFORMANCE.value)
    assert realized["label_coverage"].to_list() == [0.25, 0.25]
    assert realized["rows"].to_list() == [2_000, 2_000]
    assert all(math.isfinite(v) for v in realized["value"].to_list())


def test_a_reference_too_small_for_thresholds_reports_values_without_thresholds():
    scored = _car_loan()
    suite = fit_suite(scored.model, scored.reference.head(150))  # < 2 chunks of 100 rows
    assert not suite.thresholds
    results = _run(suite, _month(scored, MAY), domain_classifier=False)
    assert results.height == _expected_rows(scored, NO_DOMAIN)
    assert results["lower_threshold"].is_null().all()
    assert results["upper_threshold"].is_null().all()
    assert results["alert"].is_null().all()
    missing = results.filter(calculator=C.MISSING_VALUES.value)
    assert missing["value"].to_list() == [0.0] * missing.height
    assert math.isfinite(_one(results, C.UNIVARIATE_DRIFT, "jensen_shannon", "car_value")["value"])


def test_an_empty_reference_gives_every_row_null():
    scored = _car_loan()
    suite = fit_suite(scored.model, scored.reference.head(0))
    results = _run(suite, _month(scored, MAY), domain_classifier=False)
    assert results.height == _expected_rows(scored, NO_DOMAIN)
    assert results["value"].is_null().all()
    assert set(suite.errors) == set(NO_DOMAIN)


def test_partition_bounds_are_utc_and_naive_bounds_are_taken_as_utc():
    scored = _car_loan()
    part = _month(scored, MAY).head(300)
    suite = _suite(calculators=[C.MISSING_VALUES])
    naive = suite.run(
        part,
        dataset="car_loan",
        partition="x",
        champion_version="3",
        chunk_start=dt.datetime(2019, 5, 1),
        chunk_end=None,
    )
    assert naive["chunk_start"].unique().to_list() == [MAY]
    assert naive["chunk_end"].is_null().all()
    assert naive["reference"].unique().to_list() == ["car_loan@v3"]


# --- weekly partitions: thresholds from chunks shaped like the partitions ----------------


def _weeks(dataset, first: str, last: str) -> list[str]:
    every: list[str] = dataset.partitions.keys()
    return [k for k in every if first <= k <= last]


def test_car_loan_weekly_partitions_flag_the_shift_in_the_shifted_weeks_only():
    """Weekly partitions of about 1,150 rows, the demo's granularity, against the champion's
    test window chunked by the same weekly windows.

    Expectations from the data (NannyML's description of the car-loan data and the stack notes:
    the shift starts at the end of March 2019), not from the code: in every stable week
    (2018-11-05 .. 2019-03-18) no estimated ROC AUC alert, no reconstruction-error alert and no
    drift check failure; in every shifted week (2019-04-01 .. 2019-08-19) an estimated ROC AUC
    alert, a reconstruction-error alert and a drift check failure (for the drift check on the
    stable weeks, see the comment below). The week of 2019-03-25, in
    which the shift begins, is not asserted on. Estimated and realized ROC AUC agree on the
    stable weeks within 0.03 each and 0.01 on average: the realized ROC AUC of ~1,150 rows has a
    standard error of about 0.007 (its spread over the reference's weeks), the estimate far less.
    """
    from ml_assets.dataset import load_datasets
    from ml_assets.monitor.assets import reference_starts
    from ml_assets.monitor.incidents import drift_alerts

    dataset = load_datasets()["car_loan"]
    scored = champion("car_loan")
    starts = reference_starts(dataset, scored.reference, "timestamp")
    suite = fit_suite(
        scored.model,
        scored.reference,
        reference_starts=starts,
        calculators=[
            C.UNIVARIATE_DRIFT,
            C.MULTIVARIATE_DRIFT,
            C.ESTIMATED_PERFORMANCE,
            C.REALIZED_PERFORMANCE,
        ],
    )
    assert suite.reference_chunks >= 6, "one chunk per week of the test window"
    stable = _weeks(dataset, "2018-11-05", "2019-03-18")
    shifted = _weeks(dataset, "2019-04-01", "2019-08-19")
    assert len(stable) == 20 and len(shifted) == 21
    verdicts: dict[str, dict[str, bool]] = {}
    by_week = []
    for week in [*stable, *shifted]:
        start, end = dataset.partitions.utc_window(week)
        part = scored.analysis.filter(pl.col("timestamp") >= start, pl.col("timestamp") < end)
        assert part.height > 1_000
        results = suite.run(
            part,
            dataset="car_loan",
            partition=week,
            champion_version="1",
            chunk_start=start,
            chunk_end=end,
        )
        by_week.append(results)
        counted, _ = drift_alerts(results)
        verdicts[week] = {
            "estimated": _one(results, C.ESTIMATED_PERFORMANCE, "roc_auc")["alert"],
            "reconstruction": _one(results, C.MULTIVARIATE_DRIFT, "reconstruction_error")["alert"],
            "drift": counted.height > 0,
        }
    for what in ("estimated", "reconstruction", "drift"):
        assert [w for w in shifted if not verdicts[w][what]] == [], (what, verdicts)
    for what in ("estimated", "reconstruction"):
        assert [w for w in stable if verdicts[w][what]] == [], (what, verdicts)
    # This model takes the contract's raw columns, three of them categorical, and NannyML's
    # chi-squared alerts at p < 0.05 on each (not at a threshold from the reference): a chance
    # alert that JS's threshold also crosses can fail the drift check in a stable week. The
    # demo's features (all numeric) hold no such week: test_cli_output's replay test.
    assert len([w for w in stable if verdicts[w]["drift"]]) <= 2, verdicts
    gap = estimate_gap(pl.concat(by_week)).filter(
        pl.col("metric") == "roc_auc", pl.col("partition").is_in(stable)
    )
    assert gap["label_coverage"].to_list() == [1.0] * len(stable)
    assert gap["gap"].abs().max() < 0.03, gap
    assert gap["gap"].abs().mean() < 0.01, gap


def test_estimated_thresholds_come_from_the_estimates_spread_and_are_one_sided():
    """The estimated metric's threshold is the reference chunks' estimates' mean less three of
    their standard deviations (NannyML's own StandardDeviationThreshold, on the estimates rather
    than the realized values), so it lies far closer to the reference's level than the realized
    metric's; better-than-reference performance never alerts (no upper threshold for ROC AUC,
    no lower one for RMSE)."""
    import numpy as np

    suite = _suite(calculators=[C.ESTIMATED_PERFORMANCE, C.REALIZED_PERFORMANCE])
    cbpe = suite.fitted[C.ESTIMATED_PERFORMANCE].calc
    realized = suite.fitted[C.REALIZED_PERFORMANCE].calc
    [auc] = [m for m in cbpe.metrics if m.column_name == "roc_auc"]
    [real_auc] = [m for m in realized.metrics if m.column_name == "roc_auc"]
    ref = cbpe.result.filter(period="reference").to_df()
    values = ref[("roc_auc", "value")].to_numpy(dtype=float)
    assert auc.lower_threshold_value == pytest.approx(values.mean() - 3 * values.std())
    assert auc.upper_threshold_value is None and real_auc.upper_threshold_value is None
    assert auc.lower_threshold_value > real_auc.lower_threshold_value
    # the plot's reference rows carry the thresholds the alerts use
    assert np.allclose(ref[("roc_auc", "lower_threshold")], auc.lower_threshold_value)
    price = champion("car_price")
    dle = fit_suite(price.model, price.reference, calculators=[C.ESTIMATED_PERFORMANCE])
    [rmse] = [
        m for m in dle.fitted[C.ESTIMATED_PERFORMANCE].calc.metrics if m.column_name == "rmse"
    ]
    assert rmse.lower_threshold_value is None and rmse.upper_threshold_value is not None
