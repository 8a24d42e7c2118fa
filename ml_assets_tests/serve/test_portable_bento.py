"""A Bento is self-contained: built for a user's own dataset (a contract in a folder of its
own, given by ``ML_ASSETS_CONTRACTS`` at build only), ``bentoml export``-ed to a file and
``bentoml import``-ed into an EMPTY BentoML home, it serves with ``bentoml serve <tag>`` from
another directory with no contracts (``ML_ASSETS_CONTRACTS`` an empty folder) and no checkout
on its path: the contract, features and code it runs are the ones it carries. Its state (the
prediction log) goes where the configuration says, never into the BentoML store.

The user's dataset ``my_loans`` is the car-loan contract and features under another name; its
champion is the session's car-loan model registered under that name (same columns, same data).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import grpc
import httpx
import numpy as np
import polars as pl
import pytest

from ml_assets import settings
from ml_assets.contracts import BUNDLED_DIR
from ml_assets.dataset import Dataset
from ml_assets.features import FeatureSpec, build_training_set, compute_features
from ml_assets.features.spec import Source
from ml_assets.features.windows import aggregate_snapshot, entity_events, label_events
from ml_assets.serve import predictor_pb2 as pb
from ml_assets.serve import predictor_pb2_grpc as pb_grpc
from ml_assets.serve import read_prediction_log
from ml_assets.serve.carried import features_fingerprint
from ml_assets.train.core import score_frame
from ml_assets_tests.serve import support

pytestmark = [pytest.mark.xdist_group("serve"), pytest.mark.serve, pytest.mark.slow]

USER_DATASET = "my_loans"


@dataclass
class Exported:
    """The user's dataset, its champion, and its Bento exported to a file."""

    dataset: Dataset
    champion: support.Champion
    bento_tag: str
    archive: Path
    build_home: Path
    online_url: str


def user_contracts(folder: Path) -> Path:
    """``folder`` holding ``my_loans``: the car-loan contract and features, renamed."""
    (folder / "features").mkdir(parents=True)
    contract = (BUNDLED_DIR / "car_loan.yaml").read_text(encoding="utf-8")
    features = (BUNDLED_DIR / "features" / "car_loan.yaml").read_text(encoding="utf-8")
    renamed = re.sub(r"(?m)^name: car_loan$", f"name: {USER_DATASET}", contract)
    (folder / f"{USER_DATASET}.yaml").write_text(renamed, encoding="utf-8")
    feats = re.sub(r"(?m)^dataset: car_loan$", f"dataset: {USER_DATASET}", features)
    (folder / "features" / f"{USER_DATASET}.yaml").write_text(feats, encoding="utf-8")
    return folder


def register_champion(spec: FeatureSpec, base: support.Champion, home: Path) -> support.Champion:
    """The session's car-loan model logged with the tracking standard as ``my_loans`` v1 in an
    MLflow of its own under ``home``, and promoted to champion."""
    from ml_assets.registry.tracking import MlflowTracking
    from ml_assets.train import core

    _, labels = support.demo_tables()
    ts = build_training_set(
        spec, support.feature_table(), labels, support.CUTOFF, dt.timedelta(days=365)
    )
    tracking = MlflowTracking(
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_root=str(home / "mlartifacts")
    )
    problem_json = base.problem.to_json()
    tags = {
        "dagster.run_id": "test-run",
        "dagster.run_url": "http://127.0.0.1:3000/runs/test-run",
        "dagster.asset_key": f"{USER_DATASET}/model",
        "training.window": f"{support.CUTOFF - dt.timedelta(days=365)} .. {support.CUTOFF}",
        "git.commit": "test",
        "contract.version": spec.contract.version,
        "training_set.fingerprint": "test-fingerprint",
        "features": ",".join(base.problem.features),
        "problem": problem_json,
    }
    logged = tracking.log_training(
        dataset=USER_DATASET,
        tags=tags,
        params={"iterations": 60},
        metrics={"rows": float(ts.height)},
        model=base.model,
        input_example=core.to_pool_frame(base.holdout.head(3), base.problem),
        training_set=ts,
        training_set_source="test",
        fingerprint="test-fingerprint",
        target=spec.contract.target,
        plots={},
    )
    tracking.client().set_model_version_tag(USER_DATASET, logged.version, "problem", problem_json)
    tracking.promote(USER_DATASET, logged.version)
    return support.Champion(
        tracking, logged.version, logged.run_id, base.model, base.problem, base.holdout
    )


