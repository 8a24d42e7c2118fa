"""The ``bento`` asset: what it builds from the champion, offline and CPU only; idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

import ml_assets.contracts
from ml_assets.dataset import Dataset
from ml_assets.serve.assets import BENTO_BUILDER
from ml_assets.serve.carried import features_fingerprint
from ml_assets_tests.serve import support

pytestmark = pytest.mark.xdist_group("serve")


def test_asset_shape() -> None:
    from ml_assets.serve.assets import serving_definitions

    contract, _ = support.car_loan()
    defs = serving_definitions(Dataset.build(contract))
    asset, log = defs.assets
    spec = next(iter(asset.specs))
    # the prediction log the served Bento writes: external, downstream of the Bento
    assert log.key == dg.AssetKey(["car_loan", "prediction_log"])
    assert {d.asset_key for d in log.deps} == {spec.key}
    assert spec.key == Dataset.build(contract).keys.bento == dg.AssetKey(["car_loan", "bento"])
    assert {d.asset_key for d in spec.deps} == {dg.AssetKey(["car_loan", "champion"])}
    assert spec.automation_condition is not None
    assert "eager" in str(spec.automation_condition.get_label() or spec.automation_condition)
    assert {"mlflow", BENTO_BUILDER} <= asset.required_resource_keys


@pytest.mark.serve
def test_materialization_metadata(built, champion) -> None:
    meta = built.metadata
    assert meta["model_version"] == champion.version
    assert meta["mlflow_run_id"] == champion.run_id
    assert meta["bento_tag"].startswith("car_loan_service:v1-")
    assert (
        meta["serve_command"]
        == f"BENTOML_HOME={built.bentoml_home} bentoml serve {meta['bento_tag']}"
    )
    assert meta["bentoml_model_tag"].startswith("car_loan:")


@pytest.mark.serve
def test_bento_contents_link_back_and_stay_cpu_only(built, champion) -> None:
    path = Path(built.metadata["bento_path"])
    info = yaml.safe_load((path / "bento.yaml").read_text())
    labels = info["labels"]
    assert labels["registered_model"] == "car_loan"
    assert labels["model_version"] == champion.version
    assert labels["mlflow_run_id"] == champion.run_id
    assert labels["dagster_run_id"] == built.result.run_id
    assert labels["contract_version"] == support.car_loan()[0].version
    assert [m["tag"] for m in info["services"][0]["models"]] == [built.model_tag]
    # the imported model carries the same links
    name, version = built.model_tag.split(":")
    model = yaml.safe_load(
        (built.bentoml_home / "models" / name / version / "model.yaml").read_text()
    )
    assert model["labels"]["mlflow_run_id"] == champion.run_id
    assert model["labels"]["dagster_run_id"] == built.result.run_id
    assert model["metadata"]["problem"]["features"] == champion.problem.features
    # requirements pinned, not locked (no resolution at build), and nothing GPU
    reqs = (path / "env" / "python" / "requirements.txt").read_text().lower()
    assert "catboost==" in reqs and "grpcio==" in reqs and "bentoml==" in reqs
    for gpu in ("torch", "cuda", "nvidia", "tensorflow"):
        assert gpu not in reqs
    assert not (path / "env" / "python" / "requirements.lock.txt").exists()
    dockerfile = (path / "env" / "docker" / "Dockerfile").read_text().lower()
    assert "from python:3.11-slim" in dockerfile and "cuda" not in dockerfile
    # the service, the proto, the serving subset of the package; no Dagster asset modules
    src = path / "src"
    assert (src / "service.py").exists() and (src / "predictor.proto").exists()
    assert (src / "ml_assets" / "serve" / "predictor_pb2.py").exists()
    assert not list(src.rglob("assets.py"))
    # the dataset's contract and features travel with it, with their fingerprints; the bundled
    # contract YAMLs do not (the carried contract is the Bento's only one)
    contract, spec = support.car_loan()
    bundled = Path(ml_assets.contracts.__file__).parent
    assert (src / "dataset" / "contract.yaml").read_bytes() == (
        bundled / "car_loan.yaml"
    ).read_bytes()
    assert (src / "dataset" / "features.yaml").read_bytes() == (
        bundled / "features" / "car_loan.yaml"
    ).read_bytes()
    assert not list((src / "ml_assets").rglob("*.yaml"))
    config = json.loads((src / "bento_config.json").read_text())
    assert (
        config["contract_fingerprint"] == labels["contract_fingerprint"] == contract.fingerprint()
    )
    assert config["features_fingerprint"] == features_fingerprint(spec.file)
    # the building platform's state locations, absolute (the defaults of a server given none)
    assert Path(config["prediction_log_dir"]).is_absolute()
    assert config["online_url"].startswith("sqlite:////")


@pytest.mark.serve
def test_build_is_offline(champion, tmp_path: Path) -> None:
    """A fresh import and build in an empty network namespace (where the kernel allows it;
    always with package indexes off and every proxy a closed port) succeeds; asking BentoML to
    lock the requirements, which needs an index, fails on the build's guard instead of
    reaching out."""
    from ml_assets.serve.bento import build_bento, stage_champion
    from ml_assets_tests.serve.conftest import network_isolation_available

    staged = stage_champion(champion.tracking, "car_loan", tmp_path / "staged")
    isolated = network_isolation_available()
    built = build_bento(staged, home=tmp_path / "bentoml", isolate_network=isolated)
    assert not built.reused_model and not built.reused_bento
    assert (built.path / "bento.yaml").exists()
    with pytest.raises(RuntimeError, match=r"Failed to lock|must stay offline"):
        build_bento(
            staged, home=tmp_path / "bentoml2", isolate_network=isolated, lock_packages=True
        )


@pytest.mark.serve
def test_rebuilding_the_same_champion_reuses_model_and_bento(
    built, champion, bento_builder_resource
) -> None:
    from ml_assets.serve.assets import serving_definitions

    contract, _ = support.car_loan()
    result = dg.materialize(
        list(serving_definitions(Dataset.build(contract)).assets or []),
        resources={"mlflow": champion.tracking, "bento_builder": bento_builder_resource},
    )
    node = Dataset.build(contract).keys.bento.to_python_identifier()
    meta = {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}
    assert meta["bento_tag"] == built.bento_tag
    assert meta["bentoml_model_tag"] == built.model_tag
    assert meta["reused_existing_bento"] is True
