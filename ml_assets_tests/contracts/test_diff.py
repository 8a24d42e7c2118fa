"""Contract diffs: which changes between two versions break consumers and which do not."""

from __future__ import annotations

import pytest

from ml_assets.contracts import BUNDLED_DIR, Change, Contract, diff_contracts, parse_contract

CAR_LOAN = (BUNDLED_DIR / "car_loan.yaml").read_text(encoding="utf-8")
CREDIT_CARD = (BUNDLED_DIR / "credit_card.yaml").read_text(encoding="utf-8")

DRIVER_TENURE = (
    "    driver_tenure: {type: float, nullable: true, min: 0, max: 80, "
    "description: Years the applicant has held a driving licence.}\n"
)
DEBT = "debt_to_income_ratio: {type: float, nullable: false, min: 0, max: 5,"
DOWNPAYMENT = 'allowed: ["0%", "10%", "20%", "30%", "40%"]'


def variant(text: str, *edits: tuple[str, str]) -> Contract:
    for old, new in edits:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return parse_contract(text, origin="variant.yaml")


def loan(*edits: tuple[str, str]) -> Contract:
    return variant(CAR_LOAN, *edits)


def changes(new: Contract, old: Contract | None = None) -> list[tuple[bool, str, str]]:
    return [(c.breaking, c.where, c.what) for c in diff_contracts(old or loan(), new)]


def add_entity_column(spec: str) -> tuple[str, str]:
    return (DRIVER_TENURE, DRIVER_TENURE + f"    {spec}\n")


# --- no change ---------------------------------------------------------------------------


def test_identical_contracts_have_no_changes() -> None:
    assert diff_contracts(loan(), loan()) == []
    for name in ("car_price", "credit_card"):
        text = (BUNDLED_DIR / f"{name}.yaml").read_text(encoding="utf-8")
        assert diff_contracts(parse_contract(text), parse_contract(text)) == []


def test_formatting_only_changes_are_no_changes() -> None:
    reformatted = loan(
        ("# Car-loan default prediction", "# reworded comment"),
        (
            "    id: {type: int, nullable: false, min: 0, description: Application id.}",
            "    id:\n      min: 0.0\n      type: int\n      description: Application id.\n"
            "      nullable: false",
        ),
    )
    assert diff_contracts(loan(), reformatted) == []


# --- columns -----------------------------------------------------------------------------


def test_removed_column_is_breaking() -> None:
    assert changes(loan((DRIVER_TENURE, ""))) == [(True, "entity.driver_tenure", "column removed")]


def test_removed_label_column_is_breaking() -> None:
    old = loan(("    repaid: {", "    reason: {type: string, nullable: true}\n    repaid: {"))
    assert changes(loan(), old) == [(True, "labels.reason", "column removed")]


def test_added_nullable_column_is_compatible() -> None:
    new = loan(add_entity_column("notes: {type: string, nullable: true}"))
    assert changes(new) == [(False, "entity.notes", "column added")]


def test_added_column_defaults_to_not_nullable_and_is_breaking() -> None:
    new = loan(add_entity_column("notes: {type: string}"))
    # nullable defaults to false: a column every existing row lacks breaks producers
    assert changes(new) == [(True, "entity.notes", "column added (not nullable)")]


def test_added_non_nullable_column_is_breaking() -> None:
    new = loan(add_entity_column("co_signer: {type: bool, nullable: false}"))
    assert changes(new) == [(True, "entity.co_signer", "column added (not nullable)")]


def test_added_nullable_label_column_is_compatible() -> None:
    new = loan(
        (
            "  columns:\n    id: {type: int, nullable: false, min: 0, description: Application id the",
            "  columns:\n    note: {type: string, nullable: true}\n    id: {type: int, nullable: false, min: 0, description: Application id the",
        )
    )
    assert changes(new) == [(False, "labels.note", "column added")]


# --- types -------------------------------------------------------------------------------


