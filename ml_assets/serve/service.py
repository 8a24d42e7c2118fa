"""What one worker of the BentoML service runs, as plain objects ``bentos/service.py`` wires up.

:class:`Serving` takes the dataset's feature spec (with its contract: what the Bento carries, see
:func:`ml_assets.serve.carried.served_spec`), loads the model (from the BentoML model
directory), builds the :class:`ServingRuntime`, starts the prediction
log writer and the gRPC server, and closes them in order on shutdown: gRPC first (finishing the
calls in flight), then the log (writing everything queued). :func:`service_config` is the
BentoML service configuration that keeps BentoML's per-request work off the hot paths.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_assets.serve.config import ServeConfig
from ml_assets.serve.http_app import HttpApp
from ml_assets.serve.runtime import ServingRuntime, load_bundle

if TYPE_CHECKING:
    from ml_assets.features import FeatureSpec

log = logging.getLogger(__name__)

MOUNT = "/v1"
HOT_PATHS = [f"{MOUNT}/predict", f"{MOUNT}/predict_by_keys"]
SWITCH_INTERVAL = 0.001


class ServiceStartError(RuntimeError):
    """The service cannot start: bad serving settings or carried files; the message says why.

    A RuntimeError on purpose: BentoML's loader takes a ValueError raised while it loads a Bento
    by tag to mean "not a tag" and reports a meaningless import error instead of it.
    """


def load_service(directory: Path) -> tuple[ServeConfig, FeatureSpec]:
    """The config and feature spec of the service in ``directory`` (a built Bento's ``src/``
    or ``bentos/``), or :class:`ServiceStartError` with the reason (also logged)."""
    from ml_assets.serve.carried import served_spec

    try:
        config = ServeConfig.load(directory)
        return config, served_spec(directory, config)
    except Exception as exc:
        message = f"cannot start the prediction service in {directory}: {exc}"
        log.error("%s", message)
        raise ServiceStartError(message) from exc


def verify_model(config: ServeConfig, model_dir: str | Path, labels: dict[str, Any]) -> str:
    """Check the model file in ``model_dir`` against the sha256 recorded with the registered
    version (the Bento's config, else the BentoML model's label); :class:`ServiceStartError`
    when it differs. Returns the file's sha256."""
    import hashlib

    from ml_assets.serve.runtime import MODEL_FILE

    expected = config.model_sha256 or str(labels.get("model_sha256") or "")
    path = Path(model_dir) / MODEL_FILE
    with path.open("rb") as f:  # not ml_assets.registry: a worker imports no MLflow/Dagster
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if expected and actual != expected:
        message = (
            f"cannot start the prediction service: the model file {path} has sha256 {actual}, "
            f"not the {expected} recorded with {config.dataset} model version "
            f"{labels.get('model_version', '?')}: it was changed or corrupted after the build; "
            "rebuild the Bento from the registry"
        )
        log.error("%s", message)
        raise ServiceStartError(message)
    if not expected:
        log.warning("%s: no sha256 recorded for the model file: not verified", config.dataset)
    return actual


