"""The car-loan demo, run once per test session: ``ml-assets demo car_loan`` in a subprocess.

The demo (about 7 minutes on 2 cores: the pipeline, the first champion, the 43-week replay
through a real ``bentoml serve``, one sensor-launched retrain, the monitoring summary) is the
most expensive thing the suite does, and several tests read what it leaves: its console output
(``test_cli_output``) and its home (the replay's state, and the Dagster UI tests' webserver).
The ``car_loan_demo`` fixture in ``conftest.py`` runs it once per session through
:func:`run_demo`; every test using it is marked ``pytest.mark.xdist_group("demo")`` so that
``pytest -n 2 --dist loadgroup`` sends them all to one worker, where the session fixture is
built once.

Tests that run jobs again must not do it in the shared home (they would train a new champion
and re-score every partition under the tests that read the replay's state): they start a home
of their own from the demo's seeded source (:func:`fresh_home_from`).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ml_assets.settings import TELEMETRY_OFF, child_env
from ml_assets_tests.connects import strace_prefix

CLI = Path(sys.executable).parent / "ml-assets"
DEMO_TIMEOUT = 1800
"""The demo with its replay takes about 7 minutes on 2 idle cores; more on a loaded machine."""


def cli(
    home: Path,
    *argv: str,
    wrapper: Sequence[str] = (),
    unset: Sequence[str] = (),
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """``ml-assets ARGV`` with only ``home`` as state: no ``DAGSTER_HOME``, telemetry off
    (unless its variables are in ``unset``); under ``wrapper`` (a command prefix) if given."""
    environ = child_env(drop_prefixes=("ML_ASSETS_", "DAGSTER_", "MLFLOW_"))
    environ.update(ML_ASSETS_HOME=str(home), **env)
    for name in unset:
        environ.pop(name, None)
    return subprocess.run(
        [*wrapper, str(CLI), *argv],
        capture_output=True,
        text=True,
        env=environ,
        timeout=DEMO_TIMEOUT,
    )


@dataclass(frozen=True)
class Demo:
    """A finished ``ml-assets demo car_loan``: its home and what the command printed."""

    home: Path
    out: subprocess.CompletedProcess[str]
    trace: Path | None = None
    """The connect calls of the demo's whole process tree (``strace -f``), if recorded."""

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance the demo ran its jobs in (the settings' default under the
        home: the demo runs without ``DAGSTER_HOME``)."""
        from ml_assets import settings

        return settings.from_env({"ML_ASSETS_HOME": str(self.home)}).dagster_home_path

    def env(self) -> dict[str, str]:
        """The environment the demo's jobs ran with (for a process that reads its home, such as
        the Dagster webserver): ``ML_ASSETS_HOME`` and ``DAGSTER_HOME``, telemetry off."""
        environ = child_env(drop_prefixes=("ML_ASSETS_", "DAGSTER_", "MLFLOW_"))
        environ.update(ML_ASSETS_HOME=str(self.home), DAGSTER_HOME=str(self.dagster_home))
        return environ


def run_demo(base: Path, reuse: bool = False) -> Demo:
    """``ml-assets demo car_loan`` with ``base/home`` as its home; its output is kept in
    ``base/demo.json``. With ``reuse``, a home whose demo finished before (that file exists)
    is returned as it is, without running the demo again: for iterating on the tests locally
    (``ML_ASSETS_TEST_DEMO_HOME``), never on CI."""
    home, record, trace = base / "home", base / "demo.json", base / "connect.trace"
    if reuse and record.exists():
        saved = json.loads(record.read_text(encoding="utf-8"))
        out = subprocess.CompletedProcess(saved["args"], **saved["result"])
        return Demo(home, out, trace if trace.exists() else None)
    if home.exists():
        shutil.rmtree(home)
    base.mkdir(parents=True, exist_ok=True)
    # as a user runs it: none of the telemetry opt-outs in the environment (the platform sets
    # them itself), every connect of the process tree recorded for the offline test
    trace.unlink(missing_ok=True)
    prefix = strace_prefix(trace)
    out = cli(home, "demo", "car_loan", wrapper=prefix, unset=list(TELEMETRY_OFF))
    result = {"returncode": out.returncode, "stdout": out.stdout, "stderr": out.stderr}
    record.write_text(json.dumps({"args": out.args, "result": result}), encoding="utf-8")
    return Demo(home, out, trace if prefix else None)


def fresh_home_from(demo: Demo, home: Path) -> Path:
    """A new, empty home whose demo source is a copy of the demo's seeded one: the jobs can run
    there from scratch without seeding again, and without touching the demo's state."""
    home.mkdir(parents=True)
    # SQLite's backup, not a file copy: the source is in WAL mode (its -wal file holds pages
    # a copy of the main file alone would miss)
    with (
        closing(sqlite3.connect(demo.home / "source.sqlite")) as src,
        closing(sqlite3.connect(home / "source.sqlite")) as dst,
    ):
        src.backup(dst)
    return home
