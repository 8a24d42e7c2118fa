"""Incidents: runs of consecutive alerting partitions of one metric, and which ones retrain."""

from __future__ import annotations

import polars as pl
import pytest

from ml_assets.monitor.incidents import find_incidents, retrain_candidates
from ml_assets_tests.monitor.alert_tables import DRIFT, ESTIMATED, REALIZED, WEEKS, results

T, F = True, False


def test_a_run_of_alerting_partitions_is_one_incident_with_its_facts():
    table = results({ESTIMATED: [F, T, T, T, F]})
    [incident] = find_incidents(table)
    assert incident.id == "car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-08"
    assert (incident.first_partition, incident.last_partition) == ("2018-01-08", "2018-01-22")
    assert incident.length == 3
    assert incident.value == pytest.approx(0.60)
    assert incident.threshold == pytest.approx(0.70)
    assert incident.lower_threshold == pytest.approx(0.70) and incident.upper_threshold is None
    assert incident.champion_version == "3"
    assert incident.ongoing is False  # 2018-01-29 recovered


def test_the_id_is_stable_while_the_incident_goes_on():
    before = find_incidents(results({ESTIMATED: [F, T, T]}))
    after = find_incidents(results({ESTIMATED: [F, T, T, T, T]}))
    assert [i.id for i in before] == [i.id for i in after]
    assert (before[0].length, after[0].length) == (2, 4)
    assert before[0].ongoing and after[0].ongoing


def test_recovery_then_a_new_alert_is_a_new_incident():
    incidents = find_incidents(results({ESTIMATED: [T, T, F, T, T, T]}))
    assert [(i.first_partition, i.last_partition, i.length, i.ongoing) for i in incidents] == [
        ("2018-01-01", "2018-01-08", 2, False),
        ("2018-01-22", "2018-02-05", 3, True),
    ]
    assert incidents[0].id != incidents[1].id
    assert incidents[1].id.endswith(":2018-01-22")


def test_metrics_are_separate_and_the_column_is_in_the_id():
    table = results({ESTIMATED: [T, F, F], REALIZED: [F, T, T], DRIFT: [T, T, F]})
    ids = sorted(i.id for i in find_incidents(table))
    assert ids == [
        "car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-01",
        "car_loan:realized_performance:-:realized:roc_auc:2018-01-08",
        "car_loan:univariate_drift:car_value:jensen_shannon:jensen_shannon:2018-01-01",
    ]


def test_datasets_are_separate():
    table = pl.concat(
        [results({ESTIMATED: [T, T]}), results({ESTIMATED: [T, T]}, dataset="credit_card")]
    )
    assert sorted(i.id.split(":")[0] for i in find_incidents(table)) == ["car_loan", "credit_card"]


def test_partitions_are_taken_in_partition_order_whatever_the_row_order():
    table = results({ESTIMATED: [F, T, F, T]}).reverse()
    assert [i.first_partition for i in find_incidents(table)] == ["2018-01-08", "2018-01-22"]


def test_a_metric_not_computed_neither_extends_nor_ends_an_incident():
    # realized performance before labels arrive: value and alert null
    [incident] = find_incidents(results({REALIZED: [T, None, T, None]}))
    assert (incident.first_partition, incident.last_partition) == ("2018-01-01", "2018-01-15")
    assert incident.length == 2
    assert incident.ongoing  # nothing after it recovered


def test_a_rerun_partition_alerts_if_any_of_its_rows_does():
    table = pl.concat([results({ESTIMATED: [T, F]}), results({ESTIMATED: [T, T]})])
    [incident] = find_incidents(table)
    assert incident.length == 2


def test_no_alerts_no_incidents():
    assert find_incidents(results({ESTIMATED: [F, F, F]})) == []
    assert find_incidents(results({})) == []


def test_a_single_noisy_partition_is_never_a_retrain_candidate():
    table = results({ESTIMATED: [F, T, F, F, T, F, T], REALIZED: [T, F, T, F, F, F, F]})
    assert len(find_incidents(table)) == 5
    assert retrain_candidates(table) == []


def test_retrain_candidates_last_at_least_n_partitions():
    table = results({ESTIMATED: [F, T, T, F, T, T, T], REALIZED: [T, T, T, T, F, F, F]})
    by_default = {(i.calculator, i.first_partition) for i in retrain_candidates(table)}
    assert by_default == {
        ("estimated_performance", "2018-01-08"),
        ("estimated_performance", "2018-01-29"),
        ("realized_performance", "2018-01-01"),
    }
    three = {(i.calculator, i.first_partition) for i in retrain_candidates(table, consecutive=3)}
    assert three == {
        ("estimated_performance", "2018-01-29"),
        ("realized_performance", "2018-01-01"),
    }
    four = {(i.calculator, i.first_partition) for i in retrain_candidates(table, consecutive=4)}
    assert four == {("realized_performance", "2018-01-01")}


def test_the_default_is_two_partitions_not_one():
    table = results({ESTIMATED: [F, F, T]})
    assert retrain_candidates(table) == []
    assert len(retrain_candidates(table, consecutive=1)) == 1
    with pytest.raises(ValueError, match="at least 1"):
        retrain_candidates(table, consecutive=0)


def test_only_performance_calculators_retrain_by_default():
    table = results({DRIFT: [T, T, T, T]})
    assert len(find_incidents(table)) == 1
    assert retrain_candidates(table) == []
    assert len(retrain_candidates(table, calculators=["univariate_drift"])) == 1


def test_nine_partitions_fixture_matches_the_contract():
    from ml_assets.dataset import load_datasets

    assert load_datasets()["car_loan"].partitions.keys()[: len(WEEKS)] == WEEKS


def test_a_lone_methods_univariate_alert_is_no_incident() -> None:
    """A feature alerting on one of its methods only is reported by the drift check, never an
    incident (nor an alert, a shaded period or a retrain); both methods alerting is one
    incident per method."""
    from ml_assets.monitor.incidents import find_incidents
    from ml_assets_tests.monitor.alert_tables import results

    ks = ("univariate_drift", "car_value", "kolmogorov_smirnov", "kolmogorov_smirnov")
    js = ("univariate_drift", "car_value", "jensen_shannon", "jensen_shannon")
    lone = results({js: [False, True, True, False], ks: [False, False, True, False]})
    found = find_incidents(lone)
    assert [(i.method, i.first_partition, i.length) for i in found] == [
        ("jensen_shannon", "2018-01-15", 1),
        ("kolmogorov_smirnov", "2018-01-15", 1),
    ]
