"""Contract model: the bundled contracts, fingerprints, and errors that point at file:line: field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ml_assets.contracts import (
    BUNDLED_DIR,
    ColumnType,
    Contract,
    ContractError,
    ProblemType,
    load_contract,
    load_contracts,
    parse_contract,
)

CAR_LOAN = (BUNDLED_DIR / "car_loan.yaml").read_text(encoding="utf-8")


def edit(text: str, *edits: tuple[str, str]) -> str:
    """Apply exact string replacements, each of which must match exactly once."""
    for old, new in edits:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text


def line_of(text: str, snippet: str) -> int:
    """The 1-based line of the only line containing ``snippet``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if snippet in line]
    assert len(hits) == 1, f"{snippet!r} is on lines {hits}"
    return hits[0]


def contract_error(tmp_path: Path, text: str, name: str = "contract.yaml") -> tuple[Path, str]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ContractError) as info:
        load_contract(path)
    return path, str(info.value)


# --- the bundled contracts ---------------------------------------------------------------


def test_bundled_contracts_load_by_name() -> None:
    contracts = load_contracts()
    assert sorted(contracts) == ["car_loan", "car_price", "credit_card"]
    assert all(isinstance(c, Contract) and c.name == n for n, c in contracts.items())
    assert contracts == load_contracts(BUNDLED_DIR)


@pytest.mark.parametrize(
    ("name", "problem_type", "target", "target_type", "label_time"),
    [
        ("car_loan", ProblemType.BINARY, "repaid", ColumnType.INT, "observed_at"),
        ("car_price", ProblemType.REGRESSION, "price", ColumnType.FLOAT, "sold_at"),
        ("credit_card", ProblemType.MULTICLASS, "card_product", ColumnType.CATEGORY, "observed_at"),
    ],
)
def test_bundled_contract_shape(
    name: str, problem_type: ProblemType, target: str, target_type: ColumnType, label_time: str
) -> None:
    c = load_contract(BUNDLED_DIR / f"{name}.yaml")
    assert c.name == name
    assert c.version == "1.0.0"
    assert c.problem_type is problem_type
    assert c.target == target
    assert c.labels.columns[target].type is target_type
    assert target not in c.entity.columns
    assert c.entity.key == ["id"] and c.labels.key == ["id"]
    assert c.entity.time_column == "timestamp"
    assert c.labels.time_column == label_time
    assert c.tables == {"entity": c.entity, "labels": c.labels}
    assert c.demo is not None


@pytest.mark.parametrize("name", ["car_loan", "car_price", "credit_card"])
def test_feature_columns_are_entity_columns_without_key_and_time(name: str) -> None:
    c = load_contracts()[name]
    features = c.feature_columns
    assert "id" not in features and "timestamp" not in features
    # every other entity column, in declaration order
    assert features == [col for col in c.entity.columns if col not in ("id", "timestamp")]
    assert len(features) == len(c.entity.columns) - 2
    assert c.target not in features


def test_car_loan_feature_columns_exactly() -> None:
    assert load_contracts()["car_loan"].feature_columns == [
        "car_value",
        "salary_range",
        "debt_to_income_ratio",
        "loan_length",
        "repaid_loan_on_prev_car",
        "size_of_downpayment",
        "driver_tenure",
    ]


def test_multiclass_target_lists_its_classes() -> None:
    c = load_contracts()["credit_card"]
    assert c.labels.columns["card_product"].allowed == [
        "prepaid_card",
        "highstreet_card",
        "upmarket_card",
    ]


def test_parse_contract_equals_load_contract() -> None:
    assert parse_contract(CAR_LOAN) == load_contract(BUNDLED_DIR / "car_loan.yaml")


# --- fingerprint -------------------------------------------------------------------------


def test_fingerprint_is_short_hex_and_deterministic() -> None:
    fp = parse_contract(CAR_LOAN).fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert parse_contract(CAR_LOAN).fingerprint() == fp
    fps = {c.fingerprint() for c in load_contracts().values()}
    assert len(fps) == 3


