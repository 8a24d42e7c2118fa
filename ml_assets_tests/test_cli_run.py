"""``ml-assets run DATASET [--from KEY] [--to KEY] [--cutoff ISO] [--window-days N]
[--config FILE.yaml] [--only JOB]``, on the yearly-survey dataset (:mod:`ml_assets_tests.yearly`)
in a home of its own.

Fast: every option is validated before anything runs (a bad one exits 2 with a message naming
what is valid, and leaves no log, lake or run behind) and becomes the run config and partitions
of the jobs. Slow: the options reach real runs (the lake's partitions, the training set's
metadata), and the Dagster CLI invocation the README documents runs the same partition range.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from ml_assets.cli import PlannedRun, RunOptionsError, main, plan_runs, read_run_config_file
from ml_assets.dataset import Dataset
from ml_assets.settings import child_env
from ml_assets_tests import yearly

RANGE = "valid keys: 2019-01-01 .. 2024-02-01 (62 monthly partitions)"


def _home(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A home with the survey contract and its seeded source, set in this process's env (and
    ``ml_assets.definitions.defs`` rebuilt from it); returns the variables."""
    contracts = root / "contracts"
    yearly.write_contract(contracts)
    source = root / "source.sqlite"
    if not source.exists():
        yearly.seed(f"sqlite:///{source}")
    env = {
        "ML_ASSETS_HOME": str(root / "home"),
        "ML_ASSETS_CONTRACTS": str(contracts),
        "ML_ASSETS_SOURCE_URL": f"sqlite:///{source}",
        "DAGSTER_HOME": str(root / "home" / "dagster_home"),  # restored by monkeypatch
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import ml_assets.definitions as definitions

    monkeypatch.setattr(definitions, "defs", definitions.build_definitions())
    return env


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One home for the fast tests (none of them runs a job)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield _home(tmp_path_factory.mktemp("cli_run"), monkeypatch)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["run", *argv])
    return code, capsys.readouterr().out


def _nothing_ran(env: dict[str, str]) -> None:
    home = Path(env["ML_ASSETS_HOME"])
    assert not (home / "logs").exists() and not (home / "lake").exists()


# --- validation: exit 2, nothing runs ---------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--from", "2019-13-01"], f"survey: --from '2019-13-01' is not a partition key; {RANGE}"),
        (["--to", "2024-03-01"], f"survey: --to '2024-03-01' is not a partition key; {RANGE}"),
        (["--from", "2019-01-15"], f"survey: --from '2019-01-15' is not a partition key; {RANGE}"),
        (
            ["--from", "2020-01-01", "--to", "2019-06-01"],
            f"survey: --from 2020-01-01 is after --to 2019-06-01; {RANGE}",
        ),
        (["--cutoff", "next tuesday"], "--cutoff 'next tuesday' is not an ISO date or datetime"),
        (["--window-days", "0"], "--window-days must be a positive number, got 0.0"),
        (["--window-days", "-3"], "--window-days must be a positive number, got -3.0"),
        (["--window-days", "nan"], "--window-days must be a positive number, got nan"),
        (
            ["--only", "pipeline", "--window-days", "30"],
            "--cutoff and --window-days configure the train job: add --only train",
        ),
        (
            ["--only", "train", "--from", "2019-01-01"],
            "--from/--to select partitions of the pipeline, score and monitor jobs; the train "
            "job is not partitioned",
        ),
    ],
)
def test_a_bad_option_exits_2_saying_what_is_valid(
    home, capsys, argv: list[str], message: str
) -> None:
    code, out = run(capsys, "survey", *argv)
    assert code == 2, out
    assert out.startswith("ml-assets run: ") and message in out, out
    _nothing_ran(home)


def test_an_unknown_dataset_names_the_ones_there_are(home, capsys) -> None:
    code, out = run(capsys, "surveys")
    assert code == 2
    assert (
        f"unknown dataset surveys; the contracts in {home['ML_ASSETS_CONTRACTS']} define: survey"
        in out
    )
    _nothing_ran(home)


