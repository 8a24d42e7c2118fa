"""What ``ml-assets demo`` prints: a short summary on stdout, the detail in a log file.

The slow tests run the real CLI in a subprocess (one dataset, a fresh ``ML_ASSETS_HOME``, no
``DAGSTER_HOME``): the demo is the session's shared ``car_loan_demo`` (``conftest.py``, run once
for these tests and the Dagster UI's). They compare the structure of its stdout with a
known-good transcript, ``data/demo_transcript.txt``: paths, hashes and numbers are masked
(:func:`mask`), so a new timing or metric does not break it but a new, missing or reordered
line does. To refresh the
transcript after a deliberate change of the output, run the demo the same way and write
``mask(stdout)`` to the file. The fast tests drive :mod:`ml_assets.progress` with stand-ins.
"""

from __future__ import annotations

import difflib
import io
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import polars as pl
import pytest

from ml_assets.progress import JobProgress, check_lines, failure_lines, with_file_logger
from ml_assets_tests.demo_home import Demo, cli, fresh_home_from

TRANSCRIPT = Path(__file__).parent / "data" / "demo_transcript.txt"
# The shared demo (conftest.py): every test reading it runs on the worker that built it.
ON_THE_DEMO = pytest.mark.xdist_group("demo")

# Order matters: URLs and paths first (they contain digits), then hashes, then numbers.
MASKS = [
    (re.compile(r"sqlite:///+\S+"), "<url>"),
    (re.compile(r"(?<![\w.:/])/[^\s,;)]+"), "<path>"),
    (re.compile(r"\b[0-9a-f]{16,}\b"), "<hash>"),
    (re.compile(r"\d+(?:[.,]\d+)*"), "N"),
]
# A warning's or failure's description lists data-dependent partitions: only its presence counts.
DESCRIPTION = re.compile(r"^(\s+\[(?:WARN|FAIL)\] \S+) - .+$")
# So do the replay's alerting partitions.
ALERTING = re.compile(r"^(\s+[a-z_ ]+ alert(?: \([a-z ]+\))?): .+$")


def mask(text: str) -> list[str]:
    """The transcript's lines with what varies between runs replaced by placeholders."""
    lines = []
    for line in text.splitlines():
        for pattern, placeholder in MASKS:
            line = pattern.sub(placeholder, line)
        line = ALERTING.sub(r"\1: <partitions>", line)
        lines.append(DESCRIPTION.sub(r"\1 - <description>", line).rstrip())
    return lines


def log_path(stdout: str) -> Path:
    found = re.search(r"^log: (\S+)", stdout, re.MULTILINE)
    assert found, stdout
    return Path(found.group(1))


# --- the real demo -------------------------------------------------------------------------


@ON_THE_DEMO
@pytest.mark.slow
def test_demo_output_matches_the_transcript(car_loan_demo: Demo) -> None:
    out = car_loan_demo.out
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    got, want = mask(out.stdout), TRANSCRIPT.read_text(encoding="utf-8").splitlines()
    diff = "\n".join(difflib.unified_diff(want, got, "transcript", "stdout", lineterm=""))
    assert got == want, diff
    assert len(got) < 40
    assert out.stderr == ""  # Dagster's events, logs and warnings all went to the log file


@ON_THE_DEMO
@pytest.mark.slow
def test_demo_log_file_has_the_detail(car_loan_demo: Demo) -> None:
    home, out = car_loan_demo.home, car_loan_demo.out
    path = log_path(out.stdout)
    assert path.parent == home / "logs"
    assert f"log file:         {path}" in out.stdout  # named again in the closing summary
    text = path.read_text(encoding="utf-8")
    for role, table in (("entity", "car_loan_applications"), ("labels", "car_loan_outcomes")):
        assert len(re.findall(rf"\] {table} \d{{4}}-\d\d-\d\d: \d+ rows", text)) == 100
        assert len(re.findall(rf"\] car_loan\.{role} \S+: \d+ valid", text)) == 100
    assert "[100/100]" in text
    assert "STEP_SUCCESS" in text and "RUN_SUCCESS" in text  # Dagster's events
    assert "INFO ml_assets.ingest.demo: seeded car_loan" in text  # Python logging
    assert "Created version '1' of model 'car_loan'" in text  # MLflow's own stderr notice
    assert "check [WARN] car_loan/validated_entity:row_count_anomaly - " in text


