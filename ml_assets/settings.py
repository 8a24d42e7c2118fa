"""Process-wide settings: where local state lives and phone-home switches.

Everything has an embedded default (SQLite, local files under ``ML_ASSETS_HOME``) so the
platform runs with no server to start; production points the same settings elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

# Every library in the stack reports usage unless told not to; no machine here has internet.
TELEMETRY_OFF = {
    "NML_DISABLE_USAGE_LOGGING": "1",
    "BENTOML_DO_NOT_TRACK": "True",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "DAGSTER_DISABLE_TELEMETRY": "1",
}


def disable_telemetry() -> None:
    """Set the opt-out switches of nannyml, BentoML, MLflow (Dagster's is in dagster.yaml)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)


def home() -> Path:
    """Root of local state (data lake, source database, MLflow store): ``ML_ASSETS_HOME``."""
    return Path(os.environ.get("ML_ASSETS_HOME", ".ml_assets")).resolve()


def default_source_url() -> str:
    """The embedded demo source database: a SQLite file under the home folder."""
    return f"sqlite:///{home() / 'source.sqlite'}"


def source_url(env_var: str | None = "ML_ASSETS_SOURCE_URL", url: str | None = None) -> str:
    """Resolve a contract's source URL: explicit URL, else its env var, else the demo SQLite."""
    if url:
        return url
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    return default_source_url()


disable_telemetry()
