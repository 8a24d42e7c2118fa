"""``ml-assets``: seed the demo source, run the pipeline end to end, inspect contracts.

ml-assets demo [-v]               seed the SQLite demo source and run every dataset's job
ml-assets seed [--url URL]        seed a SQLAlchemy database with the demo tables
ml-assets run [-v] DATASET [--from KEY] [--to KEY] [--cutoff ISO] [--window-days N]
        [--config FILE.yaml] [--only pipeline|train|search|score|monitor]
                                  run a dataset's jobs (partitioned ones over a range, one run)
ml-assets settings                print every setting in effect
ml-assets check CONTRACT [--features FILE] [--url URL]
                                  a contract, its features and its live source: every problem
ml-assets contract check FILE     validate a contract file
ml-assets contract init --url URL --table T [--labels T] [--out FILE]
                                  draft a contract from a table, every guess marked for review
ml-assets contract diff OLD NEW   list changes between two contract versions (exit 1 if breaking)
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_assets import settings
from ml_assets.progress import (
    JobProgress,
    RunView,
    check_lines,
    configure_logging,
    failure_lines,
    is_terminal,
    log_file,
    stderr_to_log,
    with_file_logger,
)

log = logging.getLogger("ml_assets.cli")
VERBOSE_HELP = "show every partition's progress and Dagster's log on the console"


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _contracts(folder: str | None):
    from ml_assets.contracts import load_contracts

    return load_contracts(folder or settings.current().contracts_path)


def cmd_seed(args: argparse.Namespace) -> int:
    from ml_assets.ingest.demo import seed_demo

    s = settings.current()
    url = args.url or s.source_url or s.demo_source_url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    contracts = _contracts(args.contracts)
    names = args.dataset or [n for n, c in contracts.items() if c.demo is not None]
    for name in names:
        t0 = time.perf_counter()
        counts = seed_demo(
            url, contracts[name], quality=args.quality, rows=args.rows, seed=args.seed
        )
        took = time.perf_counter() - t0
        _out(
            f"seeded {name}: "
            + ", ".join(f"{t} {n:,} rows" for t, n in counts.items())
            + f" ({took:.1f} s)"
        )
    _out(f"source database: {url}")
    return 0


OWNER_TAG = "ml_assets/owner"
"""Tag of an in-process run: the host and pid of the process running it
(:data:`ml_assets.storage.TEMP_OWNER`)."""


def reap_dead_runs(instance: Any) -> list[str]:
    """Mark failed the runs this host's killed processes left STARTED (or STARTING).

    An in-process run lives and dies with the process that executes it: killed (SIGKILL, OOM),
    it can never report its end, and Dagster's run monitoring cannot see it (the default run
    launcher has no worker health check). Each run :func:`execute` starts is tagged with its
    owner (host and pid); a run of this host whose owner no longer runs is reported failed,
    naming it. Returns the run ids marked."""
    import dagster as dg

    from ml_assets.storage import owner_gone

    statuses = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]
    marked = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=statuses)):
        owner = run.tags.get(OWNER_TAG, "")
        if not owner_gone(owner):
            continue
        host, _, pid = owner.rpartition("-")
        instance.report_run_failed(
            run,
            message=f"the process running it (pid {pid} on {host}) is gone: it was killed or "
            "crashed before the run could end",
        )
        marked.append(run.run_id)
        log.warning(
            "run %s of %s: its process %s is gone; marked failed", run.run_id, run.job_name, pid
        )
    return marked


def execute(
    job_name: str,
    instance=None,
    view: RunView | None = None,
    *,
    partitions: list[str] | None = None,
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
    bar: bool = True,
):
    """Run a job in-process and return Dagster's result; a partitioned one over ``partitions``
    (default: all of them) as one run (a single partition as a plain partitioned run).

    Dagster's records go to the log file of ``view`` (and the console when verbose). Prints
    nothing: :func:`run_job` says what happened.
    """
    import dagster as dg

    from ml_assets.definitions import defs

    view = view or RunView()
    job = defs.resolve_job_def(job_name)
    from ml_assets.storage import TEMP_OWNER

    run_tags = {**(tags or {}), OWNER_TAG: TEMP_OWNER}
    partition_key = None
    if job.partitions_def is not None:
        keys = partitions or job.partitions_def.get_partition_keys()
        if len(keys) == 1:
            partition_key = keys[0]
        else:
            run_tags["dagster/asset_partition_range_start"] = keys[0]
            run_tags["dagster/asset_partition_range_end"] = keys[-1]
    instance = instance or dg.DagsterInstance.get()
    reap_dead_runs(instance)
    from ml_assets import execution

    if execution.submits_runs():
        # The production profile: the run goes through the webserver, the queue and the
        # daemon to the Celery workers, like a run launched in the UI (ml_assets.execution).
        # Not tagged with this process as its owner: the daemon's run worker runs it.
        submitted = {k: v for k, v in run_tags.items() if k != OWNER_TAG}
        if partition_key is not None:
            submitted["dagster/partition"] = partition_key
        run_id = execution.submit(job_name, tags=submitted, run_config=run_config)
        log.info("%s: submitted as run %s", job_name, run_id)
        return execution.wait(instance, run_id)
    show_bar = bar and not view.verbose and is_terminal(sys.stdout)
    progress = JobProgress(job_name, steps=len(job.nodes), stream=sys.stdout, show_bar=show_bar)
    handlers = [h for h in (view.file_handler, progress) if h is not None]
    job, logger_config = with_file_logger(job, handlers, view.verbose)
    config = {**(run_config or {}), **logger_config}
    with progress, stderr_to_log(not view.verbose):
        return job.execute_in_process(
            instance=instance,
            tags=run_tags,
            run_config=config,
            partition_key=partition_key,
            raise_on_error=False,
        )


def describe_partitions(keys: list[str] | None) -> str:
    """``1 run``, ``partition K`` or ``N partitions (A .. B) in one run``."""
    if keys is None:
        return "1 run"
    if len(keys) == 1:
        return f"partition {keys[0]}"
    return f"{len(keys)} partitions ({keys[0]} .. {keys[-1]}) in one run"


def run_job(
    job_name: str,
    instance=None,
    view: RunView | None = None,
    *,
    partitions: list[str] | None = None,
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
) -> bool:
    """Run a job in-process; a partitioned one over ``partitions`` (default all) as one run.

    Prints one line (what ran, status, seconds), the check results (summarised unless
    ``view.verbose``), a failed step's error, and the model/champion/Bento it produced.
    Dagster's records go to the log file of ``view``, and to the console when verbose.
    """
    from ml_assets.definitions import defs

    view = view or RunView()
    job = defs.resolve_job_def(job_name)
    keys = None
    if job.partitions_def is not None:
        keys = partitions or job.partitions_def.get_partition_keys()
    what = describe_partitions(keys)
    log.info("%s: %s", job_name, what)
    t0 = time.perf_counter()
    result = execute(job_name, instance, view, partitions=keys, run_config=run_config, tags=tags)
    took = time.perf_counter() - t0
    status = "succeeded" if result.success else "FAILED"
    _out(f"{job_name}: {what}, {status} in {took:.1f} s")
    log.info("%s: %s in %.1f s", job_name, status, took)
    if not result.success:
        for line in failure_lines(result, view.log_path):
            _out(line)
    for line in check_lines(result.get_asset_check_evaluations(), view.verbose):
        _out(line)
    for line in model_lines(result):
        _out(line)
    return result.success


def scored_partitions(dataset, within: list[str] | None = None) -> list[str]:
    """The dataset's partitions (of ``within``, default all) whose batch predictions are in the
    lake with at least one row, in partition order: what monitoring has to look at."""
    import polars as pl

    from ml_assets.definitions import resources

    lake = resources()["lake"]
    keys = within if within is not None else dataset.partitions.keys()
    scored = [p for p in keys if lake.exists(dataset.keys.predictions, p)]
    return [
        p
        for p in scored
        if lake.scan(dataset.keys.predictions, [p]).select(pl.len()).collect().item()
    ]


def run_monitoring(
    dataset,
    partitions: list[str],
    view: RunView | None = None,
    *,
    instance=None,
    run_config: dict | None = None,
) -> bool:
    """Monitor ``partitions`` one run each (a partition's checks are its own; the newest draws
    the plots), then the monitoring summary. Prints one line: how many, the status, the time,
    and the checks that did not pass (each run's detail is in the log)."""
    import dagster as dg

    view = view or RunView()
    instance = instance or dg.DagsterInstance.get()
    op = dataset.keys.monitoring.to_python_identifier()
    t0 = time.perf_counter()
    failed: list[str] = []
    ok = True
    for p in partitions:
        mine = {"ops": {op: {"config": {"plots": p == partitions[-1]}}}}
        result = execute(
            dataset.jobs.monitor,
            instance,
            view,
            partitions=[p],
            run_config=_merge(mine, run_config or {}),
            bar=False,
        )
        ok = ok and result.success
        failed += [
            f"{p}:{e.check_name}" for e in result.get_asset_check_evaluations() if not e.passed
        ]
        if not result.success:
            failed.append(f"{p}: FAILED (see the log)")
    summary = execute(dataset.jobs.monitoring_summary, instance, view, bar=False)
    ok = ok and summary.success
    status = "succeeded" if ok else "FAILED"
    if not partitions:
        what = "no scored partition"
    elif len(partitions) == 1:
        what = f"partition {partitions[0]}"
    else:
        what = f"{len(partitions)} partitions ({partitions[0]} .. {partitions[-1]}), a run each,"
    _out(
        f"{dataset.jobs.monitor}: {what} and the summary, {status} in "
        f"{time.perf_counter() - t0:.1f} s"
        + (f"; checks not passed: {', '.join(failed)}" if failed else "")
    )
    return ok


def model_lines(result) -> list[str]:
    """The model, model search, champion and Bento a run produced, one line each (and the
    serve command)."""
    lines = []
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        if "model_version" in meta and "mlflow_run" in meta:
            metric = meta["primary_metric"].value
            lines.append(
                f"  model v{meta['model_version'].value}: test {metric} "
                f"{meta[f'test_{metric}'].value:.4f} (baseline {meta[f'baseline_{metric}'].value:.4f})"
            )
        if "search_id" in meta and "config_version" in meta:
            metric = meta["primary_metric"].value
            lines.append(
                f"  search {meta['search_id'].value} v{meta['config_version'].value}: best CV "
                f"{metric} {meta[f'best_cv_{metric}'].value:.4f} (default "
                f"{meta[f'default_cv_{metric}'].value:.4f}), {meta['trials'].value} trials "
                f"({meta['trials_pruned'].value} pruned), stopped by {meta['stopped_by'].value}; "
                f"train with it: params_from: v{meta['config_version'].value}"
            )
        if event.asset_key.path[-1] == "champion":
            lines.append(f"  champion: v{meta['champion_version'].value}")
        if "serve_command" in meta:
            lines.append(f"  bento {meta['bento_tag'].value}; serve it with:")
            lines.append(f"    {meta['serve_command'].value}")
        if "bento_export" in meta:
            url = meta["bento_export"].value
            lines.append(f"  exported to {url}; on a serving host:")
            lines.append(f"    bentoml import {url} && bentoml serve {meta['bento_tag'].value}")
    return lines


def run_dataset(name: str, instance=None, view: RunView | None = None) -> bool:
    """A dataset end to end: ingest, validate, features; train and promote; batch scoring."""
    from ml_assets.dataset import load_datasets

    return all(run_job(job, instance, view) for job in load_datasets()[name].jobs.in_order())


def _view(command: str, verbose: bool) -> RunView:
    """Log to a new file under ``$ML_ASSETS_HOME/logs`` (and stderr when verbose); say where."""
    path = log_file(command, settings.current().root)
    handler = configure_logging(path, verbose)
    hint = "" if verbose else " (--verbose shows it here)"
    _out(f"log: {path}{hint}")
    return RunView(verbose=verbose, log_path=path, file_handler=handler)


JOB_ROLES = ("pipeline", "train", "score")
"""The jobs ``ml-assets run`` runs, in pipeline order (``--only`` and ``--config`` name them)."""
OPT_IN_ROLES = ("search", "monitor")
"""Jobs that run only when ``--only`` names them: the model search (``<dataset>_model_search``)
and monitoring (``<dataset>_monitor``, one run per scored partition, then the summary)."""
ALL_ROLES = ("pipeline", "train", "search", "score", "monitor")
"""Every role ``--only`` and ``--config`` take, in the order they run."""


class RunOptionsError(ValueError):
    """An ``ml-assets run`` option that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class PlannedRun:
    """One job run of ``ml-assets run``: the job, its partitions (None: all, or unpartitioned)
    and its run config."""

    job: str
    partitions: list[str] | None
    run_config: dict[str, Any]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base`` key by key, mappings recursively (``over`` wins)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _valid_range(dataset) -> str:
    keys = dataset.partitions.keys()
    granularity = dataset.contract.partitioning.granularity.value
    return f"valid keys: {keys[0]} .. {keys[-1]} ({len(keys)} {granularity} partitions)"


def select_partitions(dataset, first: str | None, last: str | None) -> list[str] | None:
    """The partition keys from ``first`` to ``last`` (each default: the first/last partition);
    None when neither is given (every partition). Unknown keys and a reversed range are errors
    naming the valid range."""
    if first is None and last is None:
        return None
    keys = dataset.partitions.keys()
    for flag, key in (("--from", first), ("--to", last)):
        if key is not None and key not in keys:
            raise RunOptionsError(
                f"{dataset.name}: {flag} {key!r} is not a partition key; {_valid_range(dataset)}"
            )
    i = keys.index(first) if first is not None else 0
    j = keys.index(last) if last is not None else len(keys) - 1
    if i > j:
        raise RunOptionsError(
            f"{dataset.name}: --from {first} is after --to {last}; {_valid_range(dataset)}"
        )
    return keys[i : j + 1]


def read_run_config_file(path: str | None) -> dict[str, dict[str, Any]]:
    """A ``--config`` file: a YAML mapping from a job (``pipeline``, ``train``, ``search``, ``score``, or a
    job's full name) to that job's Dagster run config."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RunOptionsError(f"--config {path}: cannot read it: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RunOptionsError(f"--config {path}: not YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RunOptionsError(
            f"--config {path}: expected a mapping from job to run config, got {type(data).__name__}"
        )
    for job, config in data.items():
        if not isinstance(config, dict):
            raise RunOptionsError(
                f"--config {path}: {job}: a job's run config is a mapping (ops:, resources:), "
                f"got {type(config).__name__}"
            )
    return data


def plan_runs(
    dataset,
    *,
    first: str | None = None,
    last: str | None = None,
    cutoff: str | None = None,
    window_days: float | None = None,
    file_config: dict[str, dict[str, Any]] | None = None,
    only: list[str] | None = None,
) -> list[PlannedRun]:
    """The job runs of ``ml-assets run`` for one dataset, in pipeline order, each with its
    partitions and run config: the ``--config`` file's entry for the job (its role, then its
    full name, merged), then ``--cutoff`` / ``--window-days`` in the training set's config."""
    roles = [r for r in ALL_ROLES if r in (only or JOB_ROLES)]
    if (first or last) and not {"pipeline", "score", "monitor"} & set(roles):
        raise RunOptionsError(
            "--from/--to select partitions of the pipeline, score and monitor jobs; the train "
            "job is not partitioned (its training set takes --cutoff and --window-days)"
        )
    if (cutoff is not None or window_days is not None) and "train" not in roles:
        raise RunOptionsError(
            "--cutoff and --window-days configure the train job: add --only train"
        )
    training: dict[str, Any] = {}
    if cutoff is not None:
        try:
            training["cutoff"] = dt.datetime.fromisoformat(cutoff).isoformat()
        except ValueError as exc:
            raise RunOptionsError(
                f"--cutoff {cutoff!r} is not an ISO date or datetime (2024-01-01, "
                "2024-01-01T12:00, 2024-01-01T12:00+02:00; naive = UTC)"
            ) from exc
    if window_days is not None:
        if not (window_days > 0 and math.isfinite(window_days)):
            raise RunOptionsError(f"--window-days must be a positive number, got {window_days}")
        training["window_days"] = float(window_days)
    partitions = select_partitions(dataset, first, last)
    names = {role: getattr(dataset.jobs, role) for role in roles}
    file_config = file_config or {}
    runs = []
    for role, job in names.items():
        config = _merge(file_config.get(role, {}), file_config.get(job, {}))
        if role == "train" and training:
            op = dataset.keys.training_set.to_python_identifier()
            config = _merge(config, {"ops": {op: {"config": training}}})
        unpartitioned = role in ("train", "search")
        runs.append(PlannedRun(job, None if unpartitioned else partitions, config))
    return runs


def _check_config_keys(file_config: dict[str, Any], datasets: list, path: str | None) -> None:
    """Every key of the ``--config`` file names a job of this run (a role or a full name)."""
    known = set(ALL_ROLES) | {getattr(d.jobs, r) for d in datasets for r in ALL_ROLES}
    unknown = [k for k in file_config if k not in known]
    if unknown:
        hint = (
            " (the file maps each job to its run config: put `ops:` under `train:`)"
            if {"ops", "resources", "execution", "loggers"} & set(unknown)
            else ""
        )
        raise RunOptionsError(
            f"--config {path}: {', '.join(map(str, unknown))} names no job of this run; use "
            f"{', '.join(sorted(known))}{hint}"
        )


def validate_planned(runs: list[PlannedRun]) -> None:
    """Check each run config against its job's config schema before anything runs."""
    import dagster as dg

    from ml_assets.definitions import defs

    for run in runs:
        if not run.run_config:
            continue
        try:
            dg.validate_run_config(defs.resolve_job_def(run.job), run.run_config)
        except dg.DagsterInvalidConfigError as exc:
            raise RunOptionsError(f"{run.job}: invalid run config: {exc}") from exc


def plan_from_args(args: argparse.Namespace) -> list[PlannedRun]:
    """Every job run that ``ml-assets run ARGS`` asks for, validated (no job runs yet)."""
    from ml_assets.contracts import ContractError
    from ml_assets.dataset import load_datasets

    try:
        datasets = load_datasets()
    except ContractError as exc:
        raise RunOptionsError(str(exc)) from exc
    unknown = [n for n in args.dataset if n not in datasets]
    if unknown:
        raise RunOptionsError(
            f"unknown dataset {', '.join(unknown)}; the contracts in "
            f"{settings.current().contracts_path} define: {', '.join(sorted(datasets))}"
        )
    chosen = [datasets[n] for n in args.dataset]
    file_config = read_run_config_file(args.config)
    _check_config_keys(file_config, chosen, args.config)
    runs = []
    for d in chosen:
        runs += plan_runs(
            d,
            first=args.first,
            last=args.last,
            cutoff=args.cutoff,
            window_days=args.window_days,
            file_config=file_config,
            only=args.only,
        )
    validate_planned(runs)
    return runs


def cmd_run(args: argparse.Namespace) -> int:
    """Run datasets' jobs (pipeline, train, score) with the options given; exit 2 when an
    option cannot be used (nothing runs then), 1 when a job fails."""
    _dagster_home()
    try:
        runs = plan_from_args(args)
    except RunOptionsError as exc:
        _out(f"ml-assets run: {exc}")
        return 2
    view = _view("run", args.verbose)
    from ml_assets.dataset import load_datasets

    monitors = {d.jobs.monitor: d for d in load_datasets().values()}
    ok = True
    for r in runs:
        if r.job in monitors:  # one run per scored partition of the range, then the summary
            dataset = monitors[r.job]
            parts = scored_partitions(dataset, r.partitions)
            ok = run_monitoring(dataset, parts, view, run_config=r.run_config or None) and ok
        else:
            ok = (
                run_job(r.job, view=view, partitions=r.partitions, run_config=r.run_config or None)
                and ok
            )
        if not ok:
            break
    return 0 if ok else 1


def _dagster_home() -> Path:
    """``DAGSTER_HOME`` prepared for this profile (:func:`ml_assets.execution.prepare_dagster_home`)."""
    from ml_assets.execution import prepare_dagster_home

    return prepare_dagster_home()


def cmd_demo(args: argparse.Namespace) -> int:
    """Seed the embedded source and run every dataset end to end, then say where things are."""
    dagster_home = _dagster_home()
    view = _view("demo", args.verbose)
    seed_args = argparse.Namespace(
        url=None, contracts=None, dataset=args.dataset, quality=False, rows=None, seed=0
    )
    cmd_seed(seed_args)
    from ml_assets.dataset import load_datasets
    from ml_assets.replay import Replay, monitor_latest, replay_datasets

    datasets = load_datasets()
    names = args.dataset or list(datasets)
    replayed = [n for n in names if n in replay_datasets(datasets)]
    others = [n for n in names if n not in replayed]
    ok = True
    beside = None
    if replayed and others:
        from ml_assets.registry.tracking import MlflowTracking

        # both processes use one MLflow store: create and migrate it once, before they start
        MlflowTracking().prepare()
        # the others run in a process of their own beside the replay; their lines follow its
        beside = _start_others(others, args.verbose)
        others = []
    try:
        for name in replayed:
            # trained on the first half only, the second half replayed as if live
            ok = run_job(datasets[name].jobs.pipeline, view=view) and ok
            ok = Replay(datasets[name], view, _out).run().ok and ok
        for name in others:
            ok = run_dataset(name, view=view) and ok
            ok = monitor_latest(datasets[name], view, _out) and ok
    except BaseException:
        if beside is not None:  # interrupted: do not leave the others running
            beside[0].terminate()
        raise
    if beside is not None:
        ok = _finish_others(*beside) and ok
    _out()
    s = settings.current()
    for what, where in {**s.summary(), "log file": str(view.log_path)}.items():
        _out(f"{what + ':':<17} {where}")
    _out("open the Dagster UI (http://127.0.0.1:3000):")
    _out(f"  DAGSTER_HOME={dagster_home} .venv/bin/dagster dev -w workspace.yaml")
    _out("open the MLflow UI (http://127.0.0.1:5000):")
    _out(f"  .venv/bin/mlflow ui --backend-store-uri {s.tracking_uri}")
    return 0 if ok else 1


def _start_others(names: list[str], verbose: bool):
    """``python -m ml_assets.replay NAMES``, its stdout to a temporary file."""
    import subprocess
    import tempfile

    out = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by _finish_others)
    argv = [sys.executable, "-m", "ml_assets.replay", *names, *(["-v"] if verbose else [])]
    env = settings.child_env()
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env), out


