"""Feature records that say which entity and event they are for, in-process: a real CatBoost
model served by :class:`ServingRuntime` with a real prediction log (parquet, read back with
``read_prediction_log`` / ``read_served``). The key and event time are logged and echoed, never
scored; records without them behave as before; bad ones are named errors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from ml_assets.contracts import load_contracts, parse_contract
from ml_assets.contracts.model import Contract
from ml_assets.features import load_feature_spec
from ml_assets.features.spec import FeatureSpec, parse_feature_spec
from ml_assets.serve.openapi import example_identified, openapi_document
from ml_assets.serve.prediction_log import (
    PredictionLog,
    layout_for,
    read_prediction_log,
    read_served,
)
from ml_assets.serve.runtime import (
    MODEL_FILE,
    PROBLEM_FILE,
    ModelBundle,
    ServingRuntime,
    load_bundle,
)
from ml_assets.serve.validation import (
    ErrorCode,
    RequestError,
    id_schema,
    validate_feature_records,
    validate_records,
)
from ml_assets.train import core
from ml_assets.train.config import TrainConfig
from ml_assets_tests.serve.test_runtime import synthetic

DAWN, DUSK = dt.date(2000, 1, 1), dt.date(2100, 1, 1)


@dataclass
class Served:
    runtime: ServingRuntime
    log: PredictionLog
    root: Path
    records: list[dict]
    """Valid feature records (no ids)."""


def car_loan_contract() -> Contract:
    return load_contracts()["car_loan"]


def composite_key_contract() -> Contract:
    """car_loan with a two-column key (id, branch): the entity and the labels carry both."""
    text = (Path(__file__).parents[2] / "ml_assets/contracts/car_loan.yaml").read_text()
    branch = "    branch: {type: string, nullable: false, description: Branch code.}\n"
    text = text.replace("primary_key: [id]", "primary_key: [id, branch]")
    text = text.replace("  key: [id]\n", "  key: [id, branch]\n")
    lines = []
    for line in text.splitlines(keepends=True):
        lines.append(line)
        if line.startswith("    id: {type: int"):
            lines.append(branch)  # after the entity's and the labels' id column
    contract = parse_contract("".join(lines))
    assert contract.entity.primary_key == ["id", "branch"]
    return contract


def serve(
    spec: FeatureSpec, bundle: ModelBundle, root: Path
) -> tuple[ServingRuntime, PredictionLog]:
    log = PredictionLog(layout_for(spec, bundle), root, flush_seconds=3600)
    return ServingRuntime(spec, bundle, prediction_log=log), log


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    contract = car_loan_contract()
    spec = load_feature_spec(contract)
    frame = synthetic(contract, spec, 300, seed=7)
    problem = core.Problem.from_frame(
        frame, contract.problem_type, contract.target, spec.names, spec.event_time
    )
    model = core.fit(core.time_split(frame, spec.event_time), problem, TrainConfig(iterations=10))
    path = tmp_path_factory.mktemp("model")
    model.save_model(str(path / MODEL_FILE))
    (path / PROBLEM_FILE).write_text(problem.to_json())
    return path, frame.tail(6).select(problem.features).to_dicts()


@pytest.fixture
def served(model_dir: tuple[Path, list[dict]], tmp_path: Path) -> Iterator[Served]:
    path, records = model_dir
    spec = load_feature_spec(car_loan_contract())
    runtime, log = serve(spec, load_bundle(path, labels={"model_version": "2"}), tmp_path / "log")
    yield Served(runtime, log, tmp_path / "log", records)
    log.close()


def logged(s: Served) -> pl.DataFrame:
    s.log.flush()
    return read_prediction_log("car_loan", DAWN, DUSK, root=s.root)


def test_key_and_event_time_are_logged_and_echoed_not_scored(served: Served) -> None:
    plain = served.records
    given = [
        {**plain[0], "id": 101, "timestamp": "2019-06-03T10:00:00Z"},
        {**plain[1], "id": 102, "timestamp": "2019-06-03T12:30:00+02:00"},  # an offset: to UTC
        {**plain[2], "id": 103, "timestamp": "2019-06-04T08:00:00"},  # naive: UTC
        {**plain[3], "id": 104},  # a key, no event time
        {**plain[4], "timestamp": "2019-06-05T00:00:00Z"},  # an event time, no key
        plain[5],  # neither
    ]
    with_ids = served.runtime.predict(given, request_id="ids", protocol="test")
    without = served.runtime.predict(plain, request_id="plain", protocol="test")

    # Never model inputs: the same rows score the same with or without them.
    strip = [{k: v for k, v in p.items() if k != "key"} for p in with_ids.predictions()]
    assert strip == without.predictions()
    # The key is echoed as predict by keys echoes it, only for records that gave it.
    assert [p.get("key") for p in with_ids.predictions()] == [
        {"id": 101}, {"id": 102}, {"id": 103}, {"id": 104}, None, None
    ]  # fmt: skip
    assert all("key" not in p for p in without.predictions())

    frame = logged(served)
    ids = frame.filter(pl.col("request_id") == "ids").sort("row")
    utc = dt.UTC
    assert ids["id"].to_list() == [101, 102, 103, 104, None, None]
    assert ids["timestamp"].to_list() == [
        dt.datetime(2019, 6, 3, 10, 0, tzinfo=utc),
        dt.datetime(2019, 6, 3, 10, 30, tzinfo=utc),
        dt.datetime(2019, 6, 4, 8, 0, tzinfo=utc),
        None,
        dt.datetime(2019, 6, 5, 0, 0, tzinfo=utc),
        None,
    ]
    assert ids["endpoint"].unique().to_list() == ["predict"]
    # The logged model inputs are the features only, as sent.
    for f in served.runtime.bundle.features:
        assert ids[f].to_list() == [r[f] for r in plain], f
    plain_rows = frame.filter(pl.col("request_id") == "plain")
    assert plain_rows["id"].null_count() == plain_rows["timestamp"].null_count() == 6

    # Monitoring places the rows that gave an event time at that event, the others at their
    # request time (today), and can join the keyed ones' labels by id.
    june = read_served(
        "car_loan", dt.date(2019, 6, 1), dt.date(2019, 7, 1), "timestamp", served.root
    )
    assert june.unreadable == []
    assert june.rows["id"].to_list() == [101, 102, 103, None]
    assert june.rows["row"].to_list() == [0, 1, 2, 4]
    today = dt.datetime.now(dt.UTC).date()
    recent = read_served(
        "car_loan", today - dt.timedelta(days=1), today + dt.timedelta(days=2), "timestamp",
        served.root,
    )  # fmt: skip
    assert sorted(recent.rows.filter(pl.col("request_id") == "ids")["row"].to_list()) == [3, 5]
    assert recent.rows.filter(pl.col("request_id") == "plain").height == 6


def test_records_without_ids_take_the_same_path(served: Served) -> None:
    schema, ids = served.runtime.features, served.runtime.ids
    rows, given = validate_feature_records(schema, ids, served.records)
    assert given is None
    assert rows == validate_records(schema, served.records)


def problems_of(served: Served, records: list) -> dict[str, str]:
    with pytest.raises(RequestError) as err:
        served.runtime.predict(records, request_id="bad", protocol="test")
    assert err.value.code is ErrorCode.INVALID_ARGUMENT and err.value.status == 422
    return dict(err.value.problems)


def test_bad_ids_are_named_errors_and_nothing_is_logged(served: Served) -> None:
    good = served.records[0]
    got = problems_of(
        served,
        [
            {**good, "id": "abc"},
            {**good, "id": -1},
            {**good, "id": 1.5},
            {**good, "id": None},
            {**good, "timestamp": "yesterday"},
            {**good, "timestamp": 1_560_000_000},
            {**good, "timestamp": None},
            {**good, "id": 7, "car_value": "abc", "colour": "red"},  # reported together
            {**good, "id": 8.0, "timestamp": "2019-06-03"},  # a whole float; a date is midnight
        ],
    )
    assert got == {
        "records[0].id": 'expected an integer, got "abc"',
        "records[1].id": "must be >= 0, got -1",
        "records[2].id": "expected an integer, got 1.5",
        "records[3].id": "must not be null",
        "records[4].timestamp": (
            'expected an ISO 8601 datetime string (e.g. "2019-07-01T12:00:00Z"), got "yesterday"'
        ),
        "records[5].timestamp": (
            'expected an ISO 8601 datetime string (e.g. "2019-07-01T12:00:00Z"), got 1560000000'
        ),
        "records[6].timestamp": "must not be null",
        "records[7].car_value": 'expected a number, got "abc"',
        "records[7].colour": "unknown field",
    }
    assert logged(served).height == 0
    ok = served.runtime.predict(
        [{**good, "id": 8.0, "timestamp": "2019-06-03"}], request_id="ok", protocol="test"
    )
    assert ok.predictions()[0]["key"] == {"id": 8}
    row = logged(served).row(0, named=True)
    assert (row["id"], row["timestamp"]) == (8, dt.datetime(2019, 6, 3, tzinfo=dt.UTC))


def test_a_composite_key_is_given_whole_and_logged_whole(
    model_dir: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    contract = composite_key_contract()
    spec = parse_feature_spec(
        (Path(__file__).parents[2] / "ml_assets/contracts/features/car_loan.yaml").read_text(),
        contract,
    )
    path, records = model_dir
    runtime, log = serve(spec, load_bundle(path), tmp_path / "log")
    assert runtime.ids.names == ("id", "branch", "timestamp")
    good = records[0]
    got = problems_of(
        Served(runtime, log, tmp_path / "log", records),
        [
            {**good, "id": 1},
            {**good, "branch": "north", "timestamp": "2019-06-03T00:00:00Z"},
            {**good, "id": 3, "branch": 5},
        ],
    )
    assert got == {
        "records[0].branch": "missing: the key is (id, branch); give all of its fields or none",
        "records[1].id": "missing: the key is (id, branch); give all of its fields or none",
        "records[2].branch": "expected a string, got 5",
    }
    out = runtime.predict(
        [{**good, "id": 1, "branch": "north", "timestamp": "2019-06-03T00:00:00Z"}, good],
        request_id="whole",
        protocol="test",
    )
    assert [p.get("key") for p in out.predictions()] == [{"id": 1, "branch": "north"}, None]
    log.close()
    frame = read_prediction_log(contract.name, DAWN, DUSK, root=tmp_path / "log")
    assert frame["id"].to_list() == [1, None]
    assert frame["branch"].to_list() == ["north", None]
    assert frame["timestamp"].to_list() == [dt.datetime(2019, 6, 3, tzinfo=dt.UTC), None]


def test_a_feature_named_like_the_key_or_event_time_stays_a_feature() -> None:
    spec = load_feature_spec(car_loan_contract())
    assert id_schema(spec, spec.names).names == ("id", "timestamp")
    # A model feature of that name wins: the field is not an id field any more (the feature
    # spec refuses such a feature today; this is the guard should that ever change).
    assert id_schema(spec, [*spec.names, "id"]).names == ("timestamp",)
    assert id_schema(spec, [*spec.names, "id", "timestamp"]).names == ()


def test_openapi_lists_the_optional_id_fields(served: Served) -> None:
    doc = openapi_document(served.runtime)
    record = doc["components"]["schemas"]["FeatureRecord"]
    assert {"id", "timestamp"} <= record["properties"].keys()
    assert not {"id", "timestamp"} & set(record["required"])
    assert record["properties"]["id"]["type"] == "integer"
    assert record["properties"]["timestamp"]["format"] == "date-time"
    assert set(record["required"]) == set(served.runtime.bundle.features)
    examples = doc["components"]["schemas"]["PredictRequest"]["examples"]
    assert examples[1]["records"][0] == example_identified(served.runtime)
    for example in examples:  # every example is a request the service accepts
        served.runtime.predict(example["records"], request_id="ex", protocol="test")