def test_fingerprint_ignores_comments_key_order_and_style() -> None:
    base = parse_contract(CAR_LOAN).fingerprint()
    no_comments = "\n".join(
        line for line in CAR_LOAN.splitlines() if not line.lstrip().startswith("#")
    )
    assert no_comments != CAR_LOAN
    assert parse_contract(no_comments).fingerprint() == base

    reordered = edit(
        CAR_LOAN,
        # top-level keys moved: name to the end, owner before version
        ("name: car_loan\n", ""),
        (
            "version: 1.0.0\nowner: ml-platform@example.com\n",
            "owner: ml-platform@example.com\nversion: 1.0.0\n",
        ),
        ("  label_delay_days: [14, 90]", "  label_delay_days: [14, 90]\nname: car_loan  # moved"),
        # keys inside a column reordered, flow style to block style, 0 written as 0.0
        (
            "    id: {type: int, nullable: false, min: 0, description: Application id.}",
            "    id:\n      description: Application id.\n      min: 0.0\n      nullable: false\n"
            "      type: int",
        ),
        ("  granularity: weekly\n  start:", "  start:"),
        ("  timezone: UTC\n", "  timezone: UTC\n  granularity: weekly   # comment\n"),
    )
    assert parse_contract(reordered) == parse_contract(CAR_LOAN)
    assert parse_contract(reordered).fingerprint() == base


@pytest.mark.parametrize(
    "change",
    [
        ("version: 1.0.0", "version: 1.0.1"),
        ("owner: ml-platform@example.com", "owner: someone@example.com"),
        ("min: 0, max: 5,", "min: 0, max: 6,"),
        ('"30%", "40%"]', '"30%", "40%", "50%"]'),
        (
            "driver_tenure: {type: float, nullable: true",
            "driver_tenure: {type: float, nullable: false",
        ),
        ("problem_type: binary", "problem_type: regression"),
        ("label_delay_days: [14, 90]", "label_delay_days: [14, 91]"),
        ("description: Application id.}", "description: Loan application id.}"),
    ],
)
def test_fingerprint_changes_with_content(change: tuple[str, str]) -> None:
    assert (
        parse_contract(edit(CAR_LOAN, change)).fingerprint()
        != parse_contract(CAR_LOAN).fingerprint()
    )


# --- malformed contracts: file, line and field in the message ----------------------------

ID_COLUMN = "    id: {type: int, nullable: false, min: 0, description: Application id.}"
LABEL_ID = "    id: {type: int, nullable: false, min: 0, description: Application id the outcome"
REPAID = "    repaid: {type: int, nullable: false, allowed: [0, 1], description: 1 if the loan was repaid.}"

