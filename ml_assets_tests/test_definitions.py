"""The code location: assets generated from contracts alone, lineage, and YAML-only onboarding."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ml_assets.contracts import BUNDLED_DIR
from ml_assets.definitions import build_definitions
from ml_assets.ingest.demo import seed_demo

NEW_DATASET = """
name: sensor_alerts
version: 0.1.0
owner: iot-team@example.com
problem_type: regression
target: minutes_to_failure
partitioning: {granularity: monthly, start: "2023-01-01", end: "2023-04-01"}
entity:
  table: sensor_readings
  primary_key: [reading_id]
  event_time: read_at
  columns:
    reading_id: {type: int}
    read_at: {type: datetime}
    temperature: {type: float, min: -50, max: 150}
    site: {type: category, allowed: [north, south]}
labels:
  table: sensor_failures
  key: [reading_id]
  observed_at: failed_at
  columns:
    reading_id: {type: int}
    failed_at: {type: datetime}
    minutes_to_failure: {type: float, min: 0}
"""


def test_bundled_contracts_become_assets_with_lineage():
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for name in ("car_loan", "car_price", "credit_card"):
        for role in ("entity", "labels"):
            for stage in ("raw", "validated", "quarantine"):
                assert f"{name}/{stage}_{role}" in keys
            parents = graph.get(dg.AssetKey([name, f"validated_{role}"])).parent_keys
            assert parents == {dg.AssetKey([name, f"raw_{role}"])}
    for name in ("car_loan", "car_price", "credit_card"):
        assert defs.resolve_job_def(f"{name}_pipeline") is not None
        # the model search has its own job, and is in no other
        search = dg.AssetKey([name, "model_search"])
        assert graph.get(search).parent_keys == {dg.AssetKey([name, "training_set"])}
        job = defs.resolve_job_def(f"{name}_model_search")
        assert job.asset_layer.selected_asset_keys == {search}
        assert search not in defs.resolve_job_def(f"{name}_train").asset_layer.selected_asset_keys
    checks = {k.name for k in graph.asset_check_keys}
    assert {"schema_conformance", "primary_key_unique", "quarantine_rate"} <= checks
    assert {"null_rate", "row_count_anomaly", "freshness_check"} <= checks


def test_a_new_dataset_is_onboarded_with_yaml_only(tmp_path, monkeypatch):
    folder = tmp_path / "contracts"
    folder.mkdir()
    (folder / "sensor_alerts.yaml").write_text(NEW_DATASET)
    monkeypatch.setenv("ML_ASSETS_CONTRACTS", str(folder))
    defs = build_definitions()
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "sensor_alerts/validated_entity" in keys
    assert not any(k.startswith("car_loan") for k in keys)
    job = defs.resolve_job_def("sensor_alerts_pipeline")
    assert job.partitions_def.get_partition_keys() == ["2023-01-01", "2023-02-01", "2023-03-01"]


@pytest.mark.slow
def test_loading_definitions_does_not_import_heavy_libraries():
    code = (
        "import sys, ml_assets.definitions; "
        "heavy = [m for m in ('mlflow', 'bentoml', 'nannyml', 'catboost') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.slow
def test_ml_assets_demo_runs_end_to_end(tmp_path):
    """The README's first command, on a fresh home folder (one dataset to keep it short)."""
    env = {"ML_ASSETS_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    cli = Path(sys.executable).parent / "ml-assets"
    out = subprocess.run(
        [str(cli), "demo", "car_price"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    stdout = out.stdout
    assert (
        "car_price_pipeline: 59 partitions (2017-01-24 .. 2017-03-23) in one run, succeeded"
        in stdout
    )
    assert "car_price_train: 1 run, succeeded" in stdout
    assert "[ok  ] car_price/model:promotion_gate" in stdout
    assert "champion: v1" in stdout
    assert (
        "car_price_score: 59 partitions (2017-01-24 .. 2017-03-23) in one run, succeeded" in stdout
    )
    assert "dagster dev" in stdout and "mlflow ui" in stdout
    lake = tmp_path / "home" / "lake" / "car_price" / "validated_entity"
    assert len(list(lake.glob("*.parquet"))) == 59
    assert (tmp_path / "home" / "dagster_home" / "dagster.yaml").exists()
    predictions = tmp_path / "home" / "lake" / "car_price" / "predictions"
    assert len(list(predictions.glob("*.parquet"))) == 59
    assert (tmp_path / "home" / "mlflow.db").exists()


def test_bundled_contracts_seed_everywhere(tmp_path, contracts):
    for name, contract in contracts.items():
        counts = seed_demo(f"sqlite:///{tmp_path / 'all.sqlite'}", contract)
        assert all(n > 0 for n in counts.values()), name
    assert sorted(p.name for p in BUNDLED_DIR.glob("*.yaml")) == [
        "car_loan.yaml",
        "car_price.yaml",
        "credit_card.yaml",
    ]