def test_narrowed_type_float_to_int_is_breaking() -> None:
    new = loan(("car_value: {type: float", "car_value: {type: int"))
    assert changes(new) == [(True, "entity.car_value", "type float -> int")]


def test_widened_type_int_to_float_is_compatible() -> None:
    old = variant(CREDIT_CARD)
    new = variant(
        CREDIT_CARD, ("credit_bureau_score: {type: int", "credit_bureau_score: {type: float")
    )
    assert changes(new, old) == [(False, "entity.credit_bureau_score", "type int -> float")]
    assert changes(old, new) == [(True, "entity.credit_bureau_score", "type float -> int")]


def test_bool_to_int_widens_and_int_to_bool_narrows() -> None:
    old = variant(CREDIT_CARD)
    new = variant(CREDIT_CARD, ("is_customer: {type: bool", "is_customer: {type: int"))
    assert changes(new, old) == [(False, "entity.is_customer", "type bool -> int")]
    assert changes(old, new) == [(True, "entity.is_customer", "type int -> bool")]


def test_category_to_string_is_compatible() -> None:
    keep_allowed = loan(
        ("      type: category\n      nullable: false", "      type: string\n      nullable: false")
    )
    assert changes(keep_allowed) == [
        (False, "entity.size_of_downpayment", "type category -> string")
    ]

    free_text = loan(
        (
            "      type: category\n      nullable: false",
            "      type: string\n      nullable: false",
        ),
        (f"      {DOWNPAYMENT}\n", ""),
    )
    assert changes(free_text) == [
        (False, "entity.size_of_downpayment", "type category -> string"),
        (False, "entity.size_of_downpayment", "allowed values no longer restricted"),
    ]


def test_string_to_category_is_breaking() -> None:
    old = loan(
        (
            "      type: category\n      nullable: false",
            "      type: string\n      nullable: false",
        ),
        (f"      {DOWNPAYMENT}\n", ""),
    )
    result = changes(loan(), old)
    assert result == [
        (True, "entity.size_of_downpayment", "type string -> category"),
        (True, "entity.size_of_downpayment", "allowed values removed: restricted"),
        (
            False,
            "entity.size_of_downpayment",
            "allowed values added: ['0%', '10%', '20%', '30%', '40%']",
        ),
    ]


def test_type_change_across_kinds_is_breaking() -> None:
    new = loan(
        (
            "car_value: {type: float, nullable: false, min: 0, max: 1000000,",
            "car_value: {type: string, nullable: false,",
        )
    )
    result = changes(new)
    assert (True, "entity.car_value", "type float -> string") in result
    assert all(breaking for breaking, where, what in result if "type" in what)


# --- ranges ------------------------------------------------------------------------------


def test_tightened_range_is_breaking() -> None:
    new = loan((DEBT, "debt_to_income_ratio: {type: float, nullable: false, min: 0.5, max: 4,"))
    assert changes(new) == [
        (True, "entity.debt_to_income_ratio", "min tightened 0.0 -> 0.5"),
        (True, "entity.debt_to_income_ratio", "max tightened 5.0 -> 4.0"),
    ]


def test_new_bound_is_a_tightening() -> None:
    new = loan(
        (
            "id: {type: int, nullable: false, min: 0, description: Application id.}",
            "id: {type: int, nullable: false, min: 0, max: 1000000, description: Application id.}",
        )
    )
    assert changes(new) == [(True, "entity.id", "max tightened None -> 1000000.0")]


def test_relaxed_range_is_compatible() -> None:
    new = loan((DEBT, "debt_to_income_ratio: {type: float, nullable: false, min: -1, max: 10,"))
    assert changes(new) == [
        (False, "entity.debt_to_income_ratio", "min relaxed 0.0 -> -1.0"),
        (False, "entity.debt_to_income_ratio", "max relaxed 5.0 -> 10.0"),
    ]