# id, edits, expected field path, snippet locating the expected line (in the edited text),
# a fragment of the message.
MALFORMED = [
    (
        "unknown top-level key",
        [("version: 1.0.0\n", "version: 1.0.0\nprimary_keys: [id]\n")],
        "primary_keys",
        "primary_keys: [id]",
        "Extra inputs are not permitted",
    ),
    (
        "unknown entity key",
        [("  event_time: timestamp", "  event_time: timestamp\n  primary_keys: [id]")],
        "entity.primary_keys",
        "primary_keys: [id]",
        "Extra inputs are not permitted",
    ),
    (
        "unknown column key",
        [("min: 0, description: Application id.}", "minimum: 0, description: Application id.}")],
        "entity.columns.id.minimum",
        "minimum: 0",
        "Extra inputs are not permitted",
    ),
    (
        "missing target",
        [("target: repaid\n", "")],
        "target",
        "name: car_loan",  # a missing key is reported where its mapping starts
        "Field required",
    ),
    (
        "missing labels.observed_at",
        [("  observed_at: observed_at\n", "")],
        "labels.observed_at",
        "labels:",
        "Field required",
    ),
    (
        "unknown column type",
        [
            (
                "id: {type: int, nullable: false, min: 0, description: Application id.}",
                "id: {type: integer, nullable: false, min: 0, description: Application id.}",
            )
        ],
        "entity.columns.id.type",
        "type: integer",
        "Input should be 'int'",
    ),
    (
        "min greater than max",
        [
            (
                "debt_to_income_ratio: {type: float, nullable: false, min: 0, max: 5,",
                "debt_to_income_ratio: {type: float, nullable: false, min: 6, max: 5,",
            )
        ],
        "entity.columns.debt_to_income_ratio",
        "debt_to_income_ratio:",
        "min (6.0) is greater than max (5.0)",
    ),
    (
        "min on a category column",
        [
            (
                "      type: category\n      nullable: false\n",
                "      type: category\n      nullable: false\n      min: 0\n",
            )
        ],
        "entity.columns.size_of_downpayment",
        "size_of_downpayment:",
        "min/max apply to int and float columns, not category",
    ),
    (
        "category without allowed values",
        [('      allowed: ["0%", "10%", "20%", "30%", "40%"]\n', "")],
        "entity.columns.size_of_downpayment",
        "size_of_downpayment:",
        "a category column needs its allowed values",
    ),
    (
        "category with an empty allowed list",
        [('      allowed: ["0%", "10%", "20%", "30%", "40%"]\n', "      allowed: []\n")],
        "entity.columns.size_of_downpayment",
        "size_of_downpayment:",
        "a category column needs its allowed values",
    ),
    (
        "int allowed values given as strings",
        [("allowed: [0, 1]", 'allowed: ["0", "1"]')],
        "labels.columns.repaid",
        "repaid: {type: int",
        "allowed values ['0', '1'] are not of type int",
    ),
    (
        "int allowed values given as bools",
        [("allowed: [0, 1]", "allowed: [false, true]")],
        "labels.columns.repaid",
        "repaid: {type: int",
        "are not of type int",
    ),
    (
        "category allowed values given as numbers",
        [('allowed: ["0%", "10%", "20%", "30%", "40%"]', "allowed: [0, 10, 20]")],
        "entity.columns.size_of_downpayment",
        "size_of_downpayment:",
        "allowed values [0, 10, 20] are not of type category",
    ),
    (
        "repeated allowed values",
        [("allowed: [0, 1]", "allowed: [0, 1, 1]")],
        "labels.columns.repaid",
        "repaid: {type: int",
        "allowed values repeat",
    ),
    (
        "primary key names an undeclared column",
        [("primary_key: [id]", "primary_key: [application_id]")],
        "entity.primary_key.0",
        "primary_key: [application_id]",
        "primary key column 'application_id' is not one of the declared columns",
    ),
    (
        "labels key names an undeclared column",
        [("  key: [id]", "  key: [loan_id]")],
        "labels.key.0",
        "key: [loan_id]",
        "key column 'loan_id' is not one of the declared columns",
    ),
    (
        "nullable primary key",
        [(ID_COLUMN, ID_COLUMN.replace("nullable: false", "nullable: true"))],
        "entity.columns.id.nullable",
        "id: {type: int, nullable: true, min: 0, description: Application id.}",
        "primary key column 'id' cannot be nullable",
    ),
    (
        "event time is not a datetime",
        [("timestamp: {type: datetime,", "timestamp: {type: string,")],
        "entity.columns.timestamp.type",
        "timestamp: {type: string",
        "time column 'timestamp' must have type datetime",
    ),
    (
        "label time is not a datetime",
        [("observed_at: {type: datetime,", "observed_at: {type: date,")],
        "labels.columns.observed_at.type",
        "observed_at: {type: date",
        "time column 'observed_at' must have type datetime",
    ),
    (
        "event time is nullable",
        [
            (
                "timestamp: {type: datetime, nullable: false",
                "timestamp: {type: datetime, nullable: true",
            )
        ],
        "entity.columns.timestamp.nullable",
        "timestamp: {type: datetime",
        "time column 'timestamp' cannot be nullable",
    ),
    (
        "event time names an undeclared column",
        [("event_time: timestamp", "event_time: filed_at")],
        "entity.event_time",
        "event_time: filed_at",
        "time column 'filed_at' is not one of the declared columns",
    ),
    (
        "target not in labels",
        [("target: repaid", "target: repaid_loan")],
        "target",
        "target: repaid_loan",
        "target 'repaid_loan' is not a column of labels",
    ),
    (
        "target also an entity column",
        [
            (
                "labels:\n",
                REPAID.replace("description: 1 if the loan was repaid.", "description: leak")
                + "\nlabels:\n",
            )
        ],
        "target",
        "target: repaid",
        "target 'repaid' must not be an entity column (leakage)",
    ),
    (
        "labels key type differs from entity key type",
        [
            (
                LABEL_ID,
                "    id: {type: string, nullable: false, description: Application id the outcome",
            )
        ],
        "labels.key",
        "  key: [id]",
        "labels.key must match entity.primary_key in number and types",
    ),
    (
        "labels key length differs from entity key",
        [("  key: [id]", "  key: [id, observed_at]")],
        "labels.key",
        "  key: [id, observed_at]",
        "labels.key must match entity.primary_key in number and types",
    ),
    (
        "binary target with three allowed values",
        [("allowed: [0, 1]", "allowed: [0, 1, 2]")],
        "labels.columns.repaid.allowed",
        "allowed: [0, 1, 2]",
        "a binary target must be bool or list exactly two allowed values",
    ),
    (
        "binary target without allowed values",
        [
            (
                "repaid: {type: int, nullable: false, allowed: [0, 1],",
                "repaid: {type: int, nullable: false,",
            )
        ],
        "labels.columns.repaid.allowed",  # missing: reported on the column line
        "repaid: {type: int",
        "a binary target must be bool or list exactly two allowed values",
    ),
    (
        "multiclass target with two allowed values",
        [("problem_type: binary", "problem_type: multiclass")],
        "labels.columns.repaid.allowed",
        "allowed: [0, 1]",
        "a multiclass target must list at least three allowed values",
    ),
    (
        "regression target of type category",
        [
            ("problem_type: binary", "problem_type: regression"),
            (
                "repaid: {type: int, nullable: false, allowed: [0, 1],",
                "repaid: {type: category, nullable: false, allowed: [n, y],",
            ),
        ],
        "labels.columns.repaid.type",
        "repaid: {type: category",
        "a regression target must be int or float",
    ),
    (
        "unknown problem type",
        [("problem_type: binary", "problem_type: ranking")],
        "problem_type",
        "problem_type: ranking",
        "Input should be 'binary', 'multiclass' or 'regression'",
    ),
    (
        "bad version string",
        [("version: 1.0.0", "version: v1.0")],
        "version",
        "version: v1.0",
        "version must look like MAJOR.MINOR.PATCH",
    ),
    (
        "bad dataset name",
        [("name: car_loan", "name: Car-Loan")],
        "name",
        "name: Car-Loan",
        "name must be lower snake_case",
    ),
    (
        "bad column name",
        [("    car_value: {", "    CarValue: {")],
        "entity.columns.CarValue",
        "CarValue:",
        "column name 'CarValue' must be lower snake_case: declare it as 'carvalue' (a source "
        "column 'CarValue' is found by that name), or give it another name with source: "
        "CarValue",
    ),
    (
        "table name that is not an identifier",
        [("  table: car_loan_applications", "  table: car loan; drop table x")],
        "entity.table",
        "table: car loan; drop table x",
        "is not a plain SQL identifier",
    ),
    (
        "both table and query",
        [
            (
                "  table: car_loan_applications\n",
                "  table: car_loan_applications\n  query: SELECT * FROM x\n",
            )
        ],
        "entity.query",
        "query: SELECT * FROM x",
        "give exactly one of 'table' or 'query'",
    ),
    (
        "neither table nor query",
        [("  table: car_loan_outcomes\n", "")],
        "labels",
        "labels:",
        "give exactly one of 'table' or 'query'",
    ),
    (
        "partitioning end before start",
        [('  end: "2019-12-02"', '  end: "2017-12-02"')],
        "partitioning.end",
        '  end: "2017-12-02"',
        "end must be after start",
    ),
    (
        "unknown partition granularity",
        [("granularity: weekly", "granularity: fortnightly")],
        "partitioning.granularity",
        "granularity: fortnightly",
        "Input should be 'hourly', 'daily', 'weekly', 'monthly' or 'yearly'",
    ),
    (
        "unknown timezone",
        [("  timezone: UTC", "  timezone: Mars/Olympus_Mons")],
        "partitioning.timezone",
        "timezone: Mars/Olympus_Mons",
        "unknown timezone 'Mars/Olympus_Mons'",
    ),
    (
        "quarantine threshold above one",
        [
            (
                "owner: ml-platform@example.com\n",
                "owner: ml-platform@example.com\nquarantine_threshold: 1.5\n",
            )
        ],
        "quarantine_threshold",
        "quarantine_threshold: 1.5",
        "less than or equal to 1",
    ),
]