# --- the replay: the whole loop, on the real demo -----------------------------------------------


def _home_state(home: Path):
    """The demo home's settings, dataset, lake, monitoring results and Dagster instance."""
    from ml_assets import settings as s
    from ml_assets.dataset import load_datasets
    from ml_assets.monitor.sensors import read_results
    from ml_assets.storage import Lake

    conf = s.from_env({"ML_ASSETS_HOME": str(home)})
    dataset = load_datasets()["car_loan"]
    lake = Lake(base_path=conf.lake_path)
    results = read_results(lake, dataset)
    from dagster._core.instance.ref import InstanceRef

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(conf.dagster_home_path)))
    return conf, dataset, lake, results, instance


@ON_THE_DEMO
@pytest.mark.slow
@pytest.mark.serve
def test_the_demo_replay_detects_the_shift_retrains_once_and_serves_the_new_champion(
    car_loan_demo: Demo,
) -> None:
    """Expectations from NannyML's description of the car-loan data (the shift starts at the end
    of March 2019; STACK_NOTES: CBPE and the reconstruction error flag the later chunks), not
    from the code. Under the first champion, in every stable week (before 2019-03-25, the week
    the shift begins, which is not asserted on) no estimated ROC AUC alert, no reconstruction
    error alert and no drift check failure; in every shifted week all three. Once the outcomes
    have arrived, estimated and realized ROC AUC agree on the stable weeks within 0.03 each and
    0.01 on average (a week's realized ROC AUC has a standard error of about 0.007). The retrain
    sensor launches exactly one train run, for the incident that began with the shift, once half
    of its first weeks' outcomes are known; the challenger is promoted and its Bento served; its
    reference starts where the incident began, and against it the later weeks (the same new
    regime) raise neither alert."""
    from ml_assets.monitor.incidents import drift_alerts

    home, out = car_loan_demo.home, car_loan_demo.out
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    conf, dataset, lake, results, instance = _home_state(home)

    def verdicts(champion: str) -> dict[str, dict[str, bool]]:
        mine = results.filter(champion_version=champion)
        out: dict[str, dict[str, bool]] = {}
        for (week,), rows in mine.group_by("partition"):
            counted, _ = drift_alerts(rows)
            alert = rows.filter(pl.col("alert").fill_null(False))
            out[str(week)] = {
                "estimated": alert.filter(
                    calculator="estimated_performance", metric="roc_auc"
                ).height
                > 0,
                "reconstruction": alert.filter(calculator="multivariate_drift").height > 0,
                "drift": counted.height > 0,
            }
        return out

    first = verdicts("1")
    stable = sorted(w for w in first if w < "2019-03-25")
    shifted = sorted(w for w in first if w >= "2019-04-01")
    assert len(stable) >= 20 and len(shifted) >= 4, first
    for what in ("estimated", "reconstruction", "drift"):
        assert [w for w in stable if first[w][what]] == [], (what, first)
        assert [w for w in shifted if not first[w][what]] == [], (what, first)
    realized = results.filter(
        calculator="realized_performance", metric="roc_auc", champion_version="1"
    )
    assert realized.get_column("label_coverage").min() == 1.0, realized
    from ml_assets.monitor.suite import estimate_gap

    gap = estimate_gap(results).filter(
        pl.col("metric") == "roc_auc", pl.col("partition").is_in(stable)
    )
    assert gap.height == len(stable)
    assert gap["gap"].abs().max() < 0.03, gap
    assert gap["gap"].abs().mean() < 0.01, gap
    second = verdicts("2")
    assert len(second) >= 4
    assert [w for w in second if second[w]["estimated"] or second[w]["reconstruction"]] == []
    reference = lake.scan(dataset.keys.reference, ["v2"]).collect()
    assert str(reference.get_column("timestamp").min().date()) >= "2019-04-01"
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={"dagster/sensor_name": "car_loan_retrain_sensor"})
    )
    assert len(runs) == 1, [r.tags for r in runs]
    [run] = runs
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["ml_assets/calculator"] == "estimated_performance"
    assert "2019-04-01" <= run.tags["ml_assets/incident_first_partition"] <= "2019-04-08"
    assert float(run.tags["ml_assets/label_coverage"]) >= 0.5
    assert min(second) >= run.tags["ml_assets/cutoff"][:10]
    # served rows: every replayed week has some, each logged by the champion of its week
    from ml_assets.serve.prediction_log import read_served

    for champion, mine in (("1", first), ("2", second)):
        weeks = sorted(mine)
        start, _ = dataset.partitions.utc_window(weeks[0])
        _, end = dataset.partitions.utc_window(weeks[-1])
        served = read_served("car_loan", start, end, "timestamp", conf.prediction_log_path)
        assert served.unreadable == []
        assert served.rows.height > 100 * len(weeks) / 2
        assert served.rows.get_column("model_version").unique().to_list() == [champion]
    assert "promotion gate: promoted v2" in out.stdout
    assert re.search(r"serving car_loan_service:v2-\S+ from ", out.stdout), out.stdout


