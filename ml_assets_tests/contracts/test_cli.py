"""``ml-assets contract check|diff``: output and exit codes (0 ok, 1 breaking, 2 invalid)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_assets.cli import main
from ml_assets.contracts import BUNDLED_DIR, load_contract

CAR_LOAN_PATH = BUNDLED_DIR / "car_loan.yaml"
CAR_LOAN = CAR_LOAN_PATH.read_text(encoding="utf-8")
DRIVER_TENURE = (
    "    driver_tenure: {type: float, nullable: true, min: 0, max: 80, "
    "description: Years the applicant has held a driving licence.}\n"
)


def write(tmp_path: Path, name: str, *edits: tuple[str, str]) -> Path:
    text = CAR_LOAN
    for old, new in edits:
        assert text.count(old) == 1
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(list(argv))
    return code, capsys.readouterr().out.splitlines()


# --- check -------------------------------------------------------------------------------


def test_check_valid_contract_prints_fingerprint(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "contract", "check", str(CAR_LOAN_PATH))
    fingerprint = load_contract(CAR_LOAN_PATH).fingerprint()
    assert code == 0
    assert out == [f"{CAR_LOAN_PATH}: ok (car_loan v1.0.0, binary, fingerprint {fingerprint})"]


def test_check_several_contracts(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [BUNDLED_DIR / f"{n}.yaml" for n in ("car_loan", "car_price", "credit_card")]
    code, out = run(capsys, "contract", "check", *map(str, paths))
    assert code == 0
    assert len(out) == 3
    for path, line, kind in zip(paths, out, ("binary", "regression", "multiclass"), strict=True):
        assert line.startswith(f"{path}: ok (")
        assert f", {kind}, fingerprint {load_contract(path).fingerprint()})" in line


def test_check_fingerprint_tracks_content(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = write(tmp_path, "same.yaml", ("# Car-loan default", "# reworded: car-loan default"))
    bumped = write(tmp_path, "bumped.yaml", ("version: 1.0.0", "version: 1.0.1"))
    code, out = run(capsys, "contract", "check", str(CAR_LOAN_PATH), str(same), str(bumped))
    assert code == 0
    fingerprints = [line.rsplit("fingerprint ", 1)[1].rstrip(")") for line in out]
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]
    assert "v1.0.1" in out[2]


def test_check_invalid_contract_exits_2_with_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path, "bad.yaml", ("allowed: [0, 1]", "allowed: [0, 1, 2]"))
    code, out = run(capsys, "contract", "check", str(bad))
    assert code == 2
    assert out[0] == "invalid contract"
    assert (
        f"  {bad}:46: labels.columns.repaid.allowed: "
        "a binary target must be bool or list exactly two allowed values"
    ) in out


def test_check_invalid_yaml_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.yaml", ("owner: ml-platform@example.com", "owner: a: b"))
    code, out = run(capsys, "contract", "check", str(bad))
    assert code == 2
    assert out[0].startswith(f"{bad}:5: not valid YAML: ")


def test_check_stops_at_the_first_invalid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path, "bad.yaml", ("version: 1.0.0", "version: one"))
    code, out = run(capsys, "contract", "check", str(CAR_LOAN_PATH), str(bad))
    assert code == 2
    assert out[0].startswith(f"{CAR_LOAN_PATH}: ok (car_loan v1.0.0")
    assert f"  {bad}:4: version: version must look like MAJOR.MINOR.PATCH" in out


def test_check_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    code, out = run(capsys, "contract", "check", str(missing))
    assert code == 2
    assert out[0].startswith(f"{missing}: cannot read the contract")


# --- diff --------------------------------------------------------------------------------


def test_diff_removed_column_exits_1_with_breaking_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = write(tmp_path, "new.yaml", (DRIVER_TENURE, ""))
    code, out = run(capsys, "contract", "diff", str(CAR_LOAN_PATH), str(new))
    assert code == 1
    assert out == ["BREAKING  entity.driver_tenure: column removed"]


def test_diff_compatible_change_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = write(
        tmp_path,
        "new.yaml",
        (DRIVER_TENURE, DRIVER_TENURE + "    notes: {type: string, nullable: true}\n"),
        ('"30%", "40%"]', '"30%", "40%", "50%"]'),
    )
    code, out = run(capsys, "contract", "diff", str(CAR_LOAN_PATH), str(new))
    assert code == 0
    assert sorted(out) == [
        "compatible  entity.notes: column added",
        "compatible  entity.size_of_downpayment: allowed values added: ['50%']",
    ]
    assert not any("BREAKING" in line for line in out)


def test_diff_mixed_changes_list_breaking_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = write(
        tmp_path,
        "new.yaml",
        ("table: car_loan_applications", "table: car_loan_applications_v2"),
        (
            "driver_tenure: {type: float, nullable: true",
            "driver_tenure: {type: float, nullable: false",
        ),
    )
    code, out = run(capsys, "contract", "diff", str(CAR_LOAN_PATH), str(new))
    assert code == 1
    assert out == [
        "BREAKING  entity.driver_tenure: no longer nullable",
        "compatible  entity.source: table or query changed",
    ]


def test_diff_identical_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "contract", "diff", str(CAR_LOAN_PATH), str(CAR_LOAN_PATH))
    assert code == 0
    assert out == ["no changes"]


def test_diff_invalid_contract_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.yaml", ("target: repaid", "target: outcome"))
    code, out = run(capsys, "contract", "diff", str(CAR_LOAN_PATH), str(bad))
    assert code == 2
    assert f"  {bad}:8: target: target 'outcome' is not a column of labels" in out
    assert not any(line.startswith(("BREAKING", "compatible")) for line in out)


def test_diff_missing_file_exits_2_not_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "contract", "diff", str(CAR_LOAN_PATH), str(tmp_path / "gone.yaml"))
    assert code == 2
    assert "cannot read the contract" in out[0]


def test_diff_needs_exactly_two_files(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["contract", "diff", str(CAR_LOAN_PATH)])
    assert info.value.code == 2
    assert "exactly two files" in capsys.readouterr().err


def test_unknown_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["contract", "lint", str(CAR_LOAN_PATH)])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
