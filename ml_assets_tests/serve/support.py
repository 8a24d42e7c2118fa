"""Real fixtures for the serving tests and the serving bench: a trained, registered champion, a
seeded online store, a built Bento, a running ``bentoml serve`` process. No mocks.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ml_assets import settings
from ml_assets.contracts import Contract, load_contracts
from ml_assets.features import compute_features, load_feature_spec
from ml_assets.features.compute import aggregate_snapshot, entity_events, label_events
from ml_assets.features.spec import FeatureSpec, Source

REPO = Path(__file__).resolve().parents[2]
BENTOS = REPO / "bentos"
BENTOML = Path(sys.executable).parent / "bentoml"
DATASET = "car_loan"
# The online store is as of here; the served/scored rows are applications from here on.
AS_OF = dt.datetime(2019, 7, 1, tzinfo=dt.UTC)
CUTOFF = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@functools.cache
def car_loan() -> tuple[Contract, FeatureSpec]:
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


@functools.cache
def feature_table() -> pl.DataFrame:
    """Offline features of every demo application (the feature table)."""
    _, spec = car_loan()
    entity, labels = demo_tables()
    events = {
        Source.ENTITY: entity_events(spec, entity),
        Source.LABELS: label_events(spec, labels, entity),
    }
    return compute_features(spec, entity, events)


@dataclass
class Champion:
    """A model trained on the demo data, registered in a temp MLflow, aliased champion."""

    tracking: Any  # MlflowTracking
    version: str
    run_id: str
    model: Any
    problem: Any
    holdout: pl.DataFrame  # feature rows the model never saw


def train_champion(home: Path, iterations: int = 60) -> Champion:
    """Train for real (CatBoost), log it with the tracking standard, promote it."""
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
    """Write the aggregates as of :data:`AS_OF` into the online store at ``url``."""
    import sqlalchemy as sa

    from ml_assets.features.online import write_snapshot

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
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 90) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.output()[-3000:]}")

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
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_ASSETS_")}
    env.update(settings.TELEMETRY_OFF)
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
) -> ServerProcess:
    """``bentoml serve <target>`` (a Bento tag or ``service:PredictionService`` in ``cwd``)."""
    http_port = http_port or free_port()
    grpc_port = grpc_port or free_port()
    full_env = {
        **env,
        "ML_ASSETS_GRPC_PORT": str(grpc_port),
        "ML_ASSETS_GRPC_HOST": "127.0.0.1",
        "ML_ASSETS_SERVE_WORKERS": str(workers),
    }
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        [str(BENTOML), "serve", target, "--host", "127.0.0.1", "--port", str(http_port)],
        env=full_env,
        cwd=str(cwd) if cwd else None,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log_file.close()
    return ServerProcess(proc, http_port, grpc_port, log_path, full_env)


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def proto_records(records: list[dict[str, Any]]) -> list[Any]:
    """Records as ``ml_assets.serving.v1.Record`` messages (ints stay ints, floats doubles)."""
    from ml_assets.serve import predictor_pb2 as pb

    out = []
    for r in records:
        rec = pb.Record()
        for k, v in r.items():
            val = rec.fields[k]
            if v is None:
                val.null_value = pb.NULL_VALUE
            elif isinstance(v, bool):
                val.bool_value = v
            elif isinstance(v, int):
                val.int_value = v
            elif isinstance(v, float):
                val.number_value = v
            else:
                val.string_value = str(v)
        out.append(rec)
    return out


def proto_label(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    return None if kind in (None, "null_value") else getattr(value, kind)
