"""The production profile's services on one machine: ``ml-assets services up | down | status``.

What the profile names (``deploy/production/profile.yaml``) is started here, each as its own
process group with its log and pid file under ``$ML_ASSETS_HOME/services/``, in dependency
order, and each waited for until it answers:

1. PostgreSQL must be reachable (it is a system service); the databases the profile's URLs name
   are created if missing (Dagster instance, MLflow backend store, source, online store).
2. The object store: with ``ML_ASSETS_S3_STANDIN=moto``, moto's S3 server on the loopback
   endpoint ``AWS_ENDPOINT_URL_S3`` (a stand-in: no real object store runs on this machine);
   the buckets of the lake, MLflow's artifacts, the Bento store and the prediction log are
   created if missing.
3. The Celery broker must be reachable (RabbitMQ is a system service).
4. The MLflow tracking server, its backend store on PostgreSQL and artifacts proxied to S3.
5. The Dagster webserver (UI and the GraphQL the CLI submits runs through), ``dagster-daemon``
   (queued runs, sensors, run monitoring) and ``ML_ASSETS_CELERY_WORKERS`` Celery workers.

A piece that does not come up stops the start with a :class:`ServiceError` naming the piece,
the setting it was started from and the end of its log. Nothing here is needed by the embedded
default.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ml_assets import settings

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"


class ServiceError(RuntimeError):
    """A service that could not be started or reached; the message names it and its setting."""


@dataclass
class Service:
    """One process to start: what it is, the setting it comes from, how to tell it is up."""

    name: str
    what: str
    setting: str
    argv: list[str]
    ready: Callable[[], bool]
    timeout_seconds: float = 120.0


def _bin(name: str) -> str:
    """An executable of this environment (the venv's ``bin/``)."""
    return str(Path(sys.executable).parent / name)


def state_dir(s: settings.Settings | None = None) -> Path:
    """Where the services' pid files and logs are."""
    return (s or settings.current()).root / "services"


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether ``url`` answers HTTP at all (any status: the server is up)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def _loopback(url: str, setting: str) -> tuple[str, int]:
    host, port = _host_port(url, 80)
    if host not in LOOPBACK:
        raise ServiceError(
            f"{setting}={url}: not a loopback address; `ml-assets services up` starts services "
            "on this machine only (a remote service is started where it runs)"
        )
    return host, port


# --- PostgreSQL and the object store: created, not started ----------------------------------


def postgres_urls(s: settings.Settings) -> dict[str, str]:
    """The profile's PostgreSQL URLs, by the setting that names each."""
    urls = {
        "DAGSTER_PG_URL": s.dagster_pg_url,
        "ML_ASSETS_MLFLOW_BACKEND_STORE": s.mlflow_backend_store,
        "ML_ASSETS_SOURCE_URL": s.source_url,
        "ML_ASSETS_ONLINE_URL": s.online_url,
    }
    return {k: v for k, v in urls.items() if v and v.startswith("postgresql")}


def ensure_databases(s: settings.Settings) -> list[str]:
    """Create each database a PostgreSQL URL of the profile names, if missing; the created."""
    import sqlalchemy as sa

    created = []
    for setting, url in postgres_urls(s).items():
        target = sa.make_url(url)
        admin = target.set(drivername="postgresql+psycopg", database="postgres")
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                exists = conn.execute(
                    sa.text("select 1 from pg_database where datname = :d"),
                    {"d": target.database},
                ).scalar()
                if not exists:
                    conn.execute(sa.text(f'create database "{target.database}"'))
                    created.append(target.database or "")
        except sa.exc.OperationalError as exc:
            raise ServiceError(
                f"PostgreSQL at {target.host}:{target.port or 5432} ({setting}): cannot connect "
                f"({str(exc.orig).strip().splitlines()[0]})"
            ) from None
        finally:
            engine.dispose()
    return created


def bucket_urls(s: settings.Settings) -> dict[str, str]:
    """The profile's ``s3://`` locations, by setting."""
    urls = {
        "ML_ASSETS_LAKE": s.lake,
        "ML_ASSETS_MLFLOW_ARTIFACTS": s.mlflow_artifacts_destination,
        "ML_ASSETS_BENTO_STORE": s.bento_store,
        "ML_ASSETS_PREDICTION_LOG": s.prediction_log,
    }
    return {k: v for k, v in urls.items() if v and v.startswith("s3://")}


def ensure_buckets(s: settings.Settings) -> list[str]:
    """Create the buckets of the profile's ``s3://`` locations, if missing; the created."""
    import boto3

    client = boto3.client("s3")
    have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    created = []
    for url in bucket_urls(s).values():
        bucket = urlparse(url).netloc
        if bucket not in have:
            client.create_bucket(Bucket=bucket)
            have.add(bucket)
            created.append(bucket)
    return created


# --- the processes -----------------------------------------------------------------------------


def _daemon_heartbeat(since: float) -> Callable[[], bool]:
    def ready() -> bool:
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            beats = instance.get_daemon_heartbeats()
        return any(b.timestamp >= since for b in beats.values())

    return ready


def _worker_answers(name: str) -> Callable[[], bool]:
    def ready() -> bool:
        from ml_assets.celery_worker import app

        return bool(app.control.ping(destination=[name], timeout=1.0))

    return ready


def _node(s: settings.Settings, i: int) -> str:
    """A worker's node name before ``@host``: unique per queue, since Celery's control channel
    (ping, shutdown) addresses workers by node name across the whole broker."""
    return f"worker{i}" if s.celery_queue == "dagster" else f"worker{i}-{s.celery_queue}"


def worker_names(s: settings.Settings) -> list[str]:
    """The Celery workers' node names (``worker<i>[-<queue>]@<host>``), as the event log
    records them."""
    host = socket.gethostname()
    return [f"{_node(s, i)}@{host}" for i in range(1, s.celery_workers + 1)]


def plan(s: settings.Settings, started_at: float | None = None) -> list[list[Service]]:
    """The processes of the profile, in waves: each wave is started together and waited for
    before the next one."""
    since = time.time() if started_at is None else started_at
    waves: list[list[Service]] = []
    if s.s3_standin == "moto":
        if not s.s3_endpoint:
            raise ServiceError("ML_ASSETS_S3_STANDIN=moto needs AWS_ENDPOINT_URL_S3 (loopback)")
        host, port = _loopback(s.s3_endpoint, "AWS_ENDPOINT_URL_S3")
        waves.append(
            [
                Service(
                    "s3",
                    "moto's S3 server (the object store's stand-in)",
                    "AWS_ENDPOINT_URL_S3",
                    [_bin("moto_server"), "-H", host, "-p", str(port)],
                    lambda: http_ok(s.s3_endpoint or ""),
                )
            ]
        )
    second: list[Service] = []
    if s.tracking_uri.startswith("http"):
        host, port = _loopback(s.tracking_uri, "MLFLOW_TRACKING_URI")
        artifacts = s.mlflow_artifacts_destination or str(s.mlflow_artifacts)
        second.append(
            Service(
                "mlflow",
                "the MLflow tracking server",
                "MLFLOW_TRACKING_URI",
                [
                    _bin("mlflow"),
                    "server",
                    "--backend-store-uri",
                    s.mlflow_backend_store or f"sqlite:///{s.root / 'mlflow.db'}",
                    "--artifacts-destination",
                    artifacts,
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                ],
                lambda: http_ok(s.tracking_uri.rstrip("/") + "/health"),
            )
        )
    if s.executor == "celery":
        host, port = _loopback(s.dagster_url, "ML_ASSETS_DAGSTER_URL")
        second.append(
            Service(
                "dagster-webserver",
                "the Dagster webserver",
                "ML_ASSETS_DAGSTER_URL",
                [_bin("dagster-webserver"), "-w", str(WORKSPACE), "-h", host, "-p", str(port)],
                lambda: http_ok(s.dagster_url.rstrip("/") + "/server_info"),
            )
        )
        second.append(
            Service(
                "dagster-daemon",
                "the Dagster daemon",
                "DAGSTER_HOME",
                [_bin("dagster-daemon"), "run", "-w", str(WORKSPACE)],
                _daemon_heartbeat(since),
            )
        )
        for i, node in enumerate(worker_names(s), start=1):
            second.append(
                Service(
                    f"celery-worker{i}",
                    f"Celery worker {node}",
                    "ML_ASSETS_CELERY_BROKER",
                    [
                        _bin("celery"),
                        "-A",
                        "ml_assets.celery_worker",
                        "worker",
                        "--pool=solo",
                        "-n",
                        f"{_node(s, i)}@%h",
                        "-Q",
                        s.celery_queue,
                        "-l",
                        "INFO",
                    ],
                    _worker_answers(node),
                )
            )
    if second:
        waves.append(second)
    return waves


def _pid_file(s: settings.Settings, name: str) -> Path:
    return state_dir(s) / f"{name}.pid"


def log_file(s: settings.Settings, name: str) -> Path:
    """A service's log (stdout and stderr)."""
    return state_dir(s) / f"{name}.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def running(s: settings.Settings | None = None) -> dict[str, int]:
    """Services started here and still alive: name -> pid."""
    s = s or settings.current()
    out = {}
    for path in sorted(state_dir(s).glob("*.pid")):
        pid = int(path.read_text().split()[0])
        if _alive(pid):
            out[path.stem] = pid
    return out


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start(s: settings.Settings, service: Service) -> subprocess.Popen:
    from ml_assets.execution import prepare_dagster_home

    state_dir(s).mkdir(parents=True, exist_ok=True)
    env = settings.child_env()
    env["DAGSTER_HOME"] = str(prepare_dagster_home())
    log = log_file(s, service.name).open("ab")
    proc = subprocess.Popen(
        service.argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=str(WORKSPACE.parent),
        start_new_session=True,
    )
    log.close()
    _pid_file(s, service.name).write_text(f"{proc.pid}\n")
    return proc


def _setting_value(s: settings.Settings, setting: str) -> str:
    """The value in effect of the setting a service is started from (for messages)."""
    name = settings.variables().get(setting)
    if name is not None:
        return str(getattr(s, name))
    return str(s.dagster_home_path) if setting == "DAGSTER_HOME" else ""


def up(s: settings.Settings | None = None, say: Callable[[str], None] | None = None) -> list[str]:
    """Start every service of the profile not already running; the names started."""
    s = s or settings.current()
    say = say or (lambda _text: None)
    created = ensure_databases(s)
    if created:
        say(f"PostgreSQL: created {', '.join(created)}")
    if s.executor == "celery":
        host, port = _host_port(s.celery_broker, 5672)
        if not tcp_open(host, port):
            raise ServiceError(
                f"the Celery broker at {host}:{port} (ML_ASSETS_CELERY_BROKER) does not answer: "
                "start RabbitMQ (`rabbitmq-server -detached`) or point the setting elsewhere"
            )
    alive = running(s)
    started: list[str] = []
    for wave in plan(s):
        procs = {svc.name: _start(s, svc) for svc in wave if svc.name not in alive}
        for svc in wave:
            if svc.name not in procs:
                continue
            _wait_ready(s, svc, procs[svc.name])
            started.append(svc.name)
            say(f"{svc.what}: up ({svc.setting}={_setting_value(s, svc.setting)})")
    made = ensure_buckets(s) if bucket_urls(s) else []
    if made:
        say(f"object store: created bucket {', '.join(made)}")
    if s.executor == "celery" and s.pool_limits:
        from ml_assets.execution import apply_pool_limits

        limits = apply_pool_limits(s)
        say("Dagster pools: " + ", ".join(f"{k} {v} at a time" for k, v in limits.items()))
    return started


def _wait_ready(s: settings.Settings, svc: Service, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + svc.timeout_seconds
    while True:
        code = proc.poll()
        if code is not None:
            raise ServiceError(
                f"{svc.what} ({svc.setting}={_setting_value(s, svc.setting)}) exited with code "
                f"{code} while starting; the end of {log_file(s, svc.name)}:\n"
                + _tail(log_file(s, svc.name))
            )
        try:
            if svc.ready():
                return
        except Exception:  # not up yet: the probe's client cannot connect
            pass
        if time.monotonic() > deadline:
            raise ServiceError(
                f"{svc.what} ({svc.setting}={_setting_value(s, svc.setting)}) did not answer in "
                f"{svc.timeout_seconds:.0f} s; the end of {log_file(s, svc.name)}:\n"
                + _tail(log_file(s, svc.name))
            )
        time.sleep(0.5)


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is left in process group ``pgid``: a service's
    children outlive it otherwise (the Dagster daemon's code server, whose own children kept
    evaluating sensors after the daemon had stopped)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) == pgid and _alive(int(entry)):
                return True
        except (ProcessLookupError, PermissionError):
            continue
    return False


def down(s: settings.Settings | None = None, timeout_seconds: float = 20.0) -> list[str]:
    """Stop every service started here (SIGTERM to its process group, SIGKILL to what is
    left of the group after the timeout), the last started first; the names stopped."""
    s = s or settings.current()
    stopped = []
    pids = running(s)
    for name in sorted(pids, key=lambda n: (n == "s3", n == "mlflow", n)):
        pid = pids[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        stopped.append(name)
    deadline = time.monotonic() + timeout_seconds
    for name in stopped:
        pid = pids[name]
        while group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    for path in state_dir(s).glob("*.pid"):
        path.unlink(missing_ok=True)
    return stopped
