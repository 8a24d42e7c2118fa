"""Real fixtures shared by the test suite and the benchmarks: a trained, registered car-loan
champion, a seeded online store, a running ``bentoml serve`` process, and a deadline-bounded
:func:`wait_until` to wait for something to happen instead of sleeping. No mocks.

The package does not depend on pytest: nothing here imports it. Heavy imports (MLflow, CatBoost,
httpx, the protobuf stubs) happen inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from ml_assets import settings
from ml_assets.contracts import Contract, load_contracts
from ml_assets.features import compute_features, load_feature_spec
from ml_assets.features.spec import FeatureSpec, Source
from ml_assets.features.windows import aggregate_snapshot, entity_events, label_events

__all__ = [
    "AS_OF",
    "BENTOML",
    "CUTOFF",
    "DATASET",
    "Champion",
    "Cuttable",
    "MotoServer",
    "ServerProcess",
    "car_loan",
    "demo_tables",
    "entity_records",
    "feature_records",
    "feature_table",
    "features_of",
    "free_port",
    "production_profile",
    "proto_records",
    "seed_online_store",
    "serve_env",
    "server_home",
    "start_moto",
    "start_server",
    "train_champion",
    "wait_until",
]

T = TypeVar("T")

BENTOML = Path(sys.executable).parent / "bentoml"
DATASET = "car_loan"
# The online store is as of here; the served/scored rows are applications from here on.
AS_OF = dt.datetime(2019, 7, 1, tzinfo=dt.UTC)
# Training sets end here (a year of applications before it).
CUTOFF = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)


# --- waiting ---------------------------------------------------------------------------------


def wait_until(
    condition: Callable[[], T | bool | None],
    timeout: float,
    *,
    interval: float = 0.1,
    what: str | Callable[[], str] = "the condition",
) -> T:
    """Call ``condition`` until it returns something other than ``None`` or ``False``, and
    return that; at most ``timeout`` seconds.

    (Not "until truthy": a condition may return a data frame, which has no truth value.) An
    exception from ``condition`` propagates at once (a server that exited is not going to
    become ready). On timeout, raise :class:`TimeoutError` naming ``what`` (a string, or a
    callable giving one, e.g. the tail of a log).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {described}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- an object store, and a network between it and its clients that can be cut ----------------


class Cuttable:
    """A TCP forwarder from a loopback port to a service (``target``), that can be cut and
    restored: while cut, new connections are refused and the open ones are reset, as a network
    partition between the clients and the store would do, while the store itself keeps its
    contents (stopping moto's server would lose them). Point a client at :attr:`port`."""

    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        import threading

        self.target = target
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        """Accept and forward connections again (on the same port)."""
        import threading

        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            doomed, self._open = list(self._open), set()
        if listener is not None:
            listener.close()
        for sock in doomed:
            self._reset(sock)

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        """Close with RST, not FIN: the peer sees "connection reset", as on a lost route."""
        import struct

        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:  # cut while connecting: this pair must not outlive the cut
                live = self._listener is listener
                if live:
                    self._open.update((client, upstream))
            if not live:
                self._reset(client)
                self._reset(upstream)
                return
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with self._lock:
                    self._open.discard(sock)
                with contextlib.suppress(OSError):
                    sock.close()


