"""The training window: every labelled row before the cutoff unless a window is declared, and
an empty training set that says why, on a yearly-survey dataset (one event date per year).

The fast tests read a real lake written directly (:func:`ml_assets_tests.yearly.write_lake`);
the slow one runs the pipeline, the training set and the model through Dagster and MLflow.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from ml_assets.contracts import ContractError, diff_contracts, parse_contract
from ml_assets.dataset import Dataset
from ml_assets.features.assets import EMPTY_REASON, POINT_IN_TIME, build_feature_definitions
from ml_assets.features.offline import (
    point_in_time_verdict,
    resolve_window,
    training_set_frame,
)
from ml_assets.storage import Lake
from ml_assets.train import core
from ml_assets_tests import yearly

WAVE_2022 = yearly.ROWS_PER_WAVE * 2  # rows of the 2022 and 2023 waves


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(base_path=str(tmp_path_factory.mktemp("yearly_lake")))
    yearly.write_lake(Dataset.build(yearly.contract()), lake)
    return lake


def _build(lake: Lake, training: str = "", window_days: float | None = None, cutoff=None):
    dataset = Dataset.build(yearly.contract(training))
    window = resolve_window(dataset, lake, cutoff or yearly.CUTOFF, window_days)
    frame, facts = training_set_frame(dataset, lake, window)
    return dataset, window, frame, facts


def test_the_default_window_takes_every_labelled_row_before_the_cutoff(lake: Lake) -> None:
    _, window, frame, facts = _build(lake)
    rows, _ = yearly.records()
    assert frame.height == len(rows) == facts.rows_in_window == facts.labelled
    assert window.days is None and window.start == dt.datetime(2019, 1, 1, tzinfo=dt.UTC)
    assert "every row before the cutoff" in window.origin
    assert facts.rows_before_window == 0 and facts.why_empty("survey") is None
    # every wave is in, each row with its own label
    assert frame.get_column("answered_at").dt.year().unique().sort().to_list() == [
        2019,
        2020,
        2021,
        2022,
        2023,
    ]


def test_the_default_window_starts_at_the_earliest_materialized_partition(
    tmp_path: Path,
) -> None:
    """Partitions never materialized before the first one that is are not required."""
    dataset = Dataset.build(yearly.contract())
    lake = Lake(base_path=str(tmp_path))
    yearly.write_lake(dataset, lake)
    keys = dataset.partitions.keys()
    for key in keys[: keys.index("2021-01-01")]:
        lake.path(dataset.keys.features, key).unlink()
    window = resolve_window(dataset, lake, yearly.CUTOFF, None)
    assert window.start == dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
    frame, _ = training_set_frame(dataset, lake, window)
    assert frame.height == 3 * yearly.ROWS_PER_WAVE  # 2021, 2022, 2023
    # A hole after the first materialized partition is an error naming it, not a silent gap.
    lake.path(dataset.keys.features, "2022-01-01").unlink()
    with pytest.raises(FileNotFoundError, match=r"\['2022-01-01'\] are not materialized"):
        training_set_frame(dataset, lake, resolve_window(dataset, lake, yearly.CUTOFF, None))


def test_an_empty_training_set_says_why_and_what_to_change(lake: Lake) -> None:
    dataset, window, frame, facts = _build(lake, window_days=365)
    assert frame.height == 0 and facts.rows_in_window == 0
    why = facts.why_empty("survey")
    assert why is not None
    for part in (
        "window [2023-03-02, 2024-03-01) (365 days, run config window_days), cutoff 2024-03-01: "
        "0 rows in the window, 0 labelled. No row's",
        ". Labels observed 2019-02-19 .. 2023-02-19 (600, 600 before the cutoff); rows before "
        "the cutoff: events 2019-01-15 .. 2023-01-15, 600 older than the window.",
        "0 labelled. No row's event time falls in the window: widen it (--window-days N, run config "
        "window_days or the contract's training.window_days",
        "or move the cutoff (--cutoff ISO",
    ):
        assert part in why, why
    verdict = point_in_time_verdict(
        frame, "answered_at", "renewed", window.cutoff, window.length, why
    )
    assert not verdict.passed and not verdict.broken  # a warning: the run goes on
    assert verdict.description == f"the training set is empty: {why}"
    with pytest.raises(core.TrainingDataError) as raised:
        core.check_training_frame(frame, "renewed", dataset.contract.problem_type, why)
    assert str(raised.value) == f"the training set is empty: {why}"


def test_rows_in_the_window_whose_labels_come_after_the_cutoff(lake: Lake) -> None:
    """A cutoff between the 2023 answers and their labels: rows in the window, none labelled."""
    cutoff = dt.datetime(2023, 2, 1, tzinfo=dt.UTC)
    _, _, frame, facts = _build(lake, window_days=30, cutoff=cutoff)
    assert frame.height == 0 and facts.rows_in_window == yearly.ROWS_PER_WAVE
    why = facts.why_empty("survey")
    head = (
        "[2023-01-02, 2023-02-01) (30 days, run config window_days), cutoff 2023-02-01: "
        f"{yearly.ROWS_PER_WAVE} rows in the window, 0 labelled"
    )
    assert head in why
    assert "(600, 480 before the cutoff)" in why  # labels of the four earlier waves
    assert "belong to no row in the window: widen it" in why


def test_the_contract_window_is_honoured_and_the_run_config_overrides_it(lake: Lake) -> None:
    _, window, frame, facts = _build(lake, training="{window_days: 1000}")
    assert window.days == 1000 and window.origin == "the contract's training.window_days"
    assert window.start == yearly.CUTOFF - dt.timedelta(days=1000)
    assert frame.height == facts.rows_in_window == WAVE_2022
    assert frame.get_column("answered_at").min() >= window.start
    assert facts.rows_before_window == 3 * yearly.ROWS_PER_WAVE  # left out, and said so
    _, window, frame, _ = _build(lake, training="{window_days: 1000}", window_days=2000)
    assert window.days == 2000 and window.origin == "run config window_days"
    assert frame.height == 5 * yearly.ROWS_PER_WAVE


@pytest.mark.parametrize(
    "block, message",
    [
        ("{window_days: 0}", "training.window_days: Input should be greater than 0"),
        ("{window_days: -5}", "training.window_days: Input should be greater than 0"),
        ("{window_days: a year}", "training.window_days: Input should be a valid number"),
        ("{window: 30}", "training.window: Extra inputs are not permitted"),
    ],
)
def test_the_training_block_is_validated_with_its_line(block: str, message: str) -> None:
    text = yearly.contract_text(block)
    line = text.splitlines().index(f"training: {block}") + 1
    with pytest.raises(ContractError) as raised:
        parse_contract(text, "survey.yaml")
    assert f"survey.yaml:{line}: {message}" in str(raised.value)


def test_the_training_block_is_optional_and_its_change_compatible() -> None:
    plain, windowed = yearly.contract(), yearly.contract("{window_days: 730}")
    assert plain.training is None and windowed.training.window_days == 730
    assert plain.fingerprint() != windowed.fingerprint()
    [change] = diff_contracts(plain, windowed)
    assert not change.breaking
    assert str(change).endswith("training.window_days: every row before the cutoff -> 730 days")


@pytest.mark.slow
def test_a_yearly_dataset_trains_with_the_default_window(tmp_path: Path) -> None:
    """Seeded SQLite -> pipeline -> training set -> model, with nothing configured; then the old
    365-day window: the model fails with the reason the training set gave."""
    from ml_assets.ingest.assets import SqlSource
    from ml_assets.registry.tracking import MlflowTracking
    from ml_assets.train.assets import training_definitions
    from ml_assets_tests.pipeline import ingest_assets, range_tags, resources

    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    yearly.seed(url)
    contract = yearly.contract()
    dataset = Dataset.build(contract)
    defs = dg.Definitions.merge(build_feature_definitions(dataset), training_definitions(dataset))
    assets = [*ingest_assets(contract), *defs.assets]
    res = {
        **resources(tmp_path / "lake", url),
        "source": SqlSource(url=url),
        "mlflow": MlflowTracking(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            artifact_root=str(tmp_path / "artifacts"),
        ),
    }
    pipeline = [
        a for a in assets if a.partitions_def is not None and dataset.keys.predictions not in a.keys
    ]
    ran = dg.materialize(
        pipeline, resources=res, tags=range_tags(yearly.FIRST_KEY, yearly.LAST_KEY)
    )
    assert ran.success
    keys = dataset.keys
    selection = [keys.training_set, keys.model]
    small = {"survey__model": {"config": {"iterations": 100}}}
    with dg.instance_for_test() as instance:
        trained = dg.materialize(
            [*assets, *defs.asset_checks],
            selection=selection,
            resources=res,
            instance=instance,
            run_config={"ops": small},
        )
        assert trained.success
        meta = {
            e.asset_key: {k: v.value for k, v in e.materialization.metadata.items()}
            for e in trained.get_asset_materialization_events()
        }
        assert meta[keys.training_set]["dagster/row_count"] == 5 * yearly.ROWS_PER_WAVE
        assert meta[keys.training_set]["cutoff"] == yearly.CUTOFF.isoformat()
        split = meta[keys.model]["split"]
        assert split["train_rows"] + split["valid_rows"] + split["test_rows"] == 600
        assert meta[keys.model]["model_version"] == "1"

        old_default = {"survey__training_set": {"config": {"window_days": 365}}, **small}
        failed = dg.materialize(
            [*assets, *defs.asset_checks],
            selection=selection,
            resources=res,
            instance=instance,
            run_config={"ops": old_default},
            raise_on_error=False,
        )
    assert not failed.success
    why = next(
        e.materialization.metadata[EMPTY_REASON].value
        for e in failed.get_asset_materialization_events()
        if e.asset_key == keys.training_set
    )
    check = next(e for e in failed.get_asset_check_evaluations() if e.check_name == POINT_IN_TIME)
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.description == f"the training set is empty: {why}"
    [failure] = [e for e in failed.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    text = error.message + "".join(c.message for c in _causes(error))
    assert f"the training set is empty: {why}" in text
    assert "TrainingDataError" in text


def _causes(error):
    while error.cause is not None:
        error = error.cause
        yield error
