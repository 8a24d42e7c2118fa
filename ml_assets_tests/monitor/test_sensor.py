"""The retrain sensor against monitoring partitions written into a temporary lake."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import dagster as dg
import polars as pl
import pytest

from ml_assets.dataset import Dataset, load_datasets
from ml_assets.features.assets import build_training_set_asset
from ml_assets.monitor.sensors import build_retrain_sensor, read_results
from ml_assets.storage import LAKE_IO, Lake, LakeIOManager
from ml_assets_tests.monitor.alert_tables import DRIFT, ESTIMATED, REALIZED, WEEKS, results

T, F = True, False


@pytest.fixture(scope="module")
def car_loan() -> Dataset:
    return load_datasets()["car_loan"]


@pytest.fixture(autouse=True)
def labels_needed_only_where_a_test_says(monkeypatch):
    """Most tests here are about incidents, not labels: no label coverage needed unless set."""
    monkeypatch.setenv("ML_ASSETS_RETRAIN_MIN_LABEL_COVERAGE", "0")


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(base_path=str(tmp_path / "lake"))


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def write_monitoring(lake: Lake, dataset: Dataset, series: dict) -> None:
    """Write each partition's rows as the monitoring asset does: one file per partition."""
    table = results(series, dataset=dataset.name)
    for partition in table.get_column("partition").unique().sort():
        lake.write(dataset.keys.monitoring, partition, table.filter(partition=partition))


class Daemon:
    """Ticks a sensor as the daemon does: the cursor each tick returns is stored and handed to
    the next tick (a "restart" is a new context built from the stored cursor)."""

    def __init__(self, sensor: dg.SensorDefinition, instance, lake: Lake) -> None:
        self.sensor, self.instance, self.lake = sensor, instance, lake
        self.cursor: str | None = None

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"lake": self.lake}
        )
        data = self.sensor.evaluate_tick(context)
        if data.cursor is not None:
            self.cursor = data.cursor
        return data


def test_the_sensor_is_named_for_the_dataset_targets_its_train_job_and_is_on(car_loan):
    sensor = build_retrain_sensor(car_loan)
    assert sensor.name == "car_loan_retrain_sensor"
    assert sensor.job_name == "car_loan_train"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_no_results_no_run(car_loan, lake, instance):
    data = Daemon(build_retrain_sensor(car_loan), instance, lake).tick()
    assert data.run_requests == [] and "no monitoring results" in data.skip_message


def test_a_single_noisy_partition_launches_nothing(car_loan, lake, instance):
    write_monitoring(lake, car_loan, {ESTIMATED: [F, T, F, F, T], REALIZED: [F, F, T, F, F]})
    data = Daemon(build_retrain_sensor(car_loan), instance, lake).tick()
    assert data.run_requests == []


def test_drift_alone_launches_nothing(car_loan, lake, instance):
    write_monitoring(lake, car_loan, {DRIFT: [T, T, T, T], ESTIMATED: [F, F, F, F]})
    assert Daemon(build_retrain_sensor(car_loan), instance, lake).tick().run_requests == []


def test_a_sustained_incident_launches_one_train_run_with_the_cutoff_after_it(
    car_loan, lake, instance
):
    write_monitoring(lake, car_loan, {ESTIMATED: [F, F, T, T]})
    [request] = Daemon(build_retrain_sensor(car_loan), instance, lake).tick().run_requests
    incident = "car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-15"
    assert request.run_key == incident
    # last alerting partition: the week of 2018-01-22 (UTC), so it ends on 2018-01-29
    assert request.run_config == {
        "ops": {"car_loan__training_set": {"config": {"cutoff": "2018-01-29T00:00:00+00:00"}}}
    }
    assert request.tags["ml_assets/incident"] == incident
    assert request.tags["ml_assets/champion_version"] == "3"


def test_the_run_config_is_valid_for_the_training_set_asset(car_loan, lake, instance):
    write_monitoring(lake, car_loan, {REALIZED: [T, T]})
    sensor = build_retrain_sensor(car_loan, window_days=56)
    [request] = Daemon(sensor, instance, lake).tick().run_requests
    defs = dg.Definitions(
        assets=[build_training_set_asset(car_loan)],
        jobs=[dg.define_asset_job("train_set", selection=[car_loan.keys.training_set])],
        resources={"lake": lake, LAKE_IO: LakeIOManager(lake=lake)},
    )
    dg.validate_run_config(defs.resolve_job_def("train_set"), request.run_config)
    config = request.run_config["ops"]["car_loan__training_set"]["config"]
    assert config == {"cutoff": "2018-01-15T00:00:00+00:00", "window_days": 56.0}