def test_dropped_bounds_are_relaxations() -> None:
    new = loan((DEBT, "debt_to_income_ratio: {type: float, nullable: false,"))
    assert changes(new) == [
        (False, "entity.debt_to_income_ratio", "min relaxed 0.0 -> None"),
        (False, "entity.debt_to_income_ratio", "max relaxed 5.0 -> None"),
    ]


def test_one_bound_tightened_other_relaxed() -> None:
    new = loan((DEBT, "debt_to_income_ratio: {type: float, nullable: false, min: 1, max: 9,"))
    assert changes(new) == [
        (True, "entity.debt_to_income_ratio", "min tightened 0.0 -> 1.0"),
        (False, "entity.debt_to_income_ratio", "max relaxed 5.0 -> 9.0"),
    ]


# --- allowed values ----------------------------------------------------------------------


def test_removed_allowed_value_is_breaking() -> None:
    new = loan((DOWNPAYMENT, 'allowed: ["0%", "10%", "20%", "30%"]'))
    assert changes(new) == [
        (True, "entity.size_of_downpayment", "allowed values removed: ['40%']"),
    ]


def test_added_allowed_value_is_compatible() -> None:
    new = loan((DOWNPAYMENT, 'allowed: ["0%", "10%", "20%", "30%", "40%", "50%"]'))
    assert changes(new) == [(False, "entity.size_of_downpayment", "allowed values added: ['50%']")]


def test_reordered_allowed_values_are_not_a_removal() -> None:
    new = loan((DOWNPAYMENT, 'allowed: ["40%", "30%", "20%", "10%", "0%"]'))
    assert not any(c.breaking for c in diff_contracts(loan(), new))


def test_swapped_allowed_value_is_breaking_and_compatible() -> None:
    new = loan((DOWNPAYMENT, 'allowed: ["0%", "10%", "20%", "30%", "50%"]'))
    assert changes(new) == [
        (True, "entity.size_of_downpayment", "allowed values removed: ['40%']"),
        (False, "entity.size_of_downpayment", "allowed values added: ['50%']"),
    ]


def test_newly_restricted_values_are_breaking() -> None:
    new = variant(
        CREDIT_CARD,
        (
            "stated_income: {type: int, nullable: false, min: 0,",
            "stated_income: {type: int, nullable: false, min: 0, allowed: [1, 2],",
        ),
    )
    assert changes(new, variant(CREDIT_CARD)) == [
        (True, "entity.stated_income", "allowed values removed: restricted"),
        (False, "entity.stated_income", "allowed values added: [1, 2]"),
    ]


# --- nullability -------------------------------------------------------------------------


def test_nullable_to_not_nullable_is_breaking() -> None:
    strict = loan(
        (
            "driver_tenure: {type: float, nullable: true",
            "driver_tenure: {type: float, nullable: false",
        )
    )
    assert changes(strict) == [(True, "entity.driver_tenure", "no longer nullable")]
    assert changes(loan(), strict) == [(False, "entity.driver_tenure", "now nullable")]


# --- keys, time, target, problem type, partitioning --------------------------------------


def test_changed_primary_key_is_breaking() -> None:
    new = loan(
        ("primary_key: [id]", "primary_key: [id, timestamp]"),
        ("  key: [id]", "  key: [id, observed_at]"),
    )
    assert changes(new) == [
        (True, "entity.key", "['id'] -> ['id', 'timestamp']"),
        (True, "labels.key", "['id'] -> ['id', 'observed_at']"),
    ]


def test_changed_time_column_is_breaking() -> None:
    new = loan(
        ("event_time: timestamp", "event_time: filed_at"),
        ("    timestamp: {type: datetime,", "    filed_at: {type: datetime,"),
    )
    result = changes(new)
    assert (True, "entity.time", "timestamp -> filed_at") in result
    assert (True, "entity.timestamp", "column removed") in result
    assert (True, "entity.filed_at", "column added (not nullable)") in result
    assert all(breaking for breaking, _, _ in result)


