"""Real fixtures for the serving tests: the shared ones live in :mod:`ml_assets.testing` (the
serving bench uses them too) and are re-exported here; the rest are test-only. No mocks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ml_assets.testing import (
    AS_OF,
    BENTOML,
    CUTOFF,
    DATASET,
    Champion,
    ServerProcess,
    car_loan,
    demo_tables,
    entity_records,
    feature_records,
    feature_table,
    free_port,
    proto_records,
    seed_online_store,
    serve_env,
    server_home,
    start_server,
    train_champion,
    wait_until,
)

__all__ = [
    "AS_OF",
    "BENTOML",
    "BENTOS",
    "CUTOFF",
    "DATASET",
    "REPO",
    "Champion",
    "ServerProcess",
    "car_loan",
    "demo_tables",
    "entity_records",
    "feature_records",
    "feature_table",
    "free_port",
    "proto_label",
    "proto_records",
    "seed_online_store",
    "serve_env",
    "server_home",
    "start_server",
    "train_champion",
    "wait_until",
    "write_json",
]

REPO = Path(__file__).resolve().parents[2]
BENTOS = REPO / "bentos"


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def proto_label(value: Any) -> Any:
    """The Python value of a ``ml_assets.serving.v1.Value`` (None for null)."""
    kind = value.WhichOneof("kind")
    return None if kind in (None, "null_value") else getattr(value, kind)