def _finish_others(proc, out) -> bool:
    """Wait for the others' process and print what it printed (its own log file included)."""
    code = proc.wait()
    out.seek(0)
    for line in out.read().splitlines():
        _out(line)
    out.close()
    return code == 0


def cmd_settings(args: argparse.Namespace) -> int:
    """Every setting: its variable, the value in effect, and where derived paths resolve."""
    s = settings.current()
    for var, name in settings.variables().items():
        value = getattr(s, name)
        _out(f"{var:<40} {'(unset)' if value is None else value}")
    _out()
    for what, where in s.summary().items():
        _out(f"{what + ':':<17} {where}")
    return 0


def cmd_services(args: argparse.Namespace) -> int:
    """Start, stop or list the profile's services on this machine (:mod:`ml_assets.services`)."""
    from ml_assets import services

    s = settings.current()
    if args.action == "up":
        try:
            services.up(s, say=_out)
        except services.ServiceError as exc:
            _out(f"error: {exc}")
            _out("stopping what was started (`ml-assets services down`)")
            services.down(s)
            return 1
        _out(f"services up (profile {s.profile}); logs in {services.state_dir(s)}")
        return 0
    if args.action == "down":
        stopped = services.down(s)
        _out(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
        return 0
    alive = services.running(s)
    for name, pid in alive.items():
        _out(f"{name:<20} running, pid {pid}, log {services.log_file(s, name)}")
    if not alive:
        _out(f"no service started here is running (profile {s.profile})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from ml_assets.registry.tracking import MlflowTracking

    old, new = MlflowTracking().rollback(args.dataset, args.version)
    _out(f"{args.dataset}: champion v{old} -> v{new}")
    return 0


def cmd_contract(args: argparse.Namespace) -> int:
    from ml_assets.contracts import ContractError, diff_contracts, load_contract

    try:
        if args.action == "check":
            for f in args.files:
                c = load_contract(f)
                _out(
                    f"{f}: ok ({c.name} v{c.version}, {c.problem_type.value}, fingerprint {c.fingerprint()})"
                )
            return 0
        old, new = load_contract(args.files[0]), load_contract(args.files[1])
    except ContractError as exc:
        _out(str(exc))
        return 2
    changes = diff_contracts(old, new)
    if not changes:
        _out("no changes")
    for change in changes:
        _out(str(change))
    return 1 if any(c.breaking for c in changes) else 0


def cmd_check(args: argparse.Namespace) -> int:
    """A contract with its features file and its live source; exit 0 ok, 1 problems, 2
    unreadable."""
    from ml_assets.contracts.check import check

    report = check(args.contract, args.features, args.url, source=not args.no_source)
    for line in report.lines():
        _out(line)
    return report.exit_code


def cmd_contract_init(args: argparse.Namespace) -> int:
    """Draft a contract from a source table (and a labels table); print where it went."""
    from ml_assets.contracts.draft import DraftError, draft_contract

    if not args.url or not args.table:
        _out("contract init needs --url URL and --table TABLE")
        return 2
    try:
        draft = draft_contract(
            args.url,
            args.table,
            labels=args.labels,
            name=args.name,
            target=args.target,
        )
    except DraftError as exc:
        _out(str(exc))
        return 2
    out = Path(args.out) if args.out else Path(f"{draft.name}.yaml")
    if out.exists() and not args.force:
        _out(f"{out} exists; pass --force to overwrite it, or --out another file")
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(draft.text, encoding="utf-8")
    _out(f"wrote {out}: {draft.summary}")
    _out(f"review every '# REVIEW:' line, then: ml-assets check {out} --url <the same URL>")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ml-assets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="seed the demo source and run every dataset end to end")
    p.add_argument("dataset", nargs="*", help="datasets to run (default: all)")
    p.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("seed", help="seed a database with the demo tables")
    p.add_argument(
        "--url",
        help="SQLAlchemy URL (default: ML_ASSETS_SOURCE_URL, else the embedded SQLite file)",
    )
    p.add_argument("--contracts", help="folder of contract YAML files")
    p.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    p.add_argument(
        "--quality", action="store_true", help="the data-quality variant with missing values"
    )
    p.add_argument("--rows", type=int, help="resample to this many entity rows")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_seed)

    p = sub.add_parser(
        "run",
        help="run datasets' jobs (pipeline, train, score), over all partitions by default",
        description="Run each dataset's pipeline, train and score jobs in order, the "
        "partitioned ones over a partition range as one run. Exit 0 ok, 1 a job failed, 2 an "
        "option cannot be used (nothing ran).",
    )
    p.add_argument("dataset", nargs="+")
    p.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    p.add_argument(
        "--from", dest="first", metavar="KEY", help="first partition key (default: the first)"
    )
    p.add_argument(
        "--to", dest="last", metavar="KEY", help="last partition key (default: the last)"
    )
    p.add_argument(
        "--cutoff",
        metavar="ISO",
        help="training-set cutoff (naive = UTC; default: end of the latest feature partition)",
    )
    p.add_argument(
        "--window-days",
        type=float,
        metavar="N",
        help="training window: rows of the N days before the cutoff (default: the contract's "
        "training.window_days, else every labelled row before the cutoff)",
    )
    p.add_argument(
        "--config",
        metavar="FILE.yaml",
        help="run config per job: {pipeline|train|search|score|monitor|<job name>: "
        "<Dagster run config>}",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=ALL_ROLES,
        help="run only this job (repeatable; default: pipeline, train, score; search, the "
        "model search, and monitor, NannyML over each scored partition of the range then the "
        "summary, run only when named)",
    )
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("rollback", help="point a dataset's champion back at an earlier version")
    p.add_argument("dataset")
    p.add_argument("version", nargs="?", help="default: the champion before the current one")
    p.set_defaults(fn=cmd_rollback)

    p = sub.add_parser(
        "services",
        help="start, stop or list the profile's services (MLflow server, S3 stand-in, Dagster "
        "webserver and daemon, Celery workers) on this machine",
    )
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(fn=cmd_services)

    p = sub.add_parser("settings", help="print every setting and the paths in effect")
    p.set_defaults(fn=cmd_settings)

    p = sub.add_parser(
        "check", help="check a contract, its features file and its live source, all at once"
    )
    p.add_argument("contract", help="the contract YAML (a features file finds its contract)")
    p.add_argument(
        "--features", help="features YAML (default: features/<name>.yaml beside the contract)"
    )
    p.add_argument("--url", help="source SQLAlchemy URL (default: the contract's source)")
    p.add_argument("--no-source", action="store_true", help="check the files only")
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("contract", help="check, diff or draft (init) contract files")
    p.add_argument("action", choices=["check", "diff", "init"])
    p.add_argument("files", nargs="*")
    p.add_argument("--url", help="init: SQLAlchemy URL of the source database")
    p.add_argument("--table", help="init: the entity table (the rows to predict on)")
    p.add_argument("--labels", help="init: the labels table (default: labels in --table)")
    p.add_argument("--target", help="init: the target column (default: a guess, for review)")
    p.add_argument("--name", help="init: dataset name (default: from the table)")
    p.add_argument("--out", help="init: file to write (default: <name>.yaml)")
    p.add_argument("--force", action="store_true", help="init: overwrite --out")
    p.set_defaults(fn=cmd_contract)

    args = parser.parse_args(argv)
    if args.command == "contract" and args.action == "diff" and len(args.files) != 2:
        parser.error("contract diff takes exactly two files: OLD NEW")
    if args.command == "contract" and args.action == "check" and not args.files:
        parser.error("contract check takes one or more files")
    if args.command == "contract" and args.action == "init":
        if args.files:
            parser.error("contract init takes no files: --url URL --table TABLE [--out FILE]")
        args.fn = cmd_contract_init
    if args.command not in ("demo", "run"):  # these two log to a file (see _view)
        configure_logging(None, verbose=True)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
