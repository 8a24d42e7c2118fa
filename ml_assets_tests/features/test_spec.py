"""Feature files: the bundled ones load; a bad one fails at load, naming file, line, feature."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ml_assets.contracts import Contract, load_contracts
from ml_assets.features import FeatureSpecError, load_feature_spec
from ml_assets.features.spec import FEATURES_DIR, Agg, Source, parse_feature_spec

from .conftest import TOY_FEATURES


@pytest.fixture(scope="module")
def bundled() -> dict[str, Contract]:
    return load_contracts()


def test_every_bundled_contract_has_a_features_file(bundled: dict[str, Contract]) -> None:
    for name, contract in bundled.items():
        assert (FEATURES_DIR / f"{name}.yaml").exists()
        spec = load_feature_spec(contract)
        assert spec.origin.endswith(f"{name}.yaml")
        assert spec.row and spec.aggregates and spec.request, name
        assert len(set(spec.names)) == len(spec.names)
        assert contract.target not in spec.names


def test_car_loan_has_the_trailing_default_rate_per_salary_band(
    bundled: dict[str, Contract],
) -> None:
    spec = load_feature_spec(bundled["car_loan"])
    rate = next(a for a in spec.aggregates if a.name == "default_rate_90d_by_salary")
    assert (rate.source, rate.group_by, rate.agg, rate.column, rate.equals) == (
        Source.LABELS,
        "salary_range",
        Agg.RATE,
        "repaid",
        0,
    )
    assert rate.window_delta.days == 90
    assert {a.source for a in spec.aggregates} == {Source.LABELS, Source.ENTITY}


def test_missing_file_means_every_feature_column_passed_through(
    bundled: dict[str, Contract], tmp_path: Path
) -> None:
    contract = bundled["car_price"]
    spec = load_feature_spec(contract, directory=tmp_path)
    assert spec.names == contract.feature_columns
    assert not spec.aggregates
    with pytest.raises(FeatureSpecError, match="no such features file"):
        load_feature_spec(contract, path=tmp_path / "nope.yaml")


def _error(text: str, contract: Contract) -> str:
    with pytest.raises(FeatureSpecError) as info:
        parse_feature_spec(text, contract, origin="bad.yaml")
    return str(info.value)


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "feature", "line_of", "message"),
    [
        (
            "numerator: amount",
            "numerator: price",
            "amount_per_qty",
            "numerator: price",
            "column 'price' is not an entity column of toy",
        ),
        (
            "op: log1p, column: qty",
            "op: log1p, column: shop",
            "log_qty",
            "column: shop}",
            "column 'shop' is string; log1p needs int, float",
        ),
        (
            "agg: sum, column: amount",
            "agg: sum, column: shop",
            "sum_7d",
            "agg: sum, column: shop",
            "column 'shop' is string; sum needs int, float, bool",
        ),
        (
            "group_by: shop, agg: count, window: 7d",
            "group_by: amount, agg: count, window: 7d",
            "n_7d",
            "group_by: amount",
            "column 'amount' is float; group_by needs",
        ),
        (
            "mapping: {low: 0, mid: 1, high: 2}",
            "mapping: {low: 0, mid: 1}",
            "band_rank",
            "mapping: {low: 0, mid: 1}",
            "mapping misses allowed values ['high']",
        ),
        (
            "mapping: {low: 0, mid: 1, high: 2}",
            "mapping: {low: 0, mid: 1, high: 2, top: 3}",
            "band_rank",
            "top: 3",
            "mapping keys ['top'] are not allowed values",
        ),
        (
            "column: bad, equals: 1",
            "column: bad, equals: 7",
            "bad_rate_30d",
            "equals: 7",
            "equals 7 is not an allowed value of 'bad'",
        ),
        (
            "column: bad, equals: 1",
            "column: bad",
            "bad_rate_30d",
            "column: bad, window",
            "rate needs equals",
        ),
        (
            "agg: mean, column: amount",
            "agg: mean, column: seen_at",
            "mean_7d",
            "column: seen_at",
            "column 'seen_at' is not a value column of the entity table",
        ),
        (
            "{name: day, op: date_part, part: day}",
            "{name: day, op: date_part, part: day, column: shop}",
            "day",
            "column: shop}",
            "column 'shop' is string; date_part needs datetime, date",
        ),
        (
            "{name: hour, op: date_part, part: hour}",
            "{name: amount, op: date_part, part: hour}",
            "amount",
            "{name: amount, op: date_part, part: hour}",
            "name 'amount' is used twice",
        ),
        (
            "{name: weekday, op: date_part, part: weekday}",
            "{name: bad, op: date_part, part: weekday}",
            "bad",
            "{name: bad, op",
            "name 'bad' is a key, event time or target",
        ),
    ],
)
def test_a_feature_that_does_not_fit_the_contract_fails_naming_it(
    toy_contract: Contract, old: str, new: str, feature: str, line_of: str, message: str
) -> None:
    assert old in TOY_FEATURES
    text = TOY_FEATURES.replace(old, new, 1)
    err = _error(text, toy_contract)
    assert f"bad.yaml:{_line_of(text, line_of)}: feature {feature!r}: " in err, err
    assert message in err, err


@pytest.mark.parametrize(
    ("old", "new", "feature", "message"),
    [
        ("op: log1p", "op: sqrt", "log_qty", "does not match any of the expected tags"),
        ("window: 30d}", "window: 30 days}", "bad_rate_30d", "must be a positive whole number"),
        ("{name: n_7d,", "{name: N-7d,", "N-7d", "must be lower snake_case"),
        (
            "op: ratio, numerator: amount,",
            "op: ratio,",
            "amount_per_qty",
            "numerator: Field required",
        ),
        ("agg: count, window: 7d}", "agg: median, window: 7d}", "n_7d", "agg: Input should be"),
    ],
)
def test_a_malformed_feature_fails_naming_it(
    toy_contract: Contract, old: str, new: str, feature: str, message: str
) -> None:
    assert old in TOY_FEATURES
    text = TOY_FEATURES.replace(old, new, 1)
    err = _error(text, toy_contract)
    assert re.search(rf"bad\.yaml:\d+: feature {re.escape(repr(feature))}: ", err), err
    assert message in err, err


def test_the_file_must_be_for_the_contract(toy_contract: Contract) -> None:
    err = _error(TOY_FEATURES.replace("dataset: toy", "dataset: other"), toy_contract)
    assert "bad.yaml:2: dataset 'other' is not 'toy'" in err
    assert "not valid YAML" in _error("row: [", toy_contract)


def test_a_bad_bundled_style_file_fails_at_load(
    bundled: dict[str, Contract], tmp_path: Path
) -> None:
    text = (
        (FEATURES_DIR / "car_loan.yaml")
        .read_text()
        .replace("numerator: car_value", "numerator: car_price")
    )
    (tmp_path / "car_loan.yaml").write_text(text)
    with pytest.raises(FeatureSpecError) as info:
        load_feature_spec(bundled["car_loan"], directory=tmp_path)
    line = _line_of(text, "numerator: car_price")
    assert f"{tmp_path / 'car_loan.yaml'}:{line}: feature 'car_value_per_month': " in str(
        info.value
    )
    assert "column 'car_price' is not an entity column of car_loan" in str(info.value)


def test_feature_definitions_fail_at_load_on_a_bad_file(
    bundled: dict[str, Contract], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml_assets.dataset import Dataset
    from ml_assets.features.assets import build_feature_definitions

    text = (
        (FEATURES_DIR / "credit_card.yaml")
        .read_text()
        .replace("group_by: app_channel", "group_by: app_behavioral_score")
    )
    (tmp_path / "credit_card.yaml").write_text(text)
    monkeypatch.setenv("ML_ASSETS_FEATURES", str(tmp_path))
    with pytest.raises(FeatureSpecError) as info:
        build_feature_definitions(Dataset.build(bundled["credit_card"]))
    line = _line_of(text, "group_by: app_behavioral_score")
    assert f"credit_card.yaml:{line}: feature 'applications_7d_by_app_channel': " in str(info.value)
    assert "column 'app_behavioral_score' is float; group_by needs" in str(info.value)


def test_calendar_features_are_the_parts_of_the_event_or_request_time() -> None:
    """Monitoring leaves them out of drift: a new month is not a drift of the data."""
    from ml_assets.dataset import load_datasets

    datasets = load_datasets()
    assert datasets["car_loan"].spec.calendar == [
        "application_month",
        "request_hour",
        "request_weekday",
    ]
    assert "car_value" not in datasets["car_loan"].spec.calendar


def test_drift_leaves_out_calendar_parts_and_label_aggregates_unless_told() -> None:
    """By default drift monitoring skips the calendar parts and the aggregates of labels (with
    the reason); a feature's ``drift:`` overrides that either way."""
    from ml_assets.dataset import load_datasets
    from ml_assets.features.spec import parse_feature_spec

    car_loan = load_datasets()["car_loan"]
    exempt = car_loan.spec.drift_exempt
    assert sorted(exempt) == [
        "application_month",
        "default_rate_90d_by_salary",
        "outcomes_90d_by_salary",
        "request_hour",
        "request_weekday",
    ]
    assert "calendar" in exempt["request_hour"]
    assert "aggregate of labels" in exempt["outcomes_90d_by_salary"]
    text = car_loan.spec.origin and Path(car_loan.spec.origin).read_text(encoding="utf-8")
    text = text.replace(
        "    agg: count\n    window: 90d", "    agg: count\n    window: 90d\n    drift: true"
    ).replace(
        "  - {name: loan_length, op: passthrough, column: loan_length}",
        "  - {name: loan_length, op: passthrough, column: loan_length, drift: false}",
    )
    spec = parse_feature_spec(text, car_loan.contract)
    assert "outcomes_90d_by_salary" not in spec.drift_exempt
    assert spec.drift_exempt["loan_length"] == "drift: false in the features file"
