"""Serving settings: what a Bento serves and its limits, from the Bento's config file and env.

A built Bento carries ``bento_config.json`` beside its service file (written by
:func:`ml_assets.serve.bento.build_bento`): the dataset and the BentoML model tag it was built
for. The serving variables of :mod:`ml_assets.settings` override it, which is also how the
service source file is served straight from the repository (``ML_ASSETS_SERVE_DATASET``,
``ML_ASSETS_SERVE_MODEL``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ml_assets import settings

CONFIG_FILE = "bento_config.json"
DEFAULT_GRPC_PORT = 50051
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_RECORDS = 10_000


@dataclass(frozen=True)
class ServeConfig:
    """Everything the service needs to know besides the model itself."""

    dataset: str = "car_loan"
    model_tag: str = ""
    """BentoML model tag (``car_loan:abc123``); default ``<dataset>:latest``."""
    workers: int = 1
    """HTTP worker processes (each also runs a gRPC server on the shared port)."""
    grpc_port: int = DEFAULT_GRPC_PORT
    """gRPC port; 0 or less turns gRPC off."""
    grpc_host: str = "0.0.0.0"
    grpc_threads: int = 8
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body (HTTP) or message (gRPC) accepted; larger gets 413."""
    max_records: int = DEFAULT_MAX_RECORDS
    """Most records per request; more gets 413."""
    prediction_log_dir: str = ""
    """Root of the prediction log; default ``$ML_ASSETS_HOME/prediction_log``."""
    log_flush_seconds: float = 1.0
    online_url: str = ""
    """Online feature store URL; default a SQLite file ``online.sqlite`` under ML_ASSETS_HOME."""
    labels: dict[str, str] = field(default_factory=dict)
    """What the Bento was built from (registered model, version, run ids): informational."""

    @property
    def resolved_model_tag(self) -> str:
        return self.model_tag or f"{self.dataset}:latest"

    @property
    def service_name(self) -> str:
        return f"{self.dataset}_service"

    def resolved_log_dir(self) -> Path:
        if self.prediction_log_dir:
            return Path(self.prediction_log_dir)
        return settings.current().prediction_log_path

    def resolved_online_url(self) -> str:
        """The same resolution as the ``online_store`` resource of the feature assets."""
        return self.online_url or settings.current().online_store_url

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def load(cls, directory: str | Path | None = None) -> ServeConfig:
        """The config file in ``directory`` (if there is one), then environment overrides."""
        values: dict[str, Any] = {}
        if directory is not None:
            path = Path(directory) / CONFIG_FILE
            if path.exists():
                values = json.loads(path.read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        config = cls(**{k: v for k, v in values.items() if k in known})
        overrides = settings.current().serve_overrides()
        return replace(config, **overrides) if overrides else config