def verify_stored_model(config: ServeConfig) -> str | None:
    """:func:`verify_model` on the served model in BentoML's model store; None when the store
    does not have it (BentoML's own loading then fails, naming the tag)."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        stored = bentoml.models.get(config.resolved_model_tag)
    except NotFound:
        return None
    return verify_model(config, stored.path, dict(stored.info.labels))


def service_config(config: ServeConfig) -> dict[str, Any]:
    """``@bentoml.service`` settings: workers, and no access log or tracing span on the
    prediction routes (they keep their own metrics and log). No ``max_concurrency`` here: the
    limit is the mounted app's own (:attr:`ServeConfig.max_concurrency`), which sheds with the
    API's 503 error instead of BentoML's 429."""
    return {
        "workers": config.workers,
        # loopback unless exposed on purpose (ML_ASSETS_SERVE_HOST; BentoML's own default is
        # 0.0.0.0); `bentoml serve --host` still overrides it
        "http": {"host": config.http_host},
        "traffic": {"timeout": 60},
        "logging": {"access": {"enabled": True, "skip_paths": HOT_PATHS}},
        "tracing": {"sample_rate": 0.0, "excluded_urls": HOT_PATHS},
        "metrics": {"enabled": True},
    }


class Serving:
    """The runtime, prediction log, metrics and gRPC server of one worker process."""

    def __init__(
        self,
        config: ServeConfig,
        runtime: ServingRuntime,
        prediction_log: Any,
        grpc_server: Any | None,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.prediction_log = prediction_log
        self.grpc_server = grpc_server
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def start(
        cls,
        config: ServeConfig,
        spec: FeatureSpec,
        model_path: str | Path,
        *,
        model_tag: str = "",
        labels: dict[str, str] | None = None,
        metrics: bool = True,
        freeze_gc: bool = True,
    ) -> Serving:
        """Load the model and start the background parts (log writer, gRPC server)."""
        import ml_assets
        from ml_assets.features import OnlineClient
        from ml_assets.serve.metrics import ServingMetrics
        from ml_assets.serve.prediction_log import PredictionLog, layout_for

        contract = spec.contract
        bundle = load_bundle(model_path, tag=model_tag, labels=labels)
        wanted = (labels or {}).get("contract_version")
        if wanted and wanted != contract.version:
            log.warning(
                "%s: model trained under contract %s, serving with contract %s",
                contract.name,
                wanted,
                contract.version,
            )
        url = config.resolved_online_url()
        prediction_log = PredictionLog(
            layout_for(spec, bundle),
            config.resolved_log_dir(),
            flush_seconds=config.log_flush_seconds,
            max_pending_rows=config.log_max_queued_rows,
        )
        runtime = ServingRuntime(
            spec,
            bundle,
            prediction_log=prediction_log,
            metrics=ServingMetrics(spec.dataset, bundle.problem_type) if metrics else None,
            store_factory=(lambda: OnlineClient(url)) if url else None,
            max_records=config.max_records,
        )
        grpc_server = None
        if config.grpc_port > 0:
            from ml_assets.serve.grpc_server import GrpcServer

            grpc_server = GrpcServer(
                lambda: runtime,
                host=config.grpc_host,
                port=config.grpc_port,
                threads=config.grpc_threads,
                max_message_bytes=config.max_body_bytes,
                token=config.token,
            )
        log.info(
            "serving %s model v%s (%s) pid %d: HTTP %s, gRPC %s, prediction log %s, online "
            "store %s, contract %s (%s), features %s; code %s; authentication %s",
            spec.dataset,
            bundle.version,
            model_tag,
            os.getpid(),
            MOUNT,
            f"{config.grpc_host}:{config.grpc_port}" if grpc_server else "off",
            prediction_log.directory,
            _safe_url(url) if url else "none (set ML_ASSETS_ONLINE_URL)",
            contract.version,
            spec.contract.fingerprint(),
            spec.origin,
            Path(ml_assets.__file__).parent,
            "bearer token" if config.token else "off",
        )
        # Background threads (log writer, gRPC) hand the GIL back to the event loop within
        # 1 ms instead of the default 5 ms: shorter stalls of the requests waiting for it.
        sys.setswitchinterval(SWITCH_INTERVAL)
        if freeze_gc:
            # Everything loaded so far lives as long as the process: keep it out of the
            # collector's full passes, which otherwise walk it every few seconds under load.
            gc.collect()
            gc.freeze()
        return cls(config, runtime, prediction_log, grpc_server)

    def ready(self) -> bool:
        """Model loaded, log writer alive and keeping up (queue under its bound, last write
        succeeded), gRPC up (when configured), not shutting down."""
        grpc_ok = self.grpc_server is None or not self.grpc_server.stopped
        log_ok = self.prediction_log.alive and self.prediction_log.refusal() is None
        return not self._closed and log_ok and grpc_ok

    def close(self, supervisor: int | None = None) -> int:
        """Graceful stop: finish gRPC calls in flight, then write every queued prediction;
        return how many answered rows could not be written (reported to ``supervisor``, the
        ``bentoml serve`` pid, which then exits with an error: see
        :mod:`ml_assets.serve.supervision`)."""
        from ml_assets.serve import supervision

        with self._lock:
            if self._closed:
                return 0
            self._closed = True
        if self.grpc_server is not None:
            self.grpc_server.stop()
        unwritten = self.prediction_log.close()
        if unwritten and supervisor is not None:
            supervision.report_unwritten(
                supervisor, self.runtime.dataset, unwritten, self.prediction_log.failing
            )
        store = self.runtime._store
        if store is not None:
            store.close()
        return unwritten


def _safe_url(url: str) -> str:
    """``url`` without its password, for the log."""
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable URL>"


class WorkerApp(HttpApp):
    """The mounted HTTP app of a worker: serves the :class:`Serving` attached at init."""

    def __init__(self, config: ServeConfig) -> None:
        from ml_assets.serve import connections, front
        from ml_assets.serve.openapi import openapi_document

        # Before BentoML builds this worker's app and uvicorn config: bounded metric labels,
        # unknown paths and the docs page answered by us (ml_assets.serve.front), request-head
        # timeout and connection cap (ml_assets.serve.connections).
        front.install(MOUNT)
        connections.install(config.header_timeout_seconds, config.max_connections)
        self.serving: Serving | None = None
        super().__init__(
            lambda: self.serving.runtime if self.serving is not None else None,
            max_body_bytes=config.max_body_bytes,
            openapi=openapi_document,
            body_timeout=config.body_timeout_seconds,
            token=config.token,
            max_in_flight=config.max_in_flight_per_worker,
        )

    def attach(self, serving: Serving) -> None:
        self.serving = serving
