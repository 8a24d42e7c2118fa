"""The BentoML service of a dataset's champion model: HTTP and gRPC.

Start a built Bento with ``bentoml serve <tag>`` (the ``bento`` asset prints the exact command),
or this file from the repository with
``ML_ASSETS_SERVE_DATASET=car_loan bentoml serve service:PredictionService`` run in ``bentos/``
(the model: ``ML_ASSETS_SERVE_MODEL``, default ``<dataset>:latest`` in the BentoML model store).

* HTTP (BentoML's port, 3000 by default): ``POST /v1/predict``, ``POST /v1/predict_by_keys``,
  ``GET /v1/model``, ``GET /v1/openapi.json``; BentoML's ``/livez``, ``/readyz``, ``/metrics``.
* gRPC (``ML_ASSETS_GRPC_PORT``, default 50051): ``ml_assets.serving.v1.Predictor`` from
  ``predictor.proto``, ``grpc.health.v1.Health`` and server reflection.

A built Bento carries everything it serves with (``bento_config.json``, the contract and
features YAML under ``dataset/`` with their fingerprints, checked here at start, and the serving
subset of ``ml_assets``): it needs no checkout and no ``ML_ASSETS_CONTRACTS``. Everything here
is wiring; the work is in :mod:`ml_assets.serve`.
"""

import logging
from pathlib import Path

import bentoml

import ml_assets.settings  # noqa: F401  (telemetry off before anything else is imported)
from ml_assets.serve import supervision
from ml_assets.serve.service import (
    MOUNT,
    Serving,
    WorkerApp,
    load_service,
    service_config,
    verify_stored_model,
)

# Settings and carried files are checked on import: `bentoml serve` fails before it starts any
# worker, saying what is wrong.
CONFIG, SPEC = load_service(Path(__file__).resolve().parent)
# The model file must be the one registered (its sha256 was recorded with the model version).
verify_stored_model(CONFIG)
HTTP = WorkerApp(CONFIG)
# In `bentoml serve` itself: exit with an error if a worker stopped with rows not written.
supervision.install_supervisor_check()


@bentoml.asgi_app(HTTP, path=MOUNT, name="ml_assets")
@bentoml.service(name=CONFIG.service_name, **service_config(CONFIG))
class PredictionService:
    """Serves the model the Bento was built with (``CONFIG.model_tag``)."""

    model = bentoml.models.BentoModel(CONFIG.resolved_model_tag)

    def __init__(self) -> None:
        logging.getLogger("ml_assets").setLevel(logging.INFO)  # into BentoML's server log
        # A worker stops (gracefully: SIGTERM) when `bentoml serve` dies, even by SIGKILL.
        self.supervisor = supervision.exit_with_parent()
        stored = self.model
        self.serving = Serving.start(
            CONFIG,
            SPEC,
            stored.path,
            model_tag=str(stored.tag),
            labels={k: str(v) for k, v in stored.info.labels.items()},
        )
        HTTP.attach(self.serving)

    def __is_ready__(self) -> bool:
        return self.serving.ready()

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.serving.close(self.supervisor)