@ON_THE_DEMO
@pytest.mark.slow
def test_verbose_shows_every_partition(car_loan_demo: Demo, tmp_path: Path) -> None:
    # The jobs, verbosely, in a home of their own seeded with a copy of the demo's source: run
    # in the demo's home they would train v3 and re-score every week under the tests (and the
    # Dagster UI) that read the replay's state.
    home = fresh_home_from(car_loan_demo, tmp_path / "home")
    out = cli(home, "run", "--verbose", "car_loan")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    console = out.stdout + out.stderr
    assert len(re.findall(r"\[\d+/100\] car_loan_applications ", console)) == 100
    assert len(re.findall(r"\[\d+/100\] \d{4}-\d\d-\d\d: \d+ rows scored", console)) == 100
    assert "  [ok  ] car_loan/validated_entity:schema_conformance" in out.stdout
    assert "checks: " not in out.stdout  # every check on its own line instead
    assert "car_loan_train: 1 run, succeeded" in out.stdout


@pytest.mark.slow
def test_a_failed_job_says_why_on_the_console(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    url = f"sqlite:///{empty}"
    out = cli(tmp_path / "home", "run", "car_loan", ML_ASSETS_SOURCE_URL_OVERRIDE=url)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[1].startswith("car_loan_pipeline: 100 partitions"), out.stdout
    assert lines[1].endswith(" s") and ", FAILED in " in lines[1]
    failed = [line for line in lines if line.startswith("  step ") and " failed: " in line]
    assert failed and "car_loan_applications" in failed[0], out.stdout
    assert f"  full traceback in {log_path(out.stdout)}" in lines
    assert not any(line.startswith("car_loan_train") for line in lines)  # stopped there
    text = log_path(out.stdout).read_text(encoding="utf-8")
    assert "STEP_FAILURE" in text and 'File "' in text  # the failure with its stack


# --- the pieces, with stand-ins ------------------------------------------------------------


def record(message: str = "", event: str | None = None, step: str = "s") -> logging.LogRecord:
    rec = logging.LogRecord("dagster", logging.INFO, __file__, 0, message, (), None)
    dagster_event = SimpleNamespace(event_type_value=event, step_key=step) if event else None
    rec.dagster_meta = {"dagster_event": dagster_event, "orig_message": message, "step_key": step}
    return rec


def test_progress_counts_steps_and_partition_lines() -> None:
    stream = io.StringIO()
    with JobProgress("job", steps=2, stream=stream, show_bar=False) as bar:
        bar.handle(record(event="STEP_START", step="raw"))
        for i in range(1, 5):
            bar.handle(record(f"[{i}/4] table 2018-01-0{i}: 10 rows", step="raw"))
        assert bar.completed == 1.0 and bar.current == "raw [4/4]"
        bar.handle(record(event="STEP_SUCCESS", step="raw"))
        bar.handle(record(event="STEP_START", step="features"))
        bar.handle(record("[1/2] half", step="features"))
        assert bar.completed == 1.5
        bar.handle(record(event="STEP_FAILURE", step="features"))
    assert bar.completed == 2.0 and bar.partition_lines == 5
    assert stream.getvalue() == ""  # not a terminal: no bar at all


def check(name: str, passed: bool, severity: str = "ERROR", description: str | None = None):
    return SimpleNamespace(
        asset_key=SimpleNamespace(to_user_string=lambda: "ds/asset"),
        check_name=name,
        passed=passed,
        severity=SimpleNamespace(value=severity),
        description=description,
    )


def test_check_lines_summarise_unless_verbose() -> None:
    checks = [
        check("schema", True, description="all columns"),
        check("rows", False, "WARN", "2018-01-01: 0 rows; " * 20),
        check("nulls", False, "ERROR", "salary null in 40%"),
        check("promotion_gate", True, description="first model"),
    ]
    quiet = check_lines(checks, verbose=False)
    assert quiet[0] == "  checks: 2 passed, 1 warning, 1 failed"
    assert quiet[1].startswith("  [WARN] ds/asset:rows - 2018-01-01") and quiet[1].endswith("…")
    assert quiet[2:] == [
        "  [FAIL] ds/asset:nulls - salary null in 40%",
        "  [ok  ] ds/asset:promotion_gate - first model",
    ]
    verbose = check_lines(checks, verbose=True)
    assert [line[:8] for line in verbose] == ["  [ok  ]", "  [WARN]", "  [FAIL]", "  [ok  ]"]
    assert check_lines([], verbose=False) == []


def test_failure_lines_name_the_step_and_the_cause(tmp_path: Path) -> None:
    cause = SimpleNamespace(message="OperationalError: no such table: t\n", cause=None)
    error = SimpleNamespace(message="DagsterExecutionStepExecutionError: in op raw\n", cause=cause)
    failure = SimpleNamespace(
        event_type_value="STEP_FAILURE",
        step_key="raw",
        step_failure_data=SimpleNamespace(error=error),
    )
    result = SimpleNamespace(all_events=[failure])
    assert failure_lines(result, tmp_path / "x.log") == [
        "  step raw failed: DagsterExecutionStepExecutionError: in op raw "
        "(caused by OperationalError: no such table: t)",
        f"  full traceback in {tmp_path / 'x.log'}",
    ]


def test_quiet_runs_leave_out_the_console_logger() -> None:
    import dagster as dg

    @dg.asset
    def one() -> int:
        return 1

    defs = dg.Definitions(assets=[one], jobs=[dg.define_asset_job("one_job")])
    job = defs.resolve_job_def("one_job")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda rec: seen.append(rec.getMessage())  # type: ignore[method-assign]
    quiet_job, quiet = with_file_logger(job, [handler], verbose=False)
    assert quiet == {"loggers": {"ml_assets_file": {}}}
    assert quiet_job.execute_in_process(run_config=quiet).success
    assert any("STEP_SUCCESS" in m for m in seen)
    _, verbose = with_file_logger(job, [handler], verbose=True)
    assert verbose["loggers"]["console"] == {"config": {"log_level": "INFO"}}
