"""``ml-assets check``: a contract, its features file and its live source, every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_assets.cli import main
from ml_assets.contracts import BUNDLED_DIR
from ml_assets.contracts.check import check

CAR_LOAN_PATH = BUNDLED_DIR / "car_loan.yaml"
CAR_LOAN = CAR_LOAN_PATH.read_text(encoding="utf-8")
FEATURES = (BUNDLED_DIR / "features" / "car_loan.yaml").read_text(encoding="utf-8")
DTI = "debt_to_income_ratio: {type: float, nullable: false, min: 0, max: 5,"
BOOL_COL = "repaid_loan_on_prev_car: {type: bool,"


def edit(text: str, *edits: tuple[str, str]) -> str:
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def line_of(text: str, snippet: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if snippet in line]
    assert len(hits) == 1, (snippet, hits)
    return hits[0]


def write(folder: Path, contract: str = CAR_LOAN, features: str | None = FEATURES) -> Path:
    """A contract (and its features file beside it, the platform's layout) in ``folder``."""
    path = folder / "car_loan.yaml"
    path.write_text(contract, encoding="utf-8")
    if features is not None:
        (folder / "features").mkdir(exist_ok=True)
        (folder / "features" / "car_loan.yaml").write_text(features, encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(list(argv))
    return code, capsys.readouterr().out.splitlines()


# --- the files ----------------------------------------------------------------------------


def test_two_errors_at_different_levels_are_reported_in_one_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A column's own rule (min > max) used to hide the contract's (target not in labels)
    # until it was fixed: pydantic skips a model's validator once a field below it fails.
    text = edit(CAR_LOAN, (DTI, DTI.replace("min: 0,", "min: 6,")), ("target: repaid", "target: y"))
    path = write(tmp_path, text)
    code, out = run(capsys, "check", str(path), "--no-source")
    assert code == 1
    assert out[out.index("2 problems:") + 1 :] == [
        f"  {path}:{line_of(text, 'target: y')}: target: target 'y' is not a column of labels",
        f"  {path}:{line_of(text, 'debt_to_income_ratio:')}: entity.columns.debt_to_income_ratio: "
        "min (6.0) is greater than max (5.0)",
    ]


def test_every_rule_of_one_table_at_once(tmp_path: Path) -> None:
    text = edit(
        CAR_LOAN,
        ("primary_key: [id]", "primary_key: [application_id]"),
        ("event_time: timestamp", "event_time: filed_at"),
        ("    car_value: {", "    CarValue: {"),
        ("  key: [id]", "  key: [id, observed_at]"),
    )
    report = check(write(tmp_path, text, features=None), source=False)
    assert report.exit_code == 1
    got = {(f.line, f.field, f.message) for f in report.findings}
    assert got == {
        (
            18,
            "entity.primary_key.0",
            "primary key column 'application_id' is not one of the declared columns",
        ),
        (19, "entity.event_time", "time column 'filed_at' is not one of the declared columns"),
        (
            23,
            "entity.columns.CarValue",
            "column name 'CarValue' must be lower snake_case: declare it as 'carvalue' (a source "
            "column 'CarValue' is found by that name), or give it another name with source: "
            "CarValue",
        ),
        (41, "labels.key", "labels.key must match entity.primary_key in number and types"),
    }


def test_a_bad_features_file_names_each_feature_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One declaration that does not parse (a typo'd key) and one that does not fit the
    # contract (a missing column): both, in one pass, each at its own line.
    text = edit(
        FEATURES,
        (
            "{name: log_car_value, op: log1p, column: car_value}",
            "{name: log_car_value, op: log1p, colum: car_value}",
        ),
        ("    denominator: loan_length", "    denominator: loan_months"),
    )
    path = write(tmp_path, features=text)
    fpath = tmp_path / "features" / "car_loan.yaml"
    code, out = run(capsys, "check", str(path), "--no-source")
    assert code == 1
    assert out[0] == f"{path}: ok (car_loan v1.0.0, binary, fingerprint " + out[0].split()[-1]
    problems = out[out.index("3 problems:") + 1 :]
    log_line = line_of(text, "log_car_value")
    assert problems == [
        f"  {fpath}:{line_of(text, 'loan_months')}: row.7.denominator: feature "
        "'car_value_per_month': column 'loan_months' is not an entity column of car_loan",
        f"  {fpath}:{log_line}: row.8.column: feature 'log_car_value': Field required",
        f"  {fpath}:{log_line}: row.8.colum: feature 'log_car_value': Extra inputs are not "
        "permitted",
    ]


def test_features_file_given_as_the_contract_is_checked_with_its_contract(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `ml-assets contract check features/x.yaml` says "dataset: Extra inputs are not permitted";
    # `ml-assets check` finds the contract the features file belongs to.
    features = BUNDLED_DIR / "features" / "car_loan.yaml"
    code, out = run(capsys, "check", str(features), "--no-source")
    assert code == 0, out
    assert f"{features}: ok (16 features)" in out
    assert any(line.startswith(f"note: {features} is a features file") for line in out)


def test_explicit_features_file_and_a_missing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, features=None)
    code, out = run(capsys, "check", str(path), "--no-source")
    assert code == 0
    assert (
        f"note: no features file at {tmp_path / 'features' / 'car_loan.yaml'}: the "
        "contract's feature columns are passed through" in out
    )
    code, out = run(
        capsys, "check", str(path), "--no-source", "--features", str(tmp_path / "x.yaml")
    )
    assert code == 2
    assert out[-1].startswith(f"{tmp_path / 'x.yaml'}: cannot read the features file")


def test_features_are_not_checked_against_an_invalid_contract(tmp_path: Path) -> None:
    text = edit(CAR_LOAN, ("version: 1.0.0", "version: one"))
    bad_features = edit(FEATURES, ("op: log1p, column: car_value", "op: log1p, column: nope"))
    report = check(write(tmp_path, text, bad_features), source=False)
    assert [f.field for f in report.findings] == ["version"]
    assert any(
        "not checked against the contract until the contract is valid" in n for n in report.notes
    )


@pytest.mark.parametrize(
    ("content", "start"),
    [(b"name: car_loan\nowner: a: b\n", "not valid YAML"), (b"- a list\n", "(top level)")],
)
def test_unreadable_contract_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, start: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    code, out = run(capsys, "check", str(path))
    assert code == 2
    assert start in out[-1] and out[-1].startswith(f"{path}:")
    code, out = run(capsys, "check", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert "cannot read the contract" in out[-1]


# --- the live source ----------------------------------------------------------------------


def test_contract_matches_its_seeded_source(car_loan_sqlite: str, tmp_path: Path) -> None:
    report = check(write(tmp_path), url=car_loan_sqlite)
    assert report.exit_code == 0, report.lines()
    assert f"source {car_loan_sqlite}: checked" in report.notes
    assert any(n.startswith("entity car_loan_applications: 100,000 rows") for n in report.notes)


def test_missing_column_and_wrong_type_against_a_live_table(
    car_loan_sqlite: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = edit(
        CAR_LOAN,
        (BOOL_COL, "repaid_loan_on_prev_car: {type: date,"),
        ("    driver_tenure:", "    notes: {type: string, nullable: true}\n    driver_tenure:"),
    )
    path = write(tmp_path, text, features=None)  # the features file reads the changed column
    code, out = run(capsys, "check", str(path), "--url", car_loan_sqlite)
    assert code == 1
    problems = out[out.index("2 problems:") + 1 :]
    assert problems[0] == (
        f"  {path}:{line_of(text, 'repaid_loan_on_prev_car:')}: "
        "entity.columns.repaid_loan_on_prev_car.type: source column "
        "car_loan_applications.repaid_loan_on_prev_car is BOOLEAN, which does not hold date "
        "values; declare type bool or change the source"
    )
    assert problems[1].startswith(
        f"  {path}:{line_of(text, 'notes:')}: entity.columns.notes: column 'notes' is not in "
        "car_loan_applications (its columns: id, timestamp, car_value"
    )


def test_missing_table_and_no_rows_in_the_partitioning(
    car_loan_sqlite: str, tmp_path: Path
) -> None:
    text = edit(
        CAR_LOAN,
        ("table: car_loan_outcomes", "table: car_loan_labels"),
        (
            '  start: "2018-01-01"\n  end: "2019-12-02"',
            '  start: "2021-01-04"\n  end: "2021-03-01"',
        ),
    )
    report = check(write(tmp_path, text), url=car_loan_sqlite)
    assert report.exit_code == 1
    by_field = {f.field: f.message for f in report.findings}
    assert by_field["labels.table"].startswith(
        "table 'car_loan_labels' is not in the source (it has: car_loan_applications, "
        "car_loan_outcomes)"
    )
    assert by_field["partitioning"].startswith(
        "none of the 100,000 rows of car_loan_applications has timestamp in "
        "[2021-01-04 .. 2021-03-01)"
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",  # nothing listens on port 1
        "sqlite:////nonexistent/folder/source.sqlite",
    ],
)
def test_unreachable_source_is_a_note_and_the_files_are_still_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    code, out = run(capsys, "check", str(write(tmp_path)), "--url", url)
    assert code == 0, out
    assert out[0].startswith(f"{tmp_path / 'car_loan.yaml'}: ok (car_loan v1.0.0")
    notes = [line for line in out if line.startswith("note: source not checked: ")]
    assert len(notes) == 1, out
    assert ("is unreachable (" in notes[0]) or ("no such SQLite file" in notes[0])
    assert not Path("/nonexistent/folder/source.sqlite").exists()  # nothing was created


def test_postgres_source(pg_url: str, contracts, tmp_path: Path) -> None:
    from ml_assets.ingest.demo import seed_demo

    seed_demo(pg_url, contracts["car_loan"], rows=2000)
    assert check(write(tmp_path), url=pg_url).exit_code == 0
    text = edit(CAR_LOAN, (BOOL_COL, "repaid_loan_on_prev_car: {type: datetime,"))
    (tmp_path / "bad").mkdir()
    report = check(write(tmp_path / "bad", text, features=None), url=pg_url)
    assert [f.field for f in report.findings] == ["entity.columns.repaid_loan_on_prev_car.type"]
    assert "is BOOLEAN, which does not hold datetime values" in report.findings[0].message
