"""Validation generated from the contract: in-process, no server (the server tests repeat the
important cases over HTTP and gRPC)."""

from __future__ import annotations

import math

import pytest

from ml_assets.serve.validation import (
    ErrorCode,
    Kind,
    RequestError,
    check_content_type,
    decode_json,
    entity_schema,
    feature_rules,
    feature_schema,
    records_of,
    validate_records,
)
from ml_assets_tests.serve import support


@pytest.fixture(scope="module")
def spec():
    return support.car_loan()[1]


@pytest.fixture(scope="module")
def features(spec):
    return feature_schema(spec, spec.names)


@pytest.fixture(scope="module")
def entities(spec):
    return entity_schema(spec)


def good_feature_record() -> dict:
    return {
        "car_value": 39811.0,
        "debt_to_income_ratio": 0.63,
        "loan_length": 19.0,
        "driver_tenure": None,
        "repaid_loan_on_prev_car": False,
        "salary_rank": 2,
        "downpayment_share": 0.4,
        "car_value_per_month": 2095.3,
        "log_car_value": 10.59,
        "application_month": 1,
        "default_rate_90d_by_salary": 0.5,
        "outcomes_90d_by_salary": 120,
        "applications_7d_by_salary": 30,
        "mean_car_value_30d_by_salary": 30000.0,
        "request_hour": 13,
        "request_weekday": 7,
    }


def good_entity_record() -> dict:
    return {
        "car_value": 39811.0,
        "salary_range": "40K - 60K €",
        "debt_to_income_ratio": 0.63,
        "loan_length": 19.0,
        "repaid_loan_on_prev_car": False,
        "size_of_downpayment": "40%",
        "driver_tenure": 0.2,
    }


def problems(schema, records) -> dict[str, str]:
    with pytest.raises(RequestError) as err:
        validate_records(schema, records)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT
    assert err.value.status == 422
    return dict(err.value.problems)


def test_feature_rules_come_from_the_contract(spec) -> None:
    rules = feature_rules(spec)
    ent = spec.contract.entity.columns
    # passthrough: the contract column itself
    assert rules["car_value"].kind is Kind.FLOAT
    assert (rules["car_value"].min, rules["car_value"].max) == (ent["car_value"].min, 1_000_000)
    assert rules["driver_tenure"].nullable is ent["driver_tenure"].nullable is True
    assert rules["repaid_loan_on_prev_car"].kind is Kind.BOOL
    # a mapped band takes only the mapping's values; nullable like its column
    assert rules["salary_rank"].allowed == (0, 1, 2, 3)
    assert rules["salary_rank"].nullable is True
    assert rules["downpayment_share"].allowed == (0.0, 0.1, 0.2, 0.3, 0.4)
    # log of the column's range; calendar ranges; counts and rates
    assert rules["log_car_value"].max == pytest.approx(math.log1p(1_000_000))
    assert (rules["application_month"].min, rules["application_month"].max) == (1, 12)
    assert (rules["request_weekday"].min, rules["request_weekday"].max) == (1, 7)
    assert rules["outcomes_90d_by_salary"].kind is Kind.INT
    assert rules["outcomes_90d_by_salary"].min == 0
    assert (rules["default_rate_90d_by_salary"].min, rules["default_rate_90d_by_salary"].max) == (
        0,
        1,
    )


def test_entity_schema_requires_what_features_read(entities, spec) -> None:
    required = {f.name for f in entities.fields if f.required}
    assert required == set(spec.request_inputs())
    assert not entities.field("id").required  # key: optional
    assert not entities.field("timestamp").required  # event time: default request time
    assert entities.field("salary_range").allowed == tuple(
        spec.contract.entity.columns["salary_range"].allowed
    )


def test_good_records_pass_as_rows_in_schema_order(features, entities) -> None:
    rows = validate_records(features, [good_feature_record()] * 3)
    assert len(rows) == 3
    assert rows[0] == [good_feature_record()[n] for n in features.names]
    rec = {**good_entity_record(), "id": 7, "timestamp": "2019-07-01T10:00:00Z"}
    (row,) = validate_records(entities, [rec])
    when = row[entities.names.index("timestamp")]
    assert when.isoformat() == "2019-07-01T10:00:00+00:00"
    (row,) = validate_records(entities, [good_entity_record()])
    assert row[entities.names.index("id")] is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("car_value", "abc", 'expected a number, got "abc"'),
        ("car_value", True, "expected a number, got true"),
        ("car_value", -5, "must be >= 0, got -5"),
        ("car_value", 2e6, "must be <= 1000000, got 2000000.0"),
        ("car_value", None, "must not be null"),
        ("car_value", [1], "expected a number, got [1]"),
        ("car_value", float("inf"), "expected a finite number, got Infinity"),
        ("car_value", float("nan"), "expected a finite number, got NaN"),
        ("salary_rank", 7, "expected one of [0,1,2,3], got 7"),
        ("salary_rank", 1.5, "expected an integer, got 1.5"),
        ("repaid_loan_on_prev_car", "false", 'expected true or false, got "false"'),
        ("request_hour", 24, "must be <= 23, got 24"),
        ("outcomes_90d_by_salary", -1, "must be >= 0, got -1"),
        ("downpayment_share", 0.25, "expected one of [0.0,0.1,0.2,0.3,0.4], got 0.25"),
    ],
)
def test_bad_values_name_record_and_field(features, field, value, message) -> None:
    records = [good_feature_record() for _ in range(4)]
    records[3][field] = value
    assert problems(features, records) == {f"records[3].{field}": message}