def test_one_run_per_incident_never_twice_even_after_a_restart(car_loan, lake, instance):
    sensor = build_retrain_sensor(car_loan)
    daemon = Daemon(sensor, instance, lake)
    write_monitoring(lake, car_loan, {ESTIMATED: [F, T, T]})
    first = daemon.tick().run_requests
    assert [r.run_key for r in first] == [
        "car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-08"
    ]
    assert daemon.tick().run_requests == []  # same results, second tick
    write_monitoring(lake, car_loan, {ESTIMATED: [F, T, T, T]})  # the incident goes on
    assert daemon.tick().run_requests == []
    stored = daemon.cursor
    assert (
        "car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-08" in json.loads(stored)["handled"]
    )
    restarted = Daemon(build_retrain_sensor(car_loan), instance, lake)  # new process
    restarted.cursor = stored
    assert restarted.tick().run_requests == []


def test_recovery_then_a_new_sustained_incident_launches_again(car_loan, lake, instance):
    daemon = Daemon(build_retrain_sensor(car_loan), instance, lake)
    write_monitoring(lake, car_loan, {ESTIMATED: [T, T]})
    assert len(daemon.tick().run_requests) == 1
    write_monitoring(lake, car_loan, {ESTIMATED: [T, T, F, T]})  # recovered, then one alert
    assert daemon.tick().run_requests == []
    write_monitoring(lake, car_loan, {ESTIMATED: [T, T, F, T, T]})
    [request] = daemon.tick().run_requests
    assert request.run_key == "car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-22"
    assert request.run_config["ops"]["car_loan__training_set"]["config"]["cutoff"] == (
        "2018-02-05T00:00:00+00:00"
    )


def test_n_is_configurable(car_loan, lake, instance):
    write_monitoring(lake, car_loan, {ESTIMATED: [T, T, F]})
    three = Daemon(build_retrain_sensor(car_loan, consecutive=3), instance, lake)
    write_monitoring(lake, car_loan, {ESTIMATED: [F, T, T]})
    assert three.tick().run_requests == []
    write_monitoring(lake, car_loan, {ESTIMATED: [F, T, T, T]})
    assert len(three.tick().run_requests) == 1


def test_n_comes_from_the_settings(car_loan, lake, instance, monkeypatch):
    monkeypatch.setenv("ML_ASSETS_RETRAIN_CONSECUTIVE", "1")
    write_monitoring(lake, car_loan, {ESTIMATED: [F, T]})
    assert len(Daemon(build_retrain_sensor(car_loan), instance, lake).tick().run_requests) == 1


def test_an_incident_that_already_recovered_launches_nothing(car_loan, lake, instance):
    # e.g. months of monitoring backfilled at once: the regime of that incident has passed
    write_monitoring(lake, car_loan, {ESTIMATED: [T, T, T, F, F]})
    daemon = Daemon(build_retrain_sensor(car_loan), instance, lake)
    assert daemon.tick().run_requests == []
    assert "car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-01" in daemon.cursor
    everything = Daemon(build_retrain_sensor(car_loan, ongoing_only=False), instance, lake)
    assert len(everything.tick().run_requests) == 1


def test_the_reader_takes_every_partition_file_in_partition_order(car_loan, lake):
    write_monitoring(lake, car_loan, {ESTIMATED: [T, F, T], REALIZED: [F, F, F]})
    table = read_results(lake, car_loan)
    assert table.height == 6
    assert table.get_column("partition").unique(maintain_order=True).to_list() == WEEKS[:3]


def test_the_code_location_has_a_retrain_sensor_per_dataset_whose_runs_fit_the_train_job(
    car_loan, lake, instance
):
    from ml_assets.definitions import defs

    names = {s.name for s in defs.sensors}
    assert {
        "car_loan_retrain_sensor",
        "car_price_retrain_sensor",
        "credit_card_retrain_sensor",
    } <= names
    write_monitoring(lake, car_loan, {ESTIMATED: [T, T]})
    sensor = defs.resolve_sensor_def("car_loan_retrain_sensor")
    [request] = Daemon(sensor, instance, lake).tick().run_requests
    dg.validate_run_config(defs.resolve_job_def("car_loan_train"), request.run_config)


# --- label arrivals: the challenger needs labelled rows of the new regime ----------------------


def write_rows_and_labels(lake: Lake, dataset: Dataset, observed: dict[str, str]) -> None:
    """Ten events in each of the weeks 2018-01-08 and 2018-01-15 (ids 0-9 and 10-19), and the
    labels of each week's events observed at the given day."""
    weeks = {"2018-01-08": range(0, 10), "2018-01-15": range(10, 20)}
    for week, ids in weeks.items():
        start = dt.datetime.fromisoformat(week).replace(tzinfo=dt.UTC)
        lake.write(
            dataset.keys.features,
            week,
            pl.DataFrame({"id": list(ids), "timestamp": [start] * len(ids)}),
        )
        if week in observed:
            day = dt.datetime.fromisoformat(observed[week])
            lake.write(
                dataset.keys.validated["labels"],
                week,
                pl.DataFrame(
                    {"id": list(ids), "observed_at": [day] * len(ids), "repaid": [1] * len(ids)}
                ),
            )


