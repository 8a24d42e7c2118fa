"""The serving core in-process for every bundled contract (binary, regression, multiclass): a
small CatBoost model trained on rows drawn from the contract-derived rules, served by
:class:`ServingRuntime`, gives what batch scoring gives; outputs and the log fit the problem."""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ml_assets.contracts import load_contracts
from ml_assets.contracts.model import ProblemType
from ml_assets.features import load_feature_spec
from ml_assets.serve.prediction_log import PredictionLog, layout_for, read_prediction_log
from ml_assets.serve.runtime import MODEL_FILE, PROBLEM_FILE, ServingRuntime, load_bundle
from ml_assets.serve.validation import Kind, feature_rules
from ml_assets.train import core
from ml_assets.train.config import TrainConfig
from ml_assets_tests.serve import support


def draw(rule, rng: random.Random):
    """A value the rule accepts (sometimes null when it may be)."""
    if rule.nullable and rng.random() < 0.1:
        return None
    if rule.allowed:
        return rng.choice(rule.allowed)
    if rule.kind is Kind.BOOL:
        return rng.random() < 0.5
    lo = rule.min if rule.min is not None else 0
    hi = rule.max if rule.max is not None else lo + 1000
    return rng.randint(int(lo), int(hi)) if rule.kind is Kind.INT else rng.uniform(lo, hi)


def synthetic(contract, spec, n: int, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    rules = feature_rules(spec)
    dtypes = spec.dtypes()
    target = contract.labels.columns[contract.target]
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    cols = {name: [draw(rule, rng) for _ in range(n)] for name, rule in rules.items()}
    if contract.problem_type is ProblemType.REGRESSION:
        y = [rng.uniform(1000, 50000) for _ in range(n)]
    else:
        y = [rng.choice(target.allowed) for _ in range(n)]
    return pl.DataFrame(
        {
            spec.event_time: [start + dt.timedelta(minutes=i) for i in range(n)],
            **{k: pl.Series(k, v, dtype=dtypes[k], strict=False) for k, v in cols.items()},
            contract.target: y,
        }
    )


@pytest.mark.parametrize("dataset", ["car_loan", "car_price", "credit_card"])
def test_serving_equals_batch_scoring(dataset: str, tmp_path: Path) -> None:
    contract = load_contracts()[dataset]
    spec = load_feature_spec(contract)
    frame = synthetic(contract, spec, 600, seed=len(dataset))
    problem = core.Problem.from_frame(
        frame, contract.problem_type, contract.target, spec.names, spec.event_time
    )
    model = core.fit(core.time_split(frame, spec.event_time), problem, TrainConfig(iterations=20))
    model.save_model(str(tmp_path / MODEL_FILE))
    (tmp_path / PROBLEM_FILE).write_text(problem.to_json())
    bundle = load_bundle(tmp_path, labels={"model_version": "3"})
    log = PredictionLog(layout_for(spec, bundle), tmp_path / "log", flush_seconds=60)
    runtime = ServingRuntime(spec, bundle, prediction_log=log)

    rows = frame.tail(150)
    records = rows.select(problem.features).to_dicts()
    outcome = runtime.predict(records, request_id="r1", protocol="test")
    expected = core.score_frame(model, rows, problem, "3")
    preds = outcome.predictions()
    if contract.problem_type is ProblemType.REGRESSION:
        np.testing.assert_allclose([p["value"] for p in preds], expected["prediction"], rtol=1e-12)
    elif contract.problem_type is ProblemType.BINARY:
        np.testing.assert_allclose(
            [p["probability"] for p in preds], expected["probability"], rtol=1e-12
        )
        assert [p["label"] for p in preds] == expected["prediction"].to_list()
    else:
        for c in problem.classes:
            np.testing.assert_allclose(
                [p["probabilities"][str(c)] for p in preds],
                expected[f"probability_{c}"],
                rtol=1e-12,
            )
        assert [p["label"] for p in preds] == expected["prediction"].to_list()
    assert json.loads(outcome.to_json())["model_version"] == "3"

    log.close()
    logged = read_prediction_log(
        dataset, dt.date(2000, 1, 1), dt.date(2100, 1, 1), root=tmp_path / "log"
    )
    assert logged.height == 150
    outputs = [c for c in expected.columns if c.startswith(("probability", "prediction"))]
    for c in outputs:
        got, want = logged[c].to_list(), expected[c].to_list()
        if logged[c].dtype.is_float():
            assert got == pytest.approx(want), c
        else:
            assert got == want, c
    for f in problem.features:
        assert logged[f].to_list() == rows[f].to_list(), f


def test_service_module_imports_no_mlflow_or_dagster(tmp_path: Path) -> None:
    """Importing the service (what a worker does) pulls in neither MLflow nor Dagster."""
    code = (
        "import sys; sys.path.insert(0, 'bentos'); import service; "
        "import ml_assets.serve.grpc_server, ml_assets.serve.runtime; "
        "print(sorted(m for m in ('mlflow', 'dagster', 'nannyml') if m in sys.modules))"
    )
    env = support.serve_env(tmp_path / "home", tmp_path / "bentoml")
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=support.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_store_without_features_is_unavailable_not_a_bad_request(tmp_path: Path) -> None:
    """Predict by keys against a store that holds no features: 503 (UNAVAILABLE), not 4xx/500;
    predict on feature rows still works."""
    from ml_assets.features import OnlineClient
    from ml_assets.serve.validation import ErrorCode, RequestError

    contract = load_contracts()["car_loan"]
    spec = load_feature_spec(contract)
    frame = synthetic(contract, spec, 200, seed=1)
    problem = core.Problem.from_frame(
        frame, contract.problem_type, contract.target, spec.names, spec.event_time
    )
    model = core.fit(core.time_split(frame, spec.event_time), problem, TrainConfig(iterations=5))
    model.save_model(str(tmp_path / MODEL_FILE))
    (tmp_path / PROBLEM_FILE).write_text(problem.to_json())
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    runtime = ServingRuntime(spec, load_bundle(tmp_path), store_factory=lambda: OnlineClient(url))
    with pytest.raises(RequestError) as err:
        runtime.predict_by_keys(support.entity_records(2), request_id="k", protocol="test")
    assert err.value.code is ErrorCode.UNAVAILABLE and err.value.status == 503
    assert "online store" in err.value.message
    rows = frame.head(3).select(problem.features).to_dicts()
    assert len(runtime.predict(rows, request_id="p", protocol="test").predictions()) == 3
