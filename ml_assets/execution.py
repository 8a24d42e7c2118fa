"""Where a run's steps execute: in the CLI's own process, or on Celery workers.

The embedded default runs a job in the CLI's process (``execute_in_process``). With
``ML_ASSETS_EXECUTOR=celery`` (the production profile) the code location's jobs use
dagster-celery's executor, and the CLI does what the Dagster UI does: it submits the run to the
webserver (GraphQL), the queued run coordinator holds it until the instance's limits allow it
(``deploy/production/dagster.yaml``: one training at a time, two runs per dataset), the daemon
launches its run worker, and every step is a Celery task run by whichever worker takes it.
:class:`SubmittedRun` reads the finished run back from the instance with the same methods as
Dagster's in-process result, so the CLI reports either the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dagster as dg

from ml_assets import settings

LOCATION = "ml_assets"
"""The code location's name (``workspace.yaml``, ``[tool.dagster]``)."""
SUBMISSION_TAG = "ml_assets/submission"


def executor(s: settings.Settings | None = None) -> dg.ExecutorDefinition | None:
    """The executor the settings name: None (Dagster's default) or the Celery executor on the
    configured broker (steps become tasks on the workers ``ml-assets services up`` starts)."""
    s = s or settings.current()
    if s.executor != "celery":
        return None
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {
            "broker": s.celery_broker,
            "backend": s.celery_backend,
            "config_source": {"task_default_queue": s.celery_queue},
        },
        name="celery",
    )


def submits_runs(s: settings.Settings | None = None) -> bool:
    """Whether the CLI submits runs to the webserver instead of running them itself."""
    return (s or settings.current()).executor == "celery"


@dataclass
class SubmittedRun:
    """A finished run read back from the instance: the parts of Dagster's
    ``ExecuteInProcessResult`` the CLI and the demo use."""

    run_id: str
    dagster_run: Any
    all_events: Sequence[Any]

    @property
    def success(self) -> bool:
        return self.dagster_run.is_success

    def get_asset_materialization_events(self) -> list[Any]:
        return [e for e in self.all_events if e.is_step_materialization]

    def get_asset_check_evaluations(self) -> list[Any]:
        return [
            e.event_specific_data
            for e in self.all_events
            if e.event_type_value == dg.DagsterEventType.ASSET_CHECK_EVALUATION.value
        ]

    def workers(self) -> dict[str, str]:
        """Step key -> the Celery worker that executed it (from the executor's engine events)."""
        out = {}
        for e in self.all_events:
            meta = getattr(e.event_specific_data, "metadata", None) or {}
            worker = meta.get("Celery worker")
            if e.step_key and worker is not None:
                out[e.step_key] = str(getattr(worker, "value", worker))
        return out

    @classmethod
    def read(cls, instance: dg.DagsterInstance, run_id: str) -> SubmittedRun:
        run = instance.get_run_by_id(run_id)
        if run is None:
            raise LookupError(f"no run {run_id} in the instance")
        events = [r.dagster_event for r in instance.all_logs(run_id) if r.dagster_event]
        return cls(run_id=run_id, dagster_run=run, all_events=events)


class SubmissionError(RuntimeError):
    """The webserver could not be reached or refused the run; the message names the setting."""


def graphql_client(s: settings.Settings | None = None):
    """A Dagster GraphQL client for ``ML_ASSETS_DAGSTER_URL``."""
    from dagster_graphql import DagsterGraphQLClient

    s = s or settings.current()
    url = urlparse(s.dagster_url)
    return DagsterGraphQLClient(
        url.hostname or "127.0.0.1",
        port_number=url.port,
        use_https=url.scheme == "https",
        path_prefix=url.path.rstrip("/"),
        timeout=60,
    )


def submit(
    job_name: str,
    *,
    tags: dict[str, str] | None = None,
    run_config: dict | None = None,
    asset_selection: list[list[str]] | None = None,
    s: settings.Settings | None = None,
) -> str:
    """Submit a run of ``job_name`` (or of the assets of it in ``asset_selection``, each an
    asset key's path) to the webserver; its id. The queued run coordinator decides when it
    starts."""
    s = s or settings.current()
    try:
        return graphql_client(s).submit_job_execution(
            job_name,
            repository_location_name=LOCATION,
            run_config=run_config or {},
            tags=tags or {},
            asset_selection=asset_selection,
        )
    except Exception as exc:  # the client raises its own and requests' errors
        raise SubmissionError(
            f"could not submit {job_name} to the Dagster webserver at {s.dagster_url} "
            f"(ML_ASSETS_DAGSTER_URL; is `ml-assets services up` running?): {exc}"
        ) from exc


def wait(
    instance: dg.DagsterInstance,
    run_id: str,
    *,
    timeout_seconds: float = 6 * 3600,
    poll_seconds: float = 0.5,
) -> SubmittedRun:
    """Wait until the run has finished (succeeded, failed or canceled), then read it."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return SubmittedRun.read(instance, run_id)
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} not finished after {timeout_seconds:.0f} s")
        time.sleep(poll_seconds)


def prepare_dagster_home() -> Path:
    """``DAGSTER_HOME`` (by default under ``ML_ASSETS_HOME``, one per profile), its
    ``dagster.yaml`` the profile's instance (telemetry off; production: PostgreSQL storage and
    the queued run coordinator), rewritten when the profile's file changed."""
    s = settings.current()
    dagster_home = s.dagster_home_path
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance = dagster_home / "dagster.yaml"
    # An installed package has no checkout dagster.yaml: the minimal telemetry-off instance.
    wanted = (
        s.instance_yaml.read_text()
        if s.instance_yaml.exists()
        else "telemetry:\n  enabled: false\n"
    )
    if not instance.exists() or (s.profile != "embedded" and instance.read_text() != wanted):
        instance.write_text(wanted)
    return dagster_home


def apply_pool_limits(s: settings.Settings | None = None) -> dict[str, int]:
    """Set ``ML_ASSETS_POOL_LIMITS`` in the Dagster instance (its concurrency pools' slots);
    what was set. A step of an asset in a pool waits, in any run, until a slot is free; a pool
    not named keeps the instance's ``default_limit``. With the production profile's two
    workers, ``ml_assets/ingest=1`` leaves one worker to training, scoring and monitoring
    steps while an ingestion backfill runs, and ``ml_assets/train=1`` keeps two trainings
    from sharing the cores."""
    s = s or settings.current()
    if not s.pool_limits:
        return {}
    prepare_dagster_home()
    with dg.DagsterInstance.get() as instance:
        for pool, limit in s.pool_limits.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)
        return {
            pool: instance.event_log_storage.get_concurrency_info(pool).slot_count
            for pool in s.pool_limits
        }