@pytest.mark.parametrize(
    ("edits", "field", "at", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
def test_malformed_contract_names_file_line_and_field(
    tmp_path: Path, edits: list[tuple[str, str]], field: str, at: str, fragment: str
) -> None:
    text = edit(CAR_LOAN, *edits)
    path, message = contract_error(tmp_path, text)
    line = line_of(text, at)
    problems = [p.strip() for p in message.splitlines()[1:]]
    assert message.splitlines()[0] == "invalid contract"
    matching = [p for p in problems if p.startswith(f"{path}:{line}: {field}: ")]
    assert matching, f"no problem at {path}:{line}: {field}: in\n{message}"
    assert any(fragment in p for p in matching), message


def test_unknown_entity_key_reports_both_the_typo_and_the_missing_key(tmp_path: Path) -> None:
    text = edit(CAR_LOAN, ("  primary_key: [id]", "  primary_keys: [id]"))
    path, message = contract_error(tmp_path, text)
    assert f"{path}:18: entity.primary_keys: Extra inputs are not permitted" in message
    assert f"{path}:16: entity.primary_key: Field required" in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = edit(
        CAR_LOAN,
        ("version: 1.0.0", "version: one"),
        (
            "id: {type: int, nullable: false, min: 0, description: Application id.}",
            "id: {type: text, nullable: false, min: 0, description: Application id.}",
        ),
        (
            "loan_length: {type: float, nullable: false, min: 1, max: 120,",
            "loan_length: {type: float, nullable: false, min: 121, max: 120,",
        ),
    )
    path, message = contract_error(tmp_path, text)
    problems = message.splitlines()[1:]
    assert len(problems) == 3, message
    assert problems[0].strip().startswith(f"{path}:4: version: ")
    assert problems[1].strip().startswith(f"{path}:21: entity.columns.id.type: ")
    assert problems[2].strip().startswith(f"{path}:31: entity.columns.loan_length: ")


def test_line_numbers_of_bundled_file_are_exact(tmp_path: Path) -> None:
    # Anchored to the real car_loan.yaml layout: an edit in place keeps every line number.
    cases = {
        ("version: 1.0.0", "version: 1"): "4: version:",
        ("target: repaid", "target: nope"): "8: target:",
        ("primary_key: [id]", "primary_key: [nope]"): "18: entity.primary_key.0:",
        ("allowed: [0, 1]", "allowed: [0, 1, 2]"): "46: labels.columns.repaid.allowed:",
        ("  key: [id]", "  key: [observed_at]"): "41: labels.key:",
    }
    for change, expected in cases.items():
        path, message = contract_error(tmp_path, edit(CAR_LOAN, change))
        assert f"{path}:{expected}" in message, message


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    text = edit(CAR_LOAN, ("owner: ml-platform@example.com", "owner: team: ml-platform"))
    path, message = contract_error(tmp_path, text)
    assert message.startswith(f"{path}:5: not valid YAML: ")
    assert "mapping values are not allowed here" in message


def test_invalid_yaml_bad_indentation(tmp_path: Path) -> None:
    text = edit(CAR_LOAN, ("  granularity: weekly\n  start:", "  granularity: weekly\n   start:"))
    path, message = contract_error(tmp_path, text)
    assert message.startswith(f"{path}:{line_of(text, '   start:')}: not valid YAML: ")


@pytest.mark.parametrize(
    ("text", "line", "kind"),
    [
        ("- car_loan\n- car_price\n", 1, "list"),
        ("# a list, not a contract\n\n- car_loan\n", 3, "list"),
        ("just a string\n", 1, "str"),
        ("", 1, "NoneType"),
        ("# only a comment\n", 1, "NoneType"),
    ],
)
def test_contract_that_is_not_a_mapping(tmp_path: Path, text: str, line: int, kind: str) -> None:
    path, message = contract_error(tmp_path, text)
    assert message == f"{path}:{line}: (top level): a contract is a YAML mapping, got {kind}"


def test_parse_contract_without_a_file_names_its_origin() -> None:
    with pytest.raises(ContractError, match=r"^invalid contract\n  <string>:4: version: "):
        parse_contract(edit(CAR_LOAN, ("version: 1.0.0", "version: 1.0")))
    with pytest.raises(
        ContractError, match=r"\n  inline:4: version: Input should be a valid string"
    ):
        parse_contract(edit(CAR_LOAN, ("version: 1.0.0", "version: 1.0")), origin="inline")


def test_missing_or_unreadable_file_is_a_contract_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ContractError, match=re.escape(str(missing))):
        load_contract(missing)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ContractError, match=re.escape(str(binary))):
        load_contract(binary)