@dataclass
class MotoServer:
    """moto's S3 server on a loopback port (the object store's stand-in, as in the production
    profile), with a bucket; :meth:`env` gives a client process the variables to reach it."""

    proc: subprocess.Popen
    port: int
    bucket: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """What botocore reads (credentials are moto's: anything goes)."""
        return {
            "AWS_ENDPOINT_URL_S3": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": "ml-assets-local",
            "AWS_SECRET_ACCESS_KEY": "ml-assets-local",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def path(self, prefix: str, endpoint: str | None = None) -> Any:
        """``s3://<bucket>/<prefix>`` as a UPath bound to this server (or ``endpoint``), so
        this process reads it whatever its own environment says."""
        from upath import UPath

        env = self.env(endpoint)
        return UPath(
            f"s3://{self.bucket}/{prefix}",
            endpoint_url=env["AWS_ENDPOINT_URL_S3"],
            key=env["AWS_ACCESS_KEY_ID"],
            secret=env["AWS_SECRET_ACCESS_KEY"],
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_moto(bucket: str, log_path: Path) -> MotoServer:
    """Start moto's S3 server on a free loopback port and create ``bucket``; stop it with
    :meth:`MotoServer.stop`."""
    import boto3

    from ml_assets.services import http_ok

    port = free_port()
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=settings.child_env(),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log_file.close()
    server = MotoServer(proc, port, bucket)
    try:
        wait_until(lambda: http_ok(server.endpoint), 60, what=f"moto's S3 server on {port}")
        env = server.env()
        boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL_S3"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        ).create_bucket(Bucket=bucket)
    except BaseException:
        server.stop()
        raise
    return server


PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
"""The local PostgreSQL server (trust auth) the production profile's tests and bench use."""


@dataclass
class ProductionProfile:
    """The production profile made private to one test or benchmark: its own PostgreSQL
    databases, bucket and loopback ports, so it can run beside anything else."""

    env: dict[str, str]
    databases: list[str]
    bucket: str

    def drop_databases(self) -> None:
        """Drop the profile's databases (after ``ml-assets services down``)."""
        import sqlalchemy as sa

        engine = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for db in self.databases:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        engine.dispose()


def production_profile(home: Path, suffix: str) -> ProductionProfile:
    """The environment of ``ML_ASSETS_PROFILE=production`` with everything it names private:
    databases ``mla_<suffix>_*`` on the local server, bucket ``mla-<suffix>`` on moto's S3
    server, free ports for MLflow, the Dagster webserver and S3; nothing of the caller's
    platform variables inherited."""
    dbs = {
        "DAGSTER_PG_URL": f"mla_{suffix}_dagster",
        "ML_ASSETS_MLFLOW_BACKEND_STORE": f"mla_{suffix}_mlflow",
        "ML_ASSETS_SOURCE_URL": f"mla_{suffix}_source",
        "ML_ASSETS_ONLINE_URL": f"mla_{suffix}_online",
    }
    bucket = f"mla-{suffix}"
    env = settings.child_env(drop_prefixes=("ML_ASSETS_", "MLFLOW_", "DAGSTER_", "AWS_"))
    env.update(
        {
            "ML_ASSETS_PROFILE": "production",
            "ML_ASSETS_HOME": str(home),
            **{k: f"{PG_SERVER}/{db}" for k, db in dbs.items()},
            "DAGSTER_PG_URL": (
                f"postgresql+psycopg2://postgres@127.0.0.1:5432/{dbs['DAGSTER_PG_URL']}"
            ),
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
            "ML_ASSETS_DAGSTER_URL": f"http://127.0.0.1:{free_port()}",
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}",
            "ML_ASSETS_CELERY_QUEUE": f"mla_{suffix}",
            "ML_ASSETS_LAKE": f"s3://{bucket}/lake",
            "ML_ASSETS_MLFLOW_ARTIFACTS": f"s3://{bucket}/mlflow",
            "ML_ASSETS_BENTO_STORE": f"s3://{bucket}/bentos",
            "ML_ASSETS_PREDICTION_LOG": f"s3://{bucket}/prediction_log",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return ProductionProfile(env=env, databases=list(dbs.values()), bucket=bucket)


# --- the car-loan demo data ------------------------------------------------------------------


@functools.cache
def car_loan() -> tuple[Contract, FeatureSpec]:
    """The bundled car-loan contract and its feature spec."""
    contract = load_contracts()[DATASET]
    return contract, load_feature_spec(contract)


@functools.cache
def demo_tables() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Typed entity and label rows of the car-loan demo (UTC times, as validated rows are)."""
    from ml_assets.ingest.demo import demo_frames

    contract, _ = car_loan()
    frames = demo_frames(contract)
    entity = frames["entity"].with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))
    labels = frames["labels"].with_columns(pl.col("observed_at").dt.replace_time_zone("UTC"))
    return entity, labels


def features_of(entity: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """Offline car-loan features of the applications in ``entity``, with ``entity`` and
    ``labels`` as the event history (what the feature table computes)."""
    _, spec = car_loan()
    events = {
        Source.ENTITY: entity_events(spec, entity),
        Source.LABELS: label_events(spec, labels, entity),
    }
    return compute_features(spec, entity, events)


@functools.cache
def feature_table() -> pl.DataFrame:
    """Offline features of every demo application (the feature table)."""
    return features_of(*demo_tables())


# --- a champion ------------------------------------------------------------------------------


@dataclass
class Champion:
    """A model trained on the demo data, registered in a temp MLflow, aliased champion."""

    tracking: Any  # ml_assets.registry.tracking.MlflowTracking
    version: str
    run_id: str
    model: Any  # a fitted CatBoost model
    problem: Any  # ml_assets.train.core.Problem
    holdout: pl.DataFrame  # feature rows the model never saw (from AS_OF on)


def train_champion(home: Path, iterations: int = 60) -> Champion:
    """Train for real (CatBoost) on a year before :data:`CUTOFF`, log the model with the
    tracking standard into an MLflow under ``home``, and promote it to champion."""
    from ml_assets.features import build_training_set
    from ml_assets.registry.tracking import MlflowTracking
    from ml_assets.train import core
    from ml_assets.train.config import TrainConfig

    contract, spec = car_loan()
    _, labels = demo_tables()
    feats = feature_table()
    ts = build_training_set(spec, feats, labels, CUTOFF, dt.timedelta(days=365))
    problem = core.Problem.from_frame(
        ts, contract.problem_type, contract.target, spec.names, spec.event_time
    )
    split = core.time_split(ts, spec.event_time)
    model = core.fit(split, problem, TrainConfig(iterations=iterations))
    tracking = MlflowTracking(
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_root=str(home / "mlartifacts")
    )
    tags = {
        "dagster.run_id": "test-run",
        "dagster.run_url": "http://127.0.0.1:3000/runs/test-run",
        "dagster.asset_key": f"{DATASET}/model",
        "training.window": f"{CUTOFF - dt.timedelta(days=365)} .. {CUTOFF}",
        "git.commit": "test",
        "contract.version": contract.version,
        "training_set.fingerprint": "test-fingerprint",
        "features": ",".join(problem.features),
        "problem": problem.to_json(),
    }
    logged = tracking.log_training(
        dataset=DATASET,
        tags=tags,
        params={"iterations": iterations},
        metrics={"rows": float(ts.height)},
        model=model,
        input_example=core.to_pool_frame(split.test.head(3), problem),
        training_set=ts,
        training_set_source="test",
        fingerprint="test-fingerprint",
        target=contract.target,
        plots={},
    )
    tracking.client().set_model_version_tag(DATASET, logged.version, "problem", tags["problem"])
    tracking.promote(DATASET, logged.version)
    holdout = feats.filter(pl.col(spec.event_time) >= AS_OF)
    return Champion(tracking, logged.version, logged.run_id, model, problem, holdout)


def seed_online_store(url: str) -> dt.datetime:
    """Write the aggregates as of :data:`AS_OF` into the online store at ``url``; return it."""
    import sqlalchemy as sa

    from ml_assets.features.online_store import write_snapshot

    _, spec = car_loan()
    entity, labels = demo_tables()
    ent = entity.filter(pl.col(spec.event_time) < AS_OF)
    lab = labels.filter(pl.col("observed_at") < AS_OF)
    events = {
        Source.ENTITY: entity_events(spec, ent),
        Source.LABELS: label_events(spec, lab, ent),
    }
    engine = sa.create_engine(url)
    try:
        write_snapshot(engine, spec, aggregate_snapshot(spec, events, AS_OF), AS_OF)
    finally:
        engine.dispose()
    return AS_OF


# --- request bodies --------------------------------------------------------------------------


def entity_records(n: int, *, with_time: bool = True) -> list[dict[str, Any]]:
    """Raw applications from :data:`AS_OF` on, as a client sends them (JSON types)."""
    entity, _ = demo_tables()
    rows = entity.filter(pl.col("timestamp") >= AS_OF).head(n)
    out = []
    for r in rows.to_dicts():
        when = r.pop("timestamp")
        if with_time:
            r["timestamp"] = when.isoformat()
        out.append(r)
    return out


def feature_records(frame: pl.DataFrame, features: list[str]) -> list[dict[str, Any]]:
    """Feature rows as a client sends them to /v1/predict."""
    return frame.select(features).to_dicts()


def proto_records(records: list[dict[str, Any]]) -> list[Any]:
    """Records as ``ml_assets.serving.v1.Record`` messages, encoded as the server encodes values
    (ints stay ints, floats doubles)."""
    from ml_assets.serve import predictor_pb2 as pb
    from ml_assets.serve.grpc_server import _set_value

    out = []
    for r in records:
        rec = pb.Record()
        for k, v in r.items():
            _set_value(rec.fields[k], v)
        out.append(rec)
    return out


# --- a server process ------------------------------------------------------------------------


@dataclass
class ServerProcess:
    """A ``bentoml serve`` subprocess and its ports."""

    proc: subprocess.Popen
    http_port: int
    grpc_port: int
    log_path: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def url(self) -> str:
        """Base URL of the HTTP server."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the gRPC server."""
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        """What the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200 now; raises :class:`RuntimeError` if the process
        has exited (it will not become ready)."""
        import httpx

        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.output()}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 90) -> None:
        """Poll the readiness endpoint until it answers 200 (at most ``timeout`` seconds)."""
        wait_until(
            self.ready,
            timeout,
            interval=0.25,
            what=lambda: f"{self.url}/readyz:\n{self.output()[-3000:]}",
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal the server (its whole process group on timeout) and wait for it to exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


def server_home(shared: Path, dest: Path) -> Path:
    """A BENTOML_HOME of its own for one server, seeing the shared model and Bento stores.

    ``bentoml serve`` wipes ``$BENTOML_HOME/prometheus_multiproc_dir`` when it starts, so two
    servers on one home clobber each other's metrics; each server gets its own home here.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for store in ("models", "bentos"):
        link = dest / store
        if not link.exists():
            (shared / store).mkdir(parents=True, exist_ok=True)
            link.symlink_to((shared / store).resolve(), target_is_directory=True)
    return dest


def serve_env(home: Path, bentoml_home: Path, **extra: str) -> dict[str, str]:
    """Environment of a server process: temp homes, telemetry off, no proxies for loopback."""
    env = settings.child_env(drop_prefixes=("ML_ASSETS_",))
    env.update(
        {
            "ML_ASSETS_HOME": str(home),
            "BENTOML_HOME": str(bentoml_home),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    env.update(extra)
    return env


def start_server(
    target: str,
    env: Mapping[str, str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    http_port: int | None = None,
    grpc_port: int | None = None,
    workers: int = 1,
    loopback: bool = True,
    wrapper: Sequence[str] = (),
) -> ServerProcess:
    """Start ``bentoml serve <target>`` (a Bento tag, or ``service:PredictionService`` in
    ``cwd``) in a session of its own, output to ``log_path``; it is not yet ready.

    ``loopback``: pin both protocols to 127.0.0.1; False gives no bind address at all
    (neither ``--host`` nor ``ML_ASSETS_GRPC_HOST``), so the Bento's own defaults decide.
    ``wrapper``: a command the server runs under (e.g. ``strace -f ...``)."""
    http_port = http_port or free_port()
    grpc_port = grpc_port or free_port()
    unset = () if loopback else ("ML_ASSETS_GRPC_HOST", "BENTOML_HOST")
    full_env = {
        **{k: v for k, v in env.items() if k not in unset},
        "ML_ASSETS_GRPC_PORT": str(grpc_port),
        **({"ML_ASSETS_GRPC_HOST": "127.0.0.1"} if loopback else {}),
        "ML_ASSETS_SERVE_WORKERS": str(workers),
    }
    host = ["--host", "127.0.0.1"] if loopback else []
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        [*wrapper, str(BENTOML), "serve", target, *host, "--port", str(http_port)],
        env=full_env,
        cwd=str(cwd) if cwd else None,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log_file.close()
    return ServerProcess(proc, http_port, grpc_port, log_path, full_env)


# --- monitoring: a champion of the demo data, its reference and what it monitors --------------


@dataclass(frozen=True)
class Scored:
    """A champion and its scored frames (features, event time, predictions, label)."""

    model: Any  # ml_assets.monitor.suite.MonitoredModel
    reference: pl.DataFrame
    analysis: pl.DataFrame
    test_metrics: dict[str, float]
    estimator: Any
    problem: Any  # ml_assets.train.core.Problem

    def score(self, rows: pl.DataFrame) -> pl.DataFrame:
        """``rows`` with the champion's prediction columns added."""
        from ml_assets.train import core

        kind, classes = self.problem.kind, self.problem.classes
        scores = core.predict(self.estimator, rows, self.problem)
        outputs = kind.output_columns(scores, kind.labels(scores, classes), classes)
        return pl.concat([rows, pl.DataFrame(outputs)], how="horizontal")


def demo_rows(dataset: str) -> tuple[pl.DataFrame, Any]:
    """The contract's entity rows joined with their labels (UTC event times), and the contract."""
    from ml_assets.contracts import load_contracts
    from ml_assets.ingest.demo import demo_frames

    contract = load_contracts()[dataset]
    frames = demo_frames(contract)
    key = contract.entity.primary_key
    labels = frames["labels"].select(*contract.labels.key_columns, contract.target)
    labels = labels.rename(dict(zip(contract.labels.key_columns, key, strict=True)))
    frame = frames["entity"].join(labels, on=key, how="left")
    event_time = contract.entity.event_time
    return frame.with_columns(pl.col(event_time).dt.replace_time_zone("UTC")), contract


@functools.cache
def champion(dataset: str, iterations: int = 150, test_share: float = 0.15) -> Scored:
    """Train on the first half of the demo's time range; the test window is the reference; the
    second half, scored by the model, is what gets monitored."""
    from ml_assets.train import core
    from ml_assets.train.config import TrainConfig

    frame, contract = demo_rows(dataset)
    event_time = contract.entity.event_time
    features = [
        c for c in contract.entity.columns if c not in (*contract.entity.primary_key, event_time)
    ]
    times = frame.get_column(event_time)
    middle = times.min() + (times.max() - times.min()) / 2
    first = frame.filter(pl.col(event_time) < middle)
    second = frame.filter(pl.col(event_time) >= middle)
    problem = core.Problem.from_frame(
        first, contract.problem_type, contract.target, features, event_time
    )
    split = core.time_split(first, event_time, test_share=test_share)
    model = core.fit(split, problem, TrainConfig(iterations=iterations))
    evaluation = core.evaluate(model, split, problem)
    from ml_assets.monitor.suite import MonitoredModel

    unscored = Scored(
        MonitoredModel.from_problem(problem), split.test, second, evaluation.metrics, model, problem
    )
    return Scored(
        unscored.model,
        unscored.score(split.test),
        unscored.score(second),
        evaluation.metrics,
        model,
        problem,
    )


def month_bounds(month: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    nxt = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return month, nxt