def test_a_sustained_incident_waits_for_its_labels_then_retrains_at_the_monitoring_clock(
    car_loan, lake, instance, monkeypatch
):
    monkeypatch.setenv("ML_ASSETS_RETRAIN_MIN_LABEL_COVERAGE", "0.5")
    # incident from 2018-01-08; its first two partitions' labels arrive on 2018-02-07 and later
    write_rows_and_labels(lake, car_loan, {"2018-01-08": "2018-02-07"})
    daemon = Daemon(build_retrain_sensor(car_loan), instance, lake)
    write_monitoring(lake, car_loan, {ESTIMATED: [F, T, T, T]})  # clock: 2018-01-29
    waiting = daemon.tick()
    assert waiting.run_requests == []
    assert "waiting for labels (0 of 20 rows" in waiting.skip_message
    write_monitoring(lake, car_loan, {ESTIMATED: [F, T, T, T, T]})  # clock: 2018-02-05
    assert daemon.tick().run_requests == []  # 2018-02-07 is still in the future
    write_monitoring(lake, car_loan, {ESTIMATED: [F, T, T, T, T, T]})  # clock: 2018-02-12
    [request] = daemon.tick().run_requests
    assert request.run_key == "car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-08"
    config = request.run_config["ops"]["car_loan__training_set"]["config"]
    assert config["cutoff"] == "2018-02-12T00:00:00+00:00"  # the clock, not the incident's end
    assert request.tags["ml_assets/label_coverage"] == "0.5000"
    write_monitoring(lake, car_loan, {ESTIMATED: [F, T, T, T, T, T, T]})
    assert daemon.tick().run_requests == []  # handled: once per incident


def test_labels_observed_after_the_monitoring_clock_do_not_count(
    car_loan, lake, instance, monkeypatch
):
    """Replaying history: every label is already in the lake, but the clock says which had
    arrived when the newest partition was monitored."""
    monkeypatch.setenv("ML_ASSETS_RETRAIN_MIN_LABEL_COVERAGE", "0.5")
    write_rows_and_labels(lake, car_loan, {"2018-01-08": "2018-03-01", "2018-01-15": "2018-03-01"})
    write_monitoring(lake, car_loan, {ESTIMATED: [F, T, T, T]})
    data = Daemon(build_retrain_sensor(car_loan), instance, lake).tick()
    assert data.run_requests == [] and "0 of 20 rows" in data.skip_message


def test_min_label_coverage_is_validated():
    from ml_assets.settings import Settings

    with pytest.raises(ValueError, match="between 0 and 1"):
        Settings(retrain_min_label_coverage=1.5)


RECONSTRUCTION = ("multivariate_drift", None, "pca", "reconstruction_error")


def test_the_contract_says_which_calculators_retrain(car_loan, lake, instance):
    """By default performance (estimated or realized) retrains; a contract may add multivariate
    drift (``monitoring.retrain_on``); univariate drift still launches nothing then."""
    assert car_loan.contract.monitoring.retrain_on == [
        "estimated_performance",
        "realized_performance",
    ]
    write_monitoring(lake, car_loan, {RECONSTRUCTION: [F, T, T], DRIFT: [T, T, T]})
    assert Daemon(build_retrain_sensor(car_loan), instance, lake).tick().run_requests == []
    monitoring = car_loan.contract.monitoring.model_copy(
        update={"retrain_on": ["estimated_performance", "multivariate_drift"]}
    )
    contract = car_loan.contract.model_copy(update={"monitoring": monitoring})
    on_drift = Dataset.build(contract)
    sensor = build_retrain_sensor(on_drift)
    [request] = Daemon(sensor, instance, lake).tick().run_requests
    assert request.run_key.startswith("car_loan:multivariate_drift:")
    assert "multivariate" in (sensor.description or "")


F1 = ("estimated_performance", None, "cbpe", "f1")


def test_metrics_alerting_over_the_same_weeks_are_one_incident_and_one_retrain(
    car_loan, lake, instance
):
    """Estimated ROC AUC, realized ROC AUC and estimated F1 alerting through overlapping weeks
    are one shift: one run, keyed by the incident that began first, naming the others; F1 (not
    the primary metric, which the check judges) never launches a run of its own."""
    write_monitoring(
        lake,
        car_loan,
        {ESTIMATED: [F, T, T, T, T], REALIZED: [F, F, T, T, T], F1: [T, T, T, T, T]},
    )
    daemon = Daemon(build_retrain_sensor(car_loan), instance, lake)
    [request] = daemon.tick().run_requests
    assert request.run_key == "car_loan:estimated_performance:-:cbpe:roc_auc:2018-01-08"
    assert request.tags["ml_assets/same_episode"] == (
        "car_loan:realized_performance:-:realized:roc_auc:2018-01-15"
    )
    assert daemon.tick().run_requests == []
    write_monitoring(lake, car_loan, {F1: [T, T, T, T, T, T, T]})
    assert daemon.tick().run_requests == []