# --- folders -----------------------------------------------------------------------------


def test_load_contracts_from_a_folder(tmp_path: Path) -> None:
    (tmp_path / "loans.yaml").write_text(CAR_LOAN, encoding="utf-8")
    (tmp_path / "other.yaml").write_text(
        edit(CAR_LOAN, ("name: car_loan", "name: car_loan_v2")), encoding="utf-8"
    )
    (tmp_path / "notes.txt").write_text("not a contract", encoding="utf-8")
    contracts = load_contracts(tmp_path)
    assert sorted(contracts) == ["car_loan", "car_loan_v2"]
    assert contracts["car_loan"] == parse_contract(CAR_LOAN)


def test_load_contracts_rejects_a_name_used_twice(tmp_path: Path) -> None:
    first, second = tmp_path / "a_loans.yaml", tmp_path / "b_loans.yaml"
    first.write_text(CAR_LOAN, encoding="utf-8")
    second.write_text(edit(CAR_LOAN, ("version: 1.0.0", "version: 2.0.0")), encoding="utf-8")
    with pytest.raises(ContractError) as info:
        load_contracts(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{second}:3: name: dataset name 'car_loan'")
    assert str(first) in message


def test_load_contracts_reports_an_invalid_member(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(CAR_LOAN, encoding="utf-8")
    bad = tmp_path / "b.yaml"
    bad.write_text(edit(CAR_LOAN, ("name: car_loan", "name: x-y")), encoding="utf-8")
    with pytest.raises(ContractError, match=re.escape(f"{bad}:3: name: ")):
        load_contracts(tmp_path)


def test_load_contracts_from_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match=re.escape(f"{tmp_path}: no *.yaml contracts found")):
        load_contracts(tmp_path)
    (tmp_path / "contract.yml").write_text(CAR_LOAN, encoding="utf-8")  # wrong suffix
    with pytest.raises(ContractError, match=re.escape(f"{tmp_path}: no *.yaml contracts found")):
        load_contracts(tmp_path)


def test_source_columns_are_found_by_name_snake_case_or_declared_source() -> None:
    """Which source column each contract column reads: its own name, else the one source name
    whose snake-case form it is, else its declared ``source``; a name two source columns both
    derive is ambiguous (read by neither, reported)."""
    from ml_assets.contracts.model import snake_name
    from ml_assets_tests import census

    assert snake_name("AGEP") == "agep" and snake_name("Hours Worked") == "hours_worked"
    assert snake_name("2nd-Job") == "c_2nd_job" and snake_name("__") == "c_"
    table = parse_contract(census.CONTRACT_UPPER, "census.yaml").entity
    found = table.source_columns(
        ["PERSON_ID", "YEAR", "AGEP", "Hours Worked", "SECTOR", "Occupation", "OCCUPATION"]
    )
    assert found == {
        "person_id": "PERSON_ID",
        "year": "YEAR",
        "age": "AGEP",
        "hours": "Hours Worked",
        "sector": "SECTOR",
    }
    assert table.ambiguous_columns(["Occupation", "OCCUPATION"]) == {
        "occupation": ["Occupation", "OCCUPATION"]
    }


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT * FROM a; DROP TABLE a", "query must be a single statement"),
        ("DELETE FROM a", "query must be a SELECT (or WITH ... SELECT), not DELETE"),
        ("WITH d AS (DELETE FROM a RETURNING *) SELECT * FROM d", "it contains DELETE"),
        ("SELECT * FROM a /* ; */ ; INSERT INTO b VALUES (1)", "single statement"),
    ],
)
def test_a_query_must_be_one_read_only_select(query: str, message: str) -> None:
    from ml_assets_tests import census

    text = census.CONTRACT.replace("  table: census_people\n", f"  query: {query!r}\n")
    with pytest.raises(ContractError, match=re.escape(message)):
        parse_contract(text, "census.yaml")


def test_a_select_with_semicolons_in_text_and_comments_is_accepted() -> None:
    from ml_assets_tests import census

    query = "SELECT *, 'a; DROP' AS note FROM census_people -- ; delete\n;"
    text = census.CONTRACT.replace("  table: census_people\n", f"  query: {query!r}\n")
    assert parse_contract(text, "census.yaml").entity.query == query
