"""What ``ml-assets demo`` and ``ml-assets run`` show on the console, and what goes to the log.

A partitioned job logs a line per partition and Dagster logs a dozen events per step: over three
datasets that is about a thousand lines that bury the results. By default the CLI therefore
shows one line per job (and the few lines a person acts on: failing checks, the model, the
champion, the Bento), a progress bar while a job runs on a terminal, and writes everything else
to a log file under ``$ML_ASSETS_HOME/logs``. ``--verbose`` puts the detail back on the console.

The pieces, used by :mod:`ml_assets.cli`:

* :func:`log_file` and :func:`configure_logging`: the per-invocation log file and the Python
  logging set-up (file always; stderr too when verbose).
* :func:`with_file_logger`: a job with an extra Dagster logger that sends every Dagster record
  (events and ``context.log`` lines) to the log file and to a :class:`JobProgress`, and the
  ``run_config["loggers"]`` that selects it (plus Dagster's console logger when verbose).
* :class:`JobProgress`: a progress bar driven by those records (step starts and ends, and the
  ``[i/n]`` lines the partitioned assets log); no bar unless the output is a terminal.
* :func:`check_lines` and :func:`failure_lines`: a job result's console summary.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dagster as dg

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The key of the CLI's Dagster logger next to the job's own ("console").
FILE_LOGGER = "ml_assets_file"
# ``[3/100] car_loan_applications 2018-01-15: 1234 rows``: the partitioned assets' progress lines.
PARTITION_LINE = re.compile(r"^\[(\d+)/(\d+)\]")
# Check descriptions can list many partitions; the console shows the start, the log all of it.
MAX_DESCRIPTION = 160
# Gates that decide what happens next: always shown, passed or not.
ALWAYS_SHOWN_CHECKS = ("promotion_gate",)

log = logging.getLogger("ml_assets.cli")


@dataclass(frozen=True)
class RunView:
    """How one CLI invocation reports job runs: ``verbose`` (today's detail on the console,
    the default for callers that pass nothing) and the log file, if any, with its handler."""

    verbose: bool = True
    log_path: Path | None = None
    file_handler: logging.Handler | None = None


def log_file(command: str, root: Path) -> Path:
    """A new log file for one CLI invocation: ``<root>/logs/<command>-<UTC timestamp>.log``."""
    folder = root / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = folder / f"{command}-{stamp}.log"
    n = 1
    while path.exists():  # two invocations in the same second
        n += 1
        path = folder / f"{command}-{stamp}-{n}.log"
    return path


def configure_logging(path: Path | None, verbose: bool) -> logging.Handler | None:
    """Route Python logging (and warnings) to ``path``, and to stderr as well when ``verbose``.

    Returns the file handler (``None`` without a path) so Dagster's records can share it.
    Replaces handlers installed earlier in this process, so calling it twice (tests calling
    ``main`` repeatedly) does not write every line twice.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_ml_assets", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.INFO)
    handlers: list[logging.Handler] = []
    file_handler: logging.Handler | None = None
    if path is not None:
        file_handler = logging.FileHandler(path, encoding="utf-8")
        handlers.append(file_handler)
    if verbose or path is None:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._ml_assets = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    logging.captureWarnings(True)
    return file_handler


class _LogWriter(io.TextIOBase):
    """A text stream that turns each line written to it into a log record (``sys.stderr``
    stand-in while a job runs quietly: MLflow and others write notices straight to it)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._buffer = ""
        self._busy = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if getattr(self._busy, "on", False):  # a logging error reported to stderr: drop it
            return len(text)
        self._busy.on = True
        try:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
            for line in lines:
                if line.strip():
                    self._logger.info(line.rstrip())
        finally:
            self._busy.on = False
        return len(text)

    def flush(self) -> None:
        if self._buffer.strip():
            self.write("\n")


@contextlib.contextmanager
def stderr_to_log(enabled: bool) -> Iterator[None]:
    """While enabled, what is written to ``sys.stderr`` goes to the log (logger ``stderr``)."""
    if not enabled:
        yield
        return
    writer = _LogWriter(logging.getLogger("stderr"))
    with contextlib.redirect_stderr(writer):  # type: ignore[type-var]
        try:
            yield
        finally:
            writer.flush()


class JobProgress(logging.Handler):
    """A progress bar for one job run, fed the run's Dagster log records.

    The bar's total is the job's number of steps; a step counts when Dagster reports it
    finished (``STEP_SUCCESS``, ``STEP_FAILURE``, ``STEP_SKIPPED``), and the running step's
    ``[i/n]`` partition lines move the bar within it, so a 100-partition step does not sit
    still. Without a terminal (CI, tests, a pipe) there is no bar: only the counting.
    """

    FINISHED = frozenset({"STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"})

    def __init__(self, job_name: str, steps: int, stream: IO[str], show_bar: bool) -> None:
        super().__init__(level=logging.DEBUG)
        self.job_name = job_name
        self.steps = max(steps, 1)
        self.done = 0
        self.partial = 0.0
        self.current = ""
        self.partition_lines = 0
        self._progress: Any = None
        self._task: Any = None
        self._terminal: IO[str] | None = None
        if show_bar:
            # Dagster captures a run's output by pointing file descriptor 1 at a file while it
            # runs; the bar draws on a duplicate of the descriptor, which still is the terminal.
            self._terminal = os.fdopen(os.dup(stream.fileno()), "w", encoding="utf-8")
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                console=Console(file=self._terminal),
                transient=True,  # the job's summary line replaces it
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._task = self._progress.add_task(f"{job_name}: starting", total=self.steps)

    def __enter__(self) -> JobProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._terminal is not None:
            self._terminal.close()

    @property
    def completed(self) -> float:
        """Steps finished plus the running step's fraction of partitions done."""
        return min(self.done + self.partial, float(self.steps))

    def emit(self, record: logging.LogRecord) -> None:
        meta: Mapping[str, Any] = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if event is not None:
            kind = event.event_type_value
            if kind == "STEP_START":
                self.current, self.partial = event.step_key or "", 0.0
            elif kind in self.FINISHED:
                self.done += 1
                self.partial = 0.0
        else:
            found = PARTITION_LINE.match(str(meta.get("orig_message", "")))
            if found:
                i, n = int(found.group(1)), int(found.group(2))
                self.partition_lines += 1
                self.partial = i / n if n else 0.0
                self.current = f"{meta.get('step_key') or self.current} [{i}/{n}]"
        if self._progress is not None:
            desc = f"{self.job_name}: {self.current}" if self.current else self.job_name
            self._progress.update(self._task, completed=self.completed, description=desc)


