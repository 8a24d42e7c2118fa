"""Workers and their supervisor (``bentoml serve``): die together, report lost rows.

BentoML's supervisor (a circus arbiter in the ``bentoml serve`` process) starts the worker
processes and restarts one that dies; it has no setting to stop its workers when it is itself
killed outright (SIGKILL, the OOM killer), and BentoML's issue tracker has none either
(bentoml/BentoML#4193). Left alone, an orphaned worker keeps serving on both ports, unsupervised,
and a restart fails with "Address already in use". So each worker asks the kernel for SIGTERM
when its parent dies (Linux ``PR_SET_PDEATHSIG``; elsewhere a thread polls the parent): a
graceful stop, which writes the worker's prediction log.

A worker that cannot write every answered prediction at its graceful stop (a full disk) logs
the count and leaves a report for its supervisor; the supervisor, on its way out, logs the
total and exits with :data:`EXIT_UNWRITTEN` instead of 0, so whatever runs the server sees
the loss.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
EXIT_UNWRITTEN = 3
"""``bentoml serve`` exit status when a worker stopped with answered rows not written."""
POLL_SECONDS = 1.0


def exit_with_parent(sig: int = signal.SIGTERM) -> int:
    """Have this process receive ``sig`` when its parent (the supervisor) dies; return the
    parent's pid. If the parent is already gone, ``sig`` is sent at once."""
    parent = os.getppid()
    armed = False
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
        if not armed:
            log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d)", ctypes.get_errno())
    if not armed:
        threading.Thread(
            target=_watch_parent, args=(parent, sig), name="parent-watch", daemon=True
        ).start()
    # The parent may have died between this process' start and the prctl: it is reparented
    # then, and the kernel will never send the signal.
    if os.getppid() != parent or parent == 1:
        os.kill(os.getpid(), sig)
    return parent


def _watch_parent(parent: int, sig: int) -> None:
    stop = threading.Event()
    while not stop.wait(POLL_SECONDS):
        if os.getppid() != parent:
            log.error("the supervisor (pid %d) is gone: stopping this worker", parent)
            os.kill(os.getpid(), sig)
            return


def report_dir(supervisor: int) -> Path:
    """Where the workers of supervisor ``supervisor`` leave their reports."""
    return Path(tempfile.gettempdir()) / f"ml_assets_serve_{supervisor}"


def report_unwritten(supervisor: int, dataset: str, rows: int, error: str | None) -> None:
    """Tell the supervisor this worker stopped with ``rows`` answered rows not written (the
    worker's own log has already said so)."""
    folder = report_dir(supervisor)
    try:
        folder.mkdir(exist_ok=True)
        payload = {"pid": os.getpid(), "dataset": dataset, "rows": rows, "error": error}
        (folder / f"{os.getpid()}.json").write_text(json.dumps(payload), encoding="utf-8")
    except OSError as exc:
        log.error("cannot report %d unwritten rows to the supervisor: %s", rows, exc)


def collect_reports(supervisor: int) -> list[dict]:
    """The reports the workers of ``supervisor`` left, removed as they are read."""
    folder = report_dir(supervisor)
    if not folder.is_dir():
        return []
    reports = []
    for path in sorted(folder.glob("*.json")):
        try:
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            reports.append({"pid": path.stem, "rows": -1, "error": f"unreadable report: {exc}"})
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # another report still being written
        folder.rmdir()
    return reports


def _exit_if_rows_lost() -> None:
    reports = collect_reports(os.getpid())
    if not reports:
        return
    total = sum(max(r.get("rows", 0), 0) for r in reports)
    for r in reports:
        log.error(
            "worker %s stopped with %s answered %s rows not written to the prediction log (%s)",
            r.get("pid"),
            r.get("rows"),
            r.get("dataset", "?"),
            r.get("error"),
        )
    log.error(
        "%d answered prediction rows were not written: exiting with status %d",
        total,
        EXIT_UNWRITTEN,
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_UNWRITTEN)  # the CLI would exit 0; the loss must show in the status


def install_supervisor_check() -> None:
    """In the ``bentoml serve`` process (which imports the service before it starts the
    workers): at exit, report the workers' unwritten rows and exit with
    :data:`EXIT_UNWRITTEN` if there are any."""
    atexit.register(_exit_if_rows_lost)