def test_whole_floats_pass_as_integers(features) -> None:
    rec = {**good_feature_record(), "salary_rank": 2.0, "request_hour": 5.0}
    (row,) = validate_records(features, [rec])
    assert row[features.names.index("salary_rank")] == 2
    assert type(row[features.names.index("request_hour")]) is int


def test_unknown_missing_and_non_objects(features, entities) -> None:
    extra = {**good_feature_record(), "colour": "red"}
    missing = good_feature_record()
    del missing["loan_length"]
    found = problems(features, [extra, missing, [1, 2], "x"])
    assert found == {
        "records[0].colour": "unknown field",
        "records[1].loan_length": "missing (required)",
        "records[2]": "expected an object, got [1,2]",
        "records[3]": 'expected an object, got "x"',
    }
    bad = {**good_entity_record(), "salary_range": "100K+", "timestamp": "yesterday"}
    found = problems(entities, [bad])
    assert found["records[0].salary_range"].startswith('expected one of ["0 - 20K €"')
    assert found["records[0].timestamp"].startswith("expected an ISO 8601 datetime")


def test_missing_fields_do_not_hide_bad_values_in_the_same_record(features) -> None:
    rec = {**good_feature_record(), "car_value": "abc", "colour": "red"}
    del rec["loan_length"]
    assert problems(features, [rec]) == {
        "records[0].colour": "unknown field",
        "records[0].loan_length": "missing (required)",
        "records[0].car_value": 'expected a number, got "abc"',
    }


def test_json_bodies() -> None:
    assert decode_json(b'{"records": []}') == {"records": []}
    # NaN / Infinity are not JSON; they are kept so the field can be named
    payload = decode_json(b'{"records": [{"car_value": NaN, "loan_length": -Infinity}]}')
    assert repr(payload["records"][0]["car_value"]) == "NaN"
    with pytest.raises(RequestError) as err:
        decode_json(b'{"records": [')
    assert err.value.status == 400
    assert err.value.problems[0][0] == "body"


@pytest.mark.parametrize(
    ("payload", "where", "status"),
    [
        ({"records": []}, "records", 422),
        ({"records": {"a": 1}}, "records", 422),
        ({"rows": []}, "rows", 422),
        ({}, "records", 422),
        ([{"car_value": 1}], "body", 422),
        ({"records": [{}] * 11}, "records", 413),
    ],
)
def test_request_shape(payload, where, status) -> None:
    with pytest.raises(RequestError) as err:
        records_of(payload, max_records=10)
    assert err.value.status == status
    assert err.value.problems[0][0] == where


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/vnd.bentoml+pickle"],
)
def test_only_json_content_types(content_type) -> None:
    with pytest.raises(RequestError) as err:
        check_content_type(content_type)
    assert err.value.status == 415
    check_content_type("application/json; charset=utf-8")


def test_many_problems_are_capped(features) -> None:
    records = [{**good_feature_record(), "car_value": "x"} for _ in range(100)]
    with pytest.raises(RequestError) as err:
        validate_records(features, records)
    assert "and " in err.value.message and "more" in err.value.message
    assert len(err.value.to_json()["error"]["fields"]) == 20


@pytest.mark.parametrize("unseen", ["reject", "accept"])
def test_a_learned_category_serves_the_values_the_champion_learned(unseen: str) -> None:
    """``categories: learned``: the contract lists no values; the champion's learned ones
    (carried in its problem) are the only ones served under ``unseen: reject``; under
    ``unseen: accept`` any text is scored (monitoring counts the unseen)."""
    from ml_assets.contracts import parse_contract
    from ml_assets.features.spec import FeatureSpec, default_feature_file
    from ml_assets.serve.validation import learned_by_column
    from ml_assets_tests import census

    text = census.CONTRACT.replace(
        "occupation: {type: category, categories: learned,",
        f"occupation: {{type: category, categories: learned, unseen: {unseen},",
    )
    contract = parse_contract(text, "census.yaml")
    spec = FeatureSpec(contract=contract, file=default_feature_file(contract))
    learned = learned_by_column(spec, {"occupation": ["occ_00", "occ_01"]})
    schema = feature_schema(spec, spec.names, learned)
    record = {"age": 40, "hours": 38.0, "sector": "services", "occupation": "occ_01"}
    assert validate_records(schema, [record])
    other = {**record, "occupation": "occ_99"}
    if unseen == "reject":
        with pytest.raises(RequestError) as err:
            validate_records(schema, [other])
        assert 'records[0].occupation: expected one of ["occ_00","occ_01"]' in str(err.value)
    else:
        assert validate_records(schema, [other])[0][schema.names.index("occupation")] == "occ_99"


def test_learned_categories_are_declared_alone_and_only_on_categories() -> None:
    from ml_assets.contracts import ContractError, parse_contract
    from ml_assets_tests import census

    for column, message in (
        ("{type: category, categories: learned, allowed: [a]}", "not both"),
        ("{type: string, categories: learned}", "applies to category columns"),
        ("{type: category, allowed: [a], unseen: accept}", "unseen applies to categories"),
        ("{type: category}", "or categories: learned"),
    ):
        text = census.CONTRACT.replace(
            "occupation: {type: category, categories: learned, description: One of 55 codes.}",
            f"occupation: {column}",
        )
        with pytest.raises(ContractError, match=message):
            parse_contract(text, "census.yaml")