def with_file_logger(
    job: dg.JobDefinition, handlers: Iterable[logging.Handler], verbose: bool
) -> tuple[dg.JobDefinition, dict[str, Any]]:
    """``job`` with one more Dagster logger, and the ``run_config`` that selects the loggers.

    The extra logger hands every Dagster record (DEBUG and up: events included, which the
    progress bar counts) to ``handlers``: the log file's and a :class:`JobProgress`. Dagster
    instantiates only the loggers named in ``run_config["loggers"]``, so quietly the console
    logger is left out; verbose keeps it at INFO (each partition's line, no debug chatter).
    """
    import dagster as dg

    handlers = list(handlers)

    @dg.logger(description="ml-assets CLI: every record to the log file and the progress bar.")
    def file_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
        logger = logging.Logger("dagster", level=logging.DEBUG)  # unregistered: no propagation
        for handler in handlers:
            logger.addHandler(handler)
        return logger

    loggers: dict[str, Any] = {FILE_LOGGER: {}}
    if verbose:
        loggers["console"] = {"config": {"log_level": "INFO"}}
    job = job.with_logger_defs({**job.loggers, FILE_LOGGER: file_logger})
    return job, {"loggers": loggers}


def _shorten(text: str, limit: int = MAX_DESCRIPTION) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def check_lines(evaluations: Iterable[Any], verbose: bool) -> list[str]:
    """Console lines for a run's asset check results.

    Verbose: one line per check, as before. Quiet: a count (``checks: 12 passed, 2 warnings``),
    then each warning or failure with its description (shortened), and the promotion gate
    whatever its outcome, since it decides whether there is a new champion.
    """
    lines: list[str] = []
    passed = warned = failed = 0
    for check in evaluations:
        if check.passed:
            mark = "ok  "
            passed += 1
        elif check.severity.value == "WARN":
            mark = "WARN"
            warned += 1
        else:
            mark = "FAIL"
            failed += 1
        name = f"{check.asset_key.to_user_string()}:{check.check_name}"
        desc = check.description or ""
        log.info("check [%s] %s%s", mark, name, f" - {desc}" if desc else "")
        if verbose:
            lines.append(f"  [{mark}] {name}" + (f" - {desc}" if desc and not check.passed else ""))
        elif not check.passed or check.check_name in ALWAYS_SHOWN_CHECKS:
            lines.append(f"  [{mark}] {name}" + (f" - {_shorten(desc)}" if desc else ""))
    if verbose or not (passed or warned or failed):
        return lines
    counts = [f"{passed} passed"]
    counts += [f"{warned} warning{'s' * (warned != 1)}"] if warned else []
    counts += [f"{failed} failed"] if failed else []
    return ["  checks: " + ", ".join(counts), *lines]


def failure_lines(result: Any, log_path: Path | None) -> list[str]:
    """Console lines for a failed run: each failed step's error (class, message, and the
    innermost cause), then where the full tracebacks are."""
    lines: list[str] = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.step_failure_data.error
            lines.append(f"  step {event.step_key} failed: {_error_summary(error)}")
        elif event.event_type_value == "RUN_FAILURE" and not lines:
            lines.append(f"  run failed: {event.message}")
    if log_path is not None:
        lines.append(f"  full traceback in {log_path}")
    return lines


def _error_summary(error: Any) -> str:
    """``Class: message`` of a serialized error, and of its innermost cause if it has one."""
    if error is None:
        return "(no error recorded)"
    # ``message`` is ``traceback.format_exception_only``'s: it starts with the class name.
    text = error.message.strip()
    inner = error
    while getattr(inner, "cause", None) is not None:
        inner = inner.cause
    if inner is not error:
        text += f" (caused by {inner.message.strip()})"
    return _shorten(text, 400)


def is_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is an interactive terminal (where a progress bar can redraw)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


__all__ = [
    "FILE_LOGGER",
    "JobProgress",
    "RunView",
    "check_lines",
    "configure_logging",
    "failure_lines",
    "is_terminal",
    "log_file",
    "stderr_to_log",
    "with_file_logger",
]