def test_changed_label_time_column_is_breaking() -> None:
    new = loan(
        ("observed_at: observed_at", "observed_at: known_at"),
        (
            "    observed_at: {type: datetime, nullable: false, description: When the outcome",
            "    observed_at: {type: datetime, nullable: true, description: When the outcome",
        ),
        (
            "  columns:\n    id: {type: int, nullable: false, min: 0, description: Application id the",
            "  columns:\n    known_at: {type: datetime}\n    id: {type: int, nullable: false, min: 0, description: Application id the",
        ),
    )
    result = changes(new)
    assert result[0] == (True, "labels.time", "observed_at -> known_at")
    assert (False, "labels.observed_at", "now nullable") in result


def test_changed_target_is_breaking() -> None:
    new = loan(
        ("target: repaid", "target: repaid_flag"),
        ("    repaid: {", "    repaid_flag: {type: bool, nullable: true}\n    repaid: {"),
    )
    assert changes(new) == [
        (True, "target", "repaid -> repaid_flag"),
        (False, "labels.repaid_flag", "column added"),
    ]


def test_changed_problem_type_is_breaking() -> None:
    new = loan(("problem_type: binary", "problem_type: regression"))
    assert changes(new) == [(True, "problem_type", "binary -> regression")]


def test_changed_partitioning_is_breaking() -> None:
    new = loan(("granularity: weekly", "granularity: daily"))
    assert changes(new) == [(True, "partitioning", "partitioning changed (partitions re-key)")]


def test_changed_source_table_and_metadata_are_compatible() -> None:
    new = loan(
        ("table: car_loan_applications", "table: loans.applications_v2"),
        ("      pii: true\n", ""),
        ("version: 1.0.0", "version: 1.1.0"),
        ("description: Application id.}", "description: Loan application id.}"),
    )
    assert changes(new) == [
        (False, "entity.source", "table or query changed"),
        (False, "entity.salary_range", "pii True -> False"),
    ]


def test_table_to_query_is_compatible() -> None:
    new = loan(("  table: car_loan_outcomes", "  query: SELECT * FROM car_loan_outcomes"))
    assert changes(new) == [(False, "labels.source", "table or query changed")]


# --- ordering and rendering --------------------------------------------------------------


def test_breaking_changes_come_first_in_stable_order() -> None:
    new = loan(
        ("table: car_loan_applications", "table: car_loan_applications_v2"),  # compatible
        ("      pii: true\n", ""),  # compatible, salary_range
        ("car_value: {type: float", "car_value: {type: int"),  # breaking, before salary_range
        (DRIVER_TENURE, "    notes: {type: string, nullable: true}\n"),  # removed + added
        ("granularity: weekly", "granularity: monthly"),  # breaking, last in natural order
    )
    result = diff_contracts(loan(), new)
    assert [(c.breaking, c.where) for c in result] == [
        (True, "entity.car_value"),
        (True, "entity.driver_tenure"),
        (True, "partitioning"),
        (False, "entity.source"),
        (False, "entity.salary_range"),
        (False, "entity.notes"),
    ]


def test_change_renders_as_a_line() -> None:
    assert str(Change(True, "entity.x", "column removed")) == "BREAKING  entity.x: column removed"
    assert str(Change(False, "entity.y", "column added")) == "compatible  entity.y: column added"
    result = diff_contracts(loan(), loan((DRIVER_TENURE, "")))
    assert [str(c) for c in result] == ["BREAKING  entity.driver_tenure: column removed"]


@pytest.mark.parametrize("name", ["car_loan", "car_price", "credit_card"])
def test_diff_against_a_different_dataset_reports_breaking(name: str) -> None:
    other = {"car_loan": "car_price", "car_price": "credit_card", "credit_card": "car_loan"}[name]
    a = parse_contract((BUNDLED_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    b = parse_contract((BUNDLED_DIR / f"{other}.yaml").read_text(encoding="utf-8"))
    result = diff_contracts(a, b)
    assert result and result[0].breaking
    assert any(c.where == "target" for c in result)
    flags = [c.breaking for c in result]
    assert flags == sorted(flags, reverse=True)