@pytest.mark.parametrize(
    "text, message",
    [
        ("- train\n", "expected a mapping from job to run config, got list"),
        ("train: 3\n", "train: a job's run config is a mapping (ops:, resources:), got int"),
        ("train: [\n", "not YAML"),
        (
            "ops: {survey__training_set: {config: {window_days: 30}}}\n",
            "ops names no job of this run; use monitor, pipeline, score, search, "
            "survey_model_search, survey_monitor, survey_pipeline, survey_score, survey_train, "
            "train (the file maps each job to its run config: put `ops:` under `train:`)",
        ),
        (
            "train: {ops: {survey__training_set: {config: {window_day: 30}}}}\n",
            "survey_train: invalid run config",
        ),
        (
            "survey_train: {ops: {survey__trainingset: {config: {}}}}\n",
            "survey__trainingset",
        ),
    ],
)
def test_a_bad_config_file_exits_2(home, capsys, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    code, out = run(capsys, "survey", "--config", str(path))
    assert code == 2, out
    assert message in out, out
    _nothing_ran(home)


def test_a_missing_config_file_exits_2(home, capsys, tmp_path: Path) -> None:
    code, out = run(capsys, "survey", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: cannot read it" in out


def test_only_takes_the_three_jobs_the_search_and_monitoring(home, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "survey", "--only", "summary"])
    assert exited.value.code == 2
    assert (
        "invalid choice: 'summary' (choose from 'pipeline', 'train', 'search', 'score', "
        "'monitor')" in capsys.readouterr().err
    )


# --- what the options become -------------------------------------------------------------


def test_options_become_partitions_and_run_config_per_job(tmp_path: Path) -> None:
    dataset = Dataset.build(yearly.contract())
    path = tmp_path / "run.yaml"
    path.write_text(
        "train:\n"
        "  ops:\n"
        "    survey__training_set: {config: {window_days: 30, cutoff: '2020-01-01'}}\n"
        "    survey__model: {config: {iterations: 50}}\n"
        "survey_train:\n"
        "  ops: {survey__model: {config: {depth: 4}}}\n"
        "pipeline:\n"
        "  ops: {survey_validate_entity: {config: {row_count_ratio: 3.0}}}\n",
        encoding="utf-8",
    )
    runs = plan_runs(
        dataset,
        first="2019-11-01",
        last="2020-02-01",
        window_days=400,
        file_config=read_run_config_file(str(path)),
    )
    partitions = ["2019-11-01", "2019-12-01", "2020-01-01", "2020-02-01"]
    assert runs == [
        PlannedRun(
            "survey_pipeline",
            partitions,
            {"ops": {"survey_validate_entity": {"config": {"row_count_ratio": 3.0}}}},
        ),
        PlannedRun(
            "survey_train",
            None,
            {
                "ops": {
                    # the file's entry for the role, then for the job's name, then the options
                    "survey__training_set": {
                        "config": {"window_days": 400.0, "cutoff": "2020-01-01"}
                    },
                    "survey__model": {"config": {"iterations": 50, "depth": 4}},
                }
            },
        ),
        PlannedRun("survey_score", partitions, {}),
    ]
    [train] = plan_runs(dataset, cutoff="2023-06-01T12:00+02:00", only=["train"])
    assert train.run_config == {
        "ops": {"survey__training_set": {"config": {"cutoff": "2023-06-01T12:00:00+02:00"}}}
    }
    # --only keeps pipeline order; --from alone runs to the last partition
    runs = plan_runs(dataset, first="2024-01-01", only=["score", "pipeline"])
    assert [(r.job, r.partitions) for r in runs] == [
        ("survey_pipeline", ["2024-01-01", "2024-02-01"]),
        ("survey_score", ["2024-01-01", "2024-02-01"]),
    ]
    with pytest.raises(RunOptionsError, match=r"valid keys: 2019-01-01 \.\. 2024-02-01"):
        plan_runs(dataset, last="2018-12-01")
    # the model search runs only when named, after training, unpartitioned, with its config
    assert "survey_model_search" not in [r.job for r in plan_runs(dataset)]
    search = {"ops": {"survey__model_search": {"config": {"n_trials": 5}}}}
    runs = plan_runs(dataset, only=["search", "train"], file_config={"search": search})
    assert runs == [
        PlannedRun("survey_train", None, {}),
        PlannedRun("survey_model_search", None, search),
    ]
    # monitoring too: last, over the range (one run per scored partition when it runs)
    assert "survey_monitor" not in [r.job for r in plan_runs(dataset)]
    monitor = {"ops": {"survey__monitoring": {"config": {"gap_bound": 0.1}}}}
    runs = plan_runs(
        dataset, first="2024-01-01", only=["monitor", "score"], file_config={"monitor": monitor}
    )
    assert runs == [
        PlannedRun("survey_score", ["2024-01-01", "2024-02-01"], {}),
        PlannedRun("survey_monitor", ["2024-01-01", "2024-02-01"], monitor),
    ]


# --- real runs ---------------------------------------------------------------------------


def _features_partitions(env: dict[str, str]) -> list[str]:
    folder = Path(env["ML_ASSETS_HOME"]) / "lake" / "survey" / "features"
    return sorted(p.name.removesuffix(".parquet") for p in folder.glob("*.parquet"))


@pytest.mark.slow
def test_the_options_reach_the_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    env = _home(tmp_path, monkeypatch)
    code, out = run(
        capsys, "survey", "--only", "pipeline", "--from", "2019-01-01", "--to", "2019-03-01"
    )
    assert code == 0, out
    assert "survey_pipeline: 3 partitions (2019-01-01 .. 2019-03-01) in one run, succeeded" in out
    assert _features_partitions(env) == ["2019-01-01", "2019-02-01", "2019-03-01"]

    code, out = run(capsys, "survey", "--only", "pipeline", "--from", "2019-04-01")
    assert code == 0, out
    assert len(_features_partitions(env)) == 62

    # --config and --cutoff together in the train job: the old 365-day window from the file,
    # the cutoff from the command line. The window holds no row: the training set says why,
    # and the model refuses to train, naming it.
    config = tmp_path / "run.yaml"
    config.write_text(
        "train:\n  ops:\n    survey__training_set: {config: {window_days: 365}}\n",
        encoding="utf-8",
    )
    code, out = run(
        capsys, "survey", "--only", "train", "--config", str(config), "--cutoff", "2024-03-01"
    )
    assert code == 1, out
    assert "survey_train: 1 run, FAILED" in out
    assert "[WARN] survey/training_set:point_in_time - the training set is empty: window" in out
    assert "step survey__model failed" in out and "TrainingDataError" in out
    instance = dg.DagsterInstance.get()
    event = instance.get_latest_materialization_event(dg.AssetKey(["survey", "training_set"]))
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert meta["cutoff"] == "2024-03-01T00:00:00+00:00" and meta["cutoff_from"] == "config"
    assert meta["window_days"] == 365 and meta["window_from"] == "run config window_days"
    assert meta["rows_in_window"] == 0 and meta["dagster/row_count"] == 0
    assert meta["rows_before_window"] == 5 * yearly.ROWS_PER_WAVE
    assert (
        "(365 days, run config window_days), cutoff 2024-03-01: 0 rows in the window"
        in meta["why_empty"]
    )


@pytest.mark.slow
def test_the_documented_dagster_cli_command_runs_a_partition_range(
    tmp_path: Path, monkeypatch
) -> None:
    """README: ``dagster job execute -m ml_assets.definitions -j <job> -c cfg.yaml --tags
    '{"dagster/asset_partition_range_start": ..., "dagster/asset_partition_range_end": ...}'``."""
    env = _home(tmp_path, monkeypatch)
    Path(env["DAGSTER_HOME"]).mkdir(parents=True)
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "ops:\n  survey_validate_entity: {config: {row_count_ratio: 3.0}}\n", encoding="utf-8"
    )
    tags = {
        "dagster/asset_partition_range_start": "2019-01-01",
        "dagster/asset_partition_range_end": "2019-04-01",
    }
    dagster = Path(sys.executable).parent / "dagster"
    argv = [str(dagster), "job", "execute", "-m", "ml_assets.definitions", "-j", "survey_pipeline"]
    environ = child_env(drop_prefixes=("ML_ASSETS_", "DAGSTER_", "MLFLOW_"))
    environ.update(env)
    done = subprocess.run(
        [*argv, "-c", str(config), "--tags", json.dumps(tags)],
        capture_output=True,
        text=True,
        env=environ,
        cwd=os.getcwd(),
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _features_partitions(env) == ["2019-01-01", "2019-02-01", "2019-03-01", "2019-04-01"]
    run = dg.DagsterInstance.get().get_runs()[0]
    assert (
        run.job_name == "survey_pipeline"
        and run.tags["dagster/asset_partition_range_end"] == "2019-04-01"
    )


@pytest.mark.slow
def test_a_run_whose_process_was_killed_is_marked_failed_by_the_next_command(
    tmp_path: Path, monkeypatch
) -> None:
    """``ml-assets run`` SIGKILLed while its pipeline run is STARTED: the run cannot report its
    end and stays STARTED; the next command that runs a job marks it failed, naming the dead
    process, and runs its own job."""
    import signal
    import time

    from dagster._core.instance.ref import InstanceRef

    env = _home(tmp_path, monkeypatch)
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    environ = child_env(drop_prefixes=("ML_ASSETS_", "DAGSTER_", "MLFLOW_"))
    environ.update(env)
    cli = Path(sys.executable).parent / "ml-assets"
    proc = subprocess.Popen(
        [str(cli), "run", "survey", "--only", "pipeline"],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"]))
    started = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
    deadline = time.monotonic() + 300
    try:
        while not instance.get_runs(filters=started) and proc.poll() is None:
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    [killed] = instance.get_runs(filters=started)
    assert killed.tags["ml_assets/owner"].endswith(f"-{proc.pid}")

    again = subprocess.run(
        [
            str(cli),
            "run",
            "survey",
            "--only",
            "pipeline",
            "--from",
            "2019-01-01",
            "--to",
            "2019-01-01",
        ],
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    run = instance.get_run_by_id(killed.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    failure = [
        e.dagster_event.message or e.user_message
        for e in instance.all_logs(killed.run_id)
        if e.dagster_event is not None and e.dagster_event.is_run_failure
    ]
    assert failure and f"pid {proc.pid}" in failure[0] and "is gone" in failure[0], failure
