"""The one settings object: every variable, its default and its documentation."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from ml_assets import settings
from ml_assets.serve.config import ServeConfig

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ml_assets"


def test_readme_configuration_table_is_generated_from_the_settings() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(
        r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", readme, re.S
    )
    assert m, "README has no generated settings table"
    assert m.group(1) == settings.markdown_table()


def test_no_module_but_settings_reads_platform_variables() -> None:
    """The grep of the issue: ML_ASSETS_/MLFLOW_ variables are read in settings only."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "settings.py" or "pb2" in path.name:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"os\.(environ|getenv)", line) and not line.lstrip().startswith("#"):
                # Writing DAGSTER_HOME for the in-process Dagster instance is allowed.
                if 'os.environ["DAGSTER_HOME"] =' in line:
                    continue
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


def test_serving_defaults_documented_as_the_serve_config_has_them() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(ServeConfig)}
    overrides = settings.from_env({}).serve_overrides()
    assert overrides == {}
    documented = {
        "serve_workers": "workers",
        "grpc_port": "grpc_port",
        "grpc_host": "grpc_host",
        "grpc_threads": "grpc_threads",
        "serve_max_body_bytes": "max_body_bytes",
        "serve_max_records": "max_records",
        "prediction_log_flush_seconds": "log_flush_seconds",
    }
    for field, target in documented.items():
        doc = settings.Settings.model_fields[field].json_schema_extra["default_doc"]
        assert doc.strip("`") == str(defaults[target]), field


def test_derived_paths_follow_the_home_and_overrides(tmp_path: Path) -> None:
    s = settings.from_env({"ML_ASSETS_HOME": str(tmp_path)})
    assert s.online_store_url == f"sqlite:///{tmp_path / 'online.sqlite'}"
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.lake_path == str(tmp_path / "lake")
    assert s.dagster_home_path == tmp_path / "dagster_home"
    s = settings.from_env(
        {
            "ML_ASSETS_HOME": str(tmp_path),
            "ML_ASSETS_LAKE": "s3://bucket/lake",
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
            "ML_ASSETS_CONTRACTS": str(tmp_path / "c"),
        }
    )
    assert s.summary()["lake"] == "s3://bucket/lake"
    assert s.summary()["MLflow tracking"] == "http://127.0.0.1:5000"
    assert s.features_path == tmp_path / "c" / "features"


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(settings.SettingsError, match="ML_ASSETS_GRPC_PORT='abc'"):
        settings.from_env({"ML_ASSETS_GRPC_PORT": "abc"})


def test_the_prediction_log_is_a_folder_or_an_object_store_url(tmp_path: Path) -> None:
    s = settings.from_env({"ML_ASSETS_HOME": str(tmp_path)})
    assert s.prediction_log_path == tmp_path / "prediction_log"
    s = settings.from_env({"ML_ASSETS_PREDICTION_LOG": "s3://bucket/prediction_log"})
    root = s.prediction_log_path
    assert str(root) == "s3://bucket/prediction_log" and str(root / "car_loan").endswith(
        "prediction_log/car_loan"
    )
    assert s.summary()["prediction log"] == "s3://bucket/prediction_log"
    # a database is refused, naming the setting (README, "Production profile", says why)
    with pytest.raises(settings.SettingsError, match=r"ML_ASSETS_PREDICTION_LOG=.*not a database"):
        settings.from_env({"ML_ASSETS_PREDICTION_LOG": "postgresql://postgres@db:5432/x"})
    with pytest.raises(settings.SettingsError, match="nope:// is not a storage protocol"):
        settings.from_env({"ML_ASSETS_PREDICTION_LOG": "nope://bucket/x"})


def test_source_url_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = settings.from_env({"ML_ASSETS_HOME": str(tmp_path)})
    assert s.source_url_for("ML_ASSETS_SOURCE_URL", None) == s.demo_source_url
    assert s.source_url_for("ML_ASSETS_SOURCE_URL", "sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setenv("MY_DB_URL", "postgresql://h/db")
    assert s.source_url_for("MY_DB_URL", None) == "postgresql://h/db"
    s = settings.from_env({"ML_ASSETS_SOURCE_URL_OVERRIDE": "sqlite:///o.db"})
    assert s.source_url_for("MY_DB_URL", "sqlite:///x.db") == "sqlite:///o.db"


def test_settings_command_prints_the_values_in_effect(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(REPO / ".venv/bin/ml-assets"), "settings"],
        env={"ML_ASSETS_HOME": str(tmp_path), "ML_ASSETS_LAKE": "s3://b/l", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ML_ASSETS_LAKE" in out and "s3://b/l" in out
    assert f"sqlite:///{tmp_path.resolve() / 'online.sqlite'}" in out
