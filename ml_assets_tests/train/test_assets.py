"""Model, promotion gate, champion, rollback and batch predictions, on real Dagster and MLflow."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from ml_assets.dataset import Dataset
from ml_assets.features.assets import OnlineStore, build_feature_definitions
from ml_assets.ingest.assets import SqlSource
from ml_assets.ingest.demo import seed_demo
from ml_assets.registry.tracking import CHALLENGER, CHAMPION, STANDARD_TAGS, MlflowTracking
from ml_assets.storage import LAKE_IO, Lake, LakeIOManager
from ml_assets.train import core
from ml_assets.train.assets import GATE, training_definitions
from ml_assets_tests.pipeline import ingest_assets, range_tags

FIRST, LAST = "2018-01-01", "2018-12-31"  # a year of weekly partitions
SMALL = {"iterations": 150, "early_stopping_rounds": 30}
WORSE = {"iterations": 2, "depth": 1, "learning_rate": 0.001, "early_stopping_rounds": 1}
# every test here trains through Dagster and MLflow (the module's world alone takes ~6 s)
pytestmark = pytest.mark.slow


def _assets(contract):
    defs = dg.Definitions.merge(
        build_feature_definitions(Dataset.build(contract)),
        training_definitions(Dataset.build(contract)),
    )
    return [*ingest_assets(contract), *defs.assets], list(defs.asset_checks or [])


@pytest.fixture(scope="module")
def world(tmp_path_factory, contracts):
    """car_loan seeded, ingested, validated and featurized for a year of weekly partitions."""
    tmp = tmp_path_factory.mktemp("train")
    contract = contracts["car_loan"]
    url = f"sqlite:///{tmp / 'source.sqlite'}"
    seed_demo(url, contract)
    lake = Lake(base_path=str(tmp / "lake"))
    base = {
        "lake": lake,
        LAKE_IO: LakeIOManager(lake=lake),
        "source": SqlSource(url=url),
        "online_store": OnlineStore(url=f"sqlite:///{tmp / 'online.sqlite'}"),
    }
    assets, checks = _assets(contract)
    partitioned = [
        a
        for a in assets
        if a.partitions_def is not None and Dataset.build(contract).keys.predictions not in a.keys
    ]
    result = dg.materialize(partitioned, resources=base, tags=range_tags(FIRST, LAST))
    assert result.success
    return {"contract": contract, "tmp": tmp, "base": base, "assets": assets, "checks": checks}


def _mlflow(folder: Path, uri: str | None = None) -> MlflowTracking:
    return MlflowTracking(
        tracking_uri=uri or f"sqlite:///{folder / 'mlflow.db'}",
        artifact_root=str(folder / "artifacts"),
    )


def _train(world, mlflow: MlflowTracking, config: dict | None = None, instance=None):
    contract = world["contract"]
    selection = [
        Dataset.build(contract).keys.training_set,
        Dataset.build(contract).keys.model,
        Dataset.build(contract).keys.champion,
    ]
    return dg.materialize(
        world["assets"],
        selection=selection,
        resources={**world["base"], "mlflow": mlflow},
        run_config={"ops": {"car_loan__model": {"config": {**SMALL, **(config or {})}}}},
        instance=instance,
        raise_on_error=False,
    )


def _gate(result) -> dg.AssetCheckEvaluation:
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == GATE)


def test_gate_promotes_then_blocks_then_rollback(world, tmp_path):
    contract, mlflow = world["contract"], _mlflow(tmp_path)
    with dg.instance_for_test() as instance:
        first = _train(world, mlflow, instance=instance)
        assert first.success
        gate = _gate(first)
        assert gate.passed and "first model" in gate.description and "beats" in gate.description
        assert mlflow.alias_version("car_loan", CHAMPION) == "1"

        # A deliberately weak challenger: the gate fails, the champion stays, downstream is skipped.
        worse = _train(world, mlflow, WORSE, instance=instance)
        assert not worse.success
        assert not _gate(worse).passed and "worse than the champion" in _gate(worse).description
        assert mlflow.alias_version("car_loan", CHAMPION) == "1"
        assert mlflow.alias_version("car_loan", CHALLENGER) == "2"
        materialized = {m.asset_key for m in worse.get_asset_materialization_events()}
        assert Dataset.build(contract).keys.champion not in materialized
        tags = mlflow.version_tags("car_loan", "2")
        assert tags["promotion.decision"] == "reject"
        assert tags["promotion.champion_version"] == "1"

        # The same config as the champion: equal metrics, within tolerance: promoted.
        again = _train(world, mlflow, instance=instance)
        assert again.success and _gate(again).passed
        assert mlflow.alias_version("car_loan", CHAMPION) == "3"
        assert mlflow.version_tags("car_loan", "3")["promotion.previous_champion"] == "1"

    # Rollback: the champion goes back to the version it replaced.
    assert mlflow.rollback("car_loan") == ("3", "1")
    assert mlflow.alias_version("car_loan", CHAMPION) == "1"


def test_training_is_deterministic_and_tracked_by_the_standard(world, tmp_path):
    mlflow = _mlflow(tmp_path)
    a, b = _train(world, mlflow), _train(world, mlflow)
    assert a.success and b.success

    def metrics(result):
        meta = next(
            m.materialization.metadata
            for m in result.get_asset_materialization_events()
            if m.asset_key == Dataset.build(world["contract"]).keys.model
        )
        return {k: v.value for k, v in meta.items() if k.startswith("test_")}, meta

    (ma, meta_a), (mb, _) = metrics(a), metrics(b)
    assert ma == mb and ma["test_roc_auc"] > 0.9
    client = mlflow.client()
    run = client.get_run(meta_a["mlflow_run_id"].value)
    for tag in STANDARD_TAGS:
        assert run.data.tags.get(tag), tag
    assert run.data.tags["dagster.run_id"] == a.run_id
    assert client.get_experiment(run.info.experiment_id).name == "car_loan"
    assert {"iterations", "learning_rate", "depth", "cutoff", "train_rows"} <= set(run.data.params)
    assert {
        "test_roc_auc",
        "test_pr_auc",
        "test_log_loss",
        "test_brier",
        "baseline_roc_auc",
    } <= set(run.data.metrics)
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    assert inputs[0].dataset.digest == run.data.tags["training_set.fingerprint"][:36]
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert {
        "plots/roc_pr.png",
        "plots/calibration.png",
        "plots/feature_importance.png",
    } <= artifacts
    assert "mlflow_run" in meta_a and meta_a["mlflow_run"].value.endswith(run.info.run_id)
    assert "data:image/png;base64," in meta_a["plots"].value
    # The logged model carries a signature and an input example.
    with mlflow._mlflow() as mlflow_lib:
        info = mlflow_lib.models.get_model_info(meta_a["model_uri"].value)
    assert info.signature is not None and info.saved_input_example_info is not None


def test_batch_predictions_equal_direct_model_predictions(world, tmp_path):
    contract, mlflow = world["contract"], _mlflow(tmp_path)
    assert _train(world, mlflow).success
    result = dg.materialize(
        world["assets"],
        selection=[Dataset.build(contract).keys.predictions],
        resources={**world["base"], "mlflow": mlflow},
        tags=range_tags("2018-12-03", "2018-12-10"),
    )
    assert result.success
    lake: Lake = world["base"]["lake"]
    scored = (
        lake.scan(Dataset.build(contract).keys.predictions, ["2018-12-03", "2018-12-10"])
        .collect()
        .sort("id")
    )
    feats = (
        lake.scan(Dataset.build(contract).keys.features, ["2018-12-03", "2018-12-10"])
        .collect()
        .sort("id")
    )
    version = mlflow.alias_version("car_loan", CHAMPION)
    problem = core.Problem.from_json(mlflow.version_tags("car_loan", version)["problem"])
    direct = core.predict(mlflow.load_model("car_loan", version), feats, problem)
    assert scored.height == feats.height > 0
    assert scored["id"].to_list() == feats["id"].to_list()
    assert scored["probability"].to_list() == pytest.approx(direct.tolist(), abs=1e-12)
    assert set(scored["model_version"]) == {version}
    assert set(scored["prediction"].unique()) <= {0, 1}


def test_bad_training_set_fails_before_any_registry_write(world, tmp_path):
    contract, mlflow = world["contract"], _mlflow(tmp_path)
    lake = Lake(base_path=str(tmp_path / "lake"))
    good = (
        world["base"]["lake"].scan(Dataset.build(contract).keys.training_set, [None]).collect()
        if world["base"]["lake"].exists(Dataset.build(contract).keys.training_set, None)
        else None
    )
    assert good is not None and good.height > 0
    for bad, message in (
        (good.with_columns(pl.lit(1).cast(good.schema["repaid"]).alias("repaid")), "single class"),
        (good.head(0), "empty"),
        (good.with_columns(pl.lit(None).cast(good.schema["repaid"]).alias("repaid")), "null"),
    ):
        lake.write(Dataset.build(contract).keys.training_set, None, bad)
        result = dg.materialize(
            world["assets"],
            selection=[Dataset.build(contract).keys.model],
            resources={
                **world["base"],
                "lake": lake,
                LAKE_IO: LakeIOManager(lake=lake),
                "mlflow": mlflow,
            },
            run_config={"ops": {"car_loan__model": {"config": SMALL}}},
            raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert message in failure.step_failure_data.error.cause.message
    assert mlflow.client().search_registered_models() == []


def test_registry_on_a_postgresql_backend_store(world, tmp_path, fresh_pg_url):
    mlflow = _mlflow(tmp_path, uri=fresh_pg_url)
    result = _train(world, mlflow)
    assert result.success
    assert mlflow.alias_version("car_loan", CHAMPION) == "1"
    assert "postgresql" in mlflow.resolved_tracking_uri()
    assert mlflow.client().get_registered_model("car_loan").name == "car_loan"


@pytest.mark.parametrize(("name", "metric"), [("car_price", "rmse"), ("credit_card", "macro_f1")])
def test_each_problem_type_trains_on_its_shipped_contract(tmp_path, contracts, name, metric):
    """Regression and multiclass, end to end through the same assets as car_loan (binary)."""

    contract = contracts[name]
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    seed_demo(url, contract)
    lake = Lake(base_path=str(tmp_path / "lake"))
    mlflow = _mlflow(tmp_path)
    resources = {
        "lake": lake,
        LAKE_IO: LakeIOManager(lake=lake),
        "source": SqlSource(url=url),
        "online_store": OnlineStore(url=f"sqlite:///{tmp_path / 'online.sqlite'}"),
        "mlflow": mlflow,
    }
    assets, _ = _assets(contract)
    keys = Dataset.build(contract).partitions.definition.get_partition_keys()
    partitioned = [
        a
        for a in assets
        if a.partitions_def is not None and Dataset.build(contract).keys.predictions not in a.keys
    ]
    assert dg.materialize(
        partitioned, resources=resources, tags=range_tags(keys[0], keys[-1])
    ).success
    result = dg.materialize(
        assets,
        selection=[
            Dataset.build(contract).keys.training_set,
            Dataset.build(contract).keys.model,
            Dataset.build(contract).keys.champion,
        ],
        resources=resources,
        run_config={"ops": {f"{name}__model": {"config": SMALL}}},
    )
    assert result.success and _gate(result).passed
    meta = next(
        m.materialization.metadata
        for m in result.get_asset_materialization_events()
        if m.asset_key == Dataset.build(contract).keys.model
    )
    assert meta["primary_metric"].value == metric
    model_score, baseline = meta[f"test_{metric}"].value, meta[f"baseline_{metric}"].value
    assert model_score < baseline if metric == "rmse" else model_score > baseline
    assert mlflow.alias_version(name, CHAMPION) == "1"
    problem = core.Problem.from_json(mlflow.version_tags(name, "1")["problem"])
    assert problem.problem_type.value == contract.problem_type.value