def seed_store(spec: FeatureSpec, url: str) -> None:
    """The user's dataset's aggregates as of :data:`support.AS_OF` in the store at ``url``."""
    import sqlalchemy as sa

    from ml_assets.features.online_store import write_snapshot

    entity, labels = support.demo_tables()
    ent = entity.filter(pl.col(spec.event_time) < support.AS_OF)
    lab = labels.filter(pl.col("observed_at") < support.AS_OF)
    events = {Source.ENTITY: entity_events(spec, ent), Source.LABELS: label_events(spec, lab, ent)}
    engine = sa.create_engine(url)
    try:
        write_snapshot(engine, spec, aggregate_snapshot(spec, events, support.AS_OF), support.AS_OF)
    finally:
        engine.dispose()


def bentoml(home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = settings.child_env(drop_prefixes=("ML_ASSETS_",))
    env["BENTOML_HOME"] = str(home)
    proc = subprocess.run(
        [str(support.BENTOML), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"bentoml {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def exported(champion: support.Champion, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The ``bento`` asset materialized for ``my_loans`` with ``ML_ASSETS_CONTRACTS`` pointing at
    the user's folder and the platform's home in a temp folder, then exported to a file."""
    from ml_assets.serve.assets import BentoBuilder, serving_definitions
    from ml_assets_tests.serve.conftest import network_isolation_available

    base = tmp_path_factory.mktemp("portable")
    contracts = user_contracts(base / "contracts")
    build_home = base / "platform"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ML_ASSETS_CONTRACTS", str(contracts))
        env.setenv("ML_ASSETS_HOME", str(build_home))
        env.delenv("ML_ASSETS_FEATURES", raising=False)
        env.delenv("ML_ASSETS_ONLINE_URL", raising=False)
        env.delenv("ML_ASSETS_PREDICTION_LOG", raising=False)
        from ml_assets.dataset import load_datasets

        dataset = load_datasets()[USER_DATASET]
        mine = register_champion(dataset.spec, champion, base / "mlflow")
        result = dg.materialize(
            list(serving_definitions(dataset).assets or []),
            resources={
                "mlflow": mine.tracking,
                "bento_builder": BentoBuilder(
                    home=str(build_home / "bentoml"), isolate_network=network_isolation_available()
                ),
            },
        )
    assert result.success
    node = dataset.keys.bento.to_python_identifier()
    meta = {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}
    archive = base / "my_loans.bento"
    bentoml(build_home / "bentoml", "export", meta["bento_tag"], str(archive), cwd=base)
    assert archive.is_file()
    online_url = f"sqlite:///{base / 'served_online.sqlite'}"
    seed_store(dataset.spec, online_url)
    return Exported(dataset, mine, meta["bento_tag"], archive, build_home, online_url)


def fresh_import(exported: Exported, folder: Path) -> Path:
    """A new, empty BentoML home with only the exported Bento imported into it."""
    home = folder / "bentoml_home"
    home.mkdir(parents=True)
    assert not any(home.iterdir())
    bentoml(home, "import", str(exported.archive), cwd=folder)
    return home


def store_tree(home: Path) -> dict[str, tuple[int, int]]:
    """Every file of the Bento and model stores of ``home``, with size and mtime."""
    out = {}
    for store in ("bentos", "models"):
        for path in (home / store).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                stat = path.stat()
                out[str(path.relative_to(home))] = (stat.st_size, stat.st_mtime_ns)
    return out


def bento_src(home: Path, tag: str) -> Path:
    name, version = tag.split(":")
    return home / "bentos" / name / version / "src"


def elsewhere(folder: Path) -> tuple[Path, Path]:
    """A working directory unrelated to the checkout or the store, and an empty contracts
    folder (a machine without the user's contracts)."""
    cwd = folder / "somewhere_else"
    cwd.mkdir()
    empty = folder / "no_contracts"
    empty.mkdir()
    return cwd, empty


def serve(home: Path, cwd: Path, log: Path, tag: str, **env: str) -> support.ServerProcess:
    """``bentoml serve <tag>`` with nothing of the platform in its environment but ``env``."""
    base = settings.child_env(drop_prefixes=("ML_ASSETS_",))
    base.update(
        {"BENTOML_HOME": str(home), "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1"}
    )
    base.update(env)
    return support.start_server(tag, base, log, cwd=cwd)


def exited(proc: support.ServerProcess, timeout: float = 120) -> int:
    """Wait for a server expected to fail its start; its exit code."""
    try:
        return proc.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.stop()
        raise AssertionError(f"the server did not exit:\n{proc.output()[-3000:]}") from None


@pytest.fixture(scope="module")
def served(
    exported: Exported, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[support.ServerProcess, Path, Path, dict]]:
    """The imported Bento served from an empty home, elsewhere, with no contracts: the server,
    its BentoML home, its state home and the store tree before it started."""
    folder = tmp_path_factory.mktemp("imported")
    home = fresh_import(exported, folder)
    cwd, empty = elsewhere(folder)
    state = folder / "state"
    before = store_tree(home)
    proc = serve(
        home,
        cwd,
        folder / "server.log",
        exported.bento_tag,
        ML_ASSETS_CONTRACTS=str(empty),
        ML_ASSETS_HOME=str(state),
        ML_ASSETS_ONLINE_URL=exported.online_url,
    )
    try:
        proc.wait_ready()
        yield proc, home, state, before
    finally:
        proc.stop()


def offline_features_at(spec: FeatureSpec, rows: pl.DataFrame, when: dt.datetime) -> pl.DataFrame:
    entity, labels = support.demo_tables()
    events = {
        Source.ENTITY: entity_events(spec, entity),
        Source.LABELS: label_events(spec, labels, entity),
    }
    return compute_features(spec, rows.with_columns(pl.lit(when).alias("timestamp")), events)


def test_imported_bento_serves_correct_predictions_over_http_and_grpc(
    served: tuple[support.ServerProcess, Path, Path, dict], exported: Exported
) -> None:
    proc, home, state, before = served
    spec, champ = exported.dataset.spec, exported.champion
    with httpx.Client(base_url=proc.url, timeout=60, trust_env=False) as http:
        info = http.get("/v1/model").json()
        assert info["dataset"] == USER_DATASET
        assert info["model_version"] == champ.version
        assert info["contract_fingerprint"] == spec.contract.fingerprint()
        assert info["features_fingerprint"] == features_fingerprint(spec.file)
        # feature rows
        rows = champ.holdout.head(120)
        expected = score_frame(champ.model, rows, champ.problem, champ.version)
        records = support.feature_records(rows, champ.problem.features)
        resp = http.post("/v1/predict", json={"records": records})
        assert resp.status_code == 200, resp.text
        preds = resp.json()["predictions"]
        want = expected["probability"].to_numpy()
        np.testing.assert_allclose([p["probability"] for p in preds], want, rtol=1e-12)
        assert [p["label"] for p in preds] == expected["prediction"].to_list()
        # entity records: features computed by the CARRIED feature spec, aggregates from the store
        entity, _ = support.demo_tables()
        ents = entity.filter(pl.col("timestamp") >= support.AS_OF).head(80)
        by_keys = score_frame(
            champ.model, offline_features_at(spec, ents, support.AS_OF), champ.problem, "x"
        )
        ent_records = ents.drop("timestamp").to_dicts()
        for r in ent_records:
            r["timestamp"] = support.AS_OF.isoformat()
        resp = http.post("/v1/predict_by_keys", json={"records": ent_records})
        assert resp.status_code == 200, resp.text
        np.testing.assert_allclose(
            [p["probability"] for p in resp.json()["predictions"]],
            by_keys["probability"].to_numpy(),
            rtol=1e-12,
        )
        # the contract it validates with is the carried one: its rules name the fields
        bad = http.post("/v1/predict_by_keys", json={"records": [{**ent_records[0], "x": 1}]})
        assert bad.status_code == 422 and "records[0].x" in bad.text
    with grpc.insecure_channel(proc.grpc_target) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = pb_grpc.PredictorStub(channel)
        assert stub.ModelInfo(pb.ModelInfoRequest()).dataset == USER_DATASET
        g = stub.Predict(pb.PredictRequest(records=support.proto_records(records)))
        np.testing.assert_allclose([p.probability for p in g.predictions], want, rtol=1e-12)
    # the code it runs is the Bento's own copy of the package, not a checkout
    src = bento_src(home, exported.bento_tag)
    assert f"code {src / 'ml_assets'}" in proc.output()
    # graceful stop flushes the prediction log into the configured home, not the store
    assert proc.stop() == 0
    day = dt.datetime.now(dt.UTC).date()
    logged = read_prediction_log(
        USER_DATASET, day, day + dt.timedelta(days=1), state / "prediction_log"
    )
    assert logged.height == len(records) + len(ent_records) + len(records)
    assert store_tree(home) == before


def test_relative_home_fails_the_start_and_writes_nothing_in_the_store(
    exported: Exported, tmp_path: Path
) -> None:
    home = fresh_import(exported, tmp_path)
    cwd, empty = elsewhere(tmp_path)
    before = store_tree(home)
    proc = serve(
        home,
        cwd,
        tmp_path / "server.log",
        exported.bento_tag,
        ML_ASSETS_CONTRACTS=str(empty),
        ML_ASSETS_HOME="relative_state",
        ML_ASSETS_ONLINE_URL=exported.online_url,
    )
    assert exited(proc) != 0
    out = proc.output()
    assert "ML_ASSETS_HOME='relative_state' is a relative path" in out, out[-3000:]
    assert "give an absolute path" in out
    assert store_tree(home) == before
    assert not list(home.rglob("relative_state")) and not (cwd / "relative_state").exists()


def test_given_nothing_it_uses_the_builders_locations_not_the_store(
    exported: Exported, tmp_path: Path
) -> None:
    """No ML_ASSETS_HOME, no log or store variable: the absolute locations recorded at build
    (the building platform's home), whatever the working directory."""
    home = fresh_import(exported, tmp_path)
    cwd, empty = elsewhere(tmp_path)
    before = store_tree(home)
    proc = serve(
        home, cwd, tmp_path / "server.log", exported.bento_tag, ML_ASSETS_CONTRACTS=str(empty)
    )
    try:
        proc.wait_ready()
        records = support.feature_records(
            exported.champion.holdout.head(5), exported.champion.problem.features
        )
        resp = httpx.post(
            f"{proc.url}/v1/predict", json={"records": records}, timeout=60, trust_env=False
        )
        assert resp.status_code == 200, resp.text
    finally:
        assert proc.stop() == 0
    day = dt.datetime.now(dt.UTC).date()
    logged = read_prediction_log(
        USER_DATASET, day, day + dt.timedelta(days=1), exported.build_home / "prediction_log"
    )
    assert logged.height == len(records)
    assert f"online store sqlite:///{exported.build_home / 'online.sqlite'}" in proc.output()
    assert store_tree(home) == before
    assert not list(cwd.iterdir())


def test_an_edited_carried_contract_fails_the_start(exported: Exported, tmp_path: Path) -> None:
    home = fresh_import(exported, tmp_path)
    cwd, empty = elsewhere(tmp_path)
    contract = bento_src(home, exported.bento_tag) / "dataset" / "contract.yaml"
    text = contract.read_text(encoding="utf-8")
    contract.write_text(text.replace("max: 1000000", "max: 2000000", 1), encoding="utf-8")
    proc = serve(
        home, cwd, tmp_path / "server.log", exported.bento_tag, ML_ASSETS_CONTRACTS=str(empty)
    )
    assert exited(proc) != 0
    out = proc.output()
    assert f"{contract}: the contract this Bento carries has fingerprint" in out, out[-3000:]
    assert exported.dataset.contract.fingerprint() in out
    assert "changed after the build" in out


def test_the_bento_carries_the_profiles_so_a_serving_host_can_pick_one(
    exported: Exported, tmp_path: Path
) -> None:
    """A serving host sets ML_ASSETS_PROFILE and has no checkout: the Bento's own code finds
    the profile's file in the Bento and applies its defaults (the production test serves
    the Bento that way)."""
    home = fresh_import(exported, tmp_path)
    cwd, _ = elsewhere(tmp_path)
    src = bento_src(home, exported.bento_tag)
    shipped = sorted(p.parent.name for p in settings.DEPLOY.glob("*/profile.yaml"))
    assert "production" in shipped
    for name in shipped:
        carried = src / "deploy" / name / "profile.yaml"
        assert carried.read_bytes() == (settings.DEPLOY / name / "profile.yaml").read_bytes()
    env = settings.child_env(drop_prefixes=("ML_ASSETS_",))
    env.update({"ML_ASSETS_PROFILE": "production", "PYTHONPATH": str(src)})
    code = (
        "import json, os, ml_assets.settings as s; "
        "print(json.dumps([s.__file__, os.environ.get('ML_ASSETS_EXECUTOR')]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    module, executor = json.loads(proc.stdout.strip().splitlines()[-1])
    assert module == str(src / "ml_assets" / "settings.py")
    assert executor == settings.profile_defaults("production")["ML_ASSETS_EXECUTOR"]
