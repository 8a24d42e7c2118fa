"""A dataset whose only time is an integer year, onboarded by contract alone: yearly partitions,
``stored_as: year`` event and observed-at times, on SQLite and PostgreSQL, through the CLI a user
runs (``ml-assets check``, ``ml-assets run``: pipeline, train with its Bento, score) and, on
SQLite and PostgreSQL, a prediction served by the real ``bentoml serve`` of that Bento.

Expectations from the data's construction (:mod:`ml_assets_tests.census`): ten waves of
:data:`~ml_assets_tests.census.PEOPLE` answers, one per yearly partition, none quarantined; each
income known the year after its answer, so a training set cut off at the end of 2024 holds the
waves 2015 .. 2023.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ml_assets.settings import child_env
from ml_assets.storage import Lake
from ml_assets.testing import serve_env, start_server
from ml_assets_tests import census

pytestmark = pytest.mark.slow
CLI = Path(sys.executable).parent / "ml-assets"


def _cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    environ = child_env(drop_prefixes=("ML_ASSETS_", "DAGSTER_", "MLFLOW_"))
    environ.update(env)
    return subprocess.run(
        [str(CLI), *argv], capture_output=True, text=True, env=environ, timeout=900
    )


def _onboard(
    root: Path, url: str, upper: bool = False, one_table: bool = False
) -> tuple[dict[str, str], subprocess.CompletedProcess[str]]:
    census.seed(url, upper=upper, one_table=one_table)
    contracts = root / "contracts"
    path = census.write_contract(contracts, upper=upper, one_table=one_table)
    env = {
        "ML_ASSETS_HOME": str(root / "home"),
        "ML_ASSETS_CONTRACTS": str(contracts),
        "ML_ASSETS_SOURCE_URL": url,
    }
    checked = _cli(env, "check", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{census.PEOPLE * len(census.YEARS):,} in the partitioning" in checked.stdout
    ran = _cli(env, "run", "census")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    return env, ran


def _lake_checks(env: dict[str, str], out: str) -> None:
    """What the runs left in the lake, against the data's construction."""
    assert "census_pipeline: 10 partitions (2015-01-01 .. 2024-01-01) in one run, succeeded" in out
    lake = Lake(base_path=str(Path(env["ML_ASSETS_HOME"]) / "lake"))
    import dagster as dg

    entity = lake.scan(dg.AssetKey(["census", "validated_entity"]), ["2019-01-01"]).collect()
    assert entity.height == census.PEOPLE
    assert entity.get_column("year").unique().to_list() == [dt.datetime(2019, 1, 1, tzinfo=dt.UTC)]
    labels = lake.scan(dg.AssetKey(["census", "validated_labels"]), ["2020-01-01"]).collect()
    # the incomes observed in 2020 are those of the 2019 answers
    assert labels.height == census.PEOPLE
    assert labels.get_column("person_id").min() == 4 * census.PEOPLE
    quarantined = dg.AssetKey(["census", "quarantine_entity"])
    assert (
        sum(lake.scan(quarantined, [k]).collect().height for k in ["2015-01-01", "2024-01-01"]) == 0
    )
    training = lake.scan(dg.AssetKey(["census", "training_set"]), [None]).collect()
    assert training.height == 9 * census.PEOPLE  # 2015 .. 2023: labelled by the end of 2024


def _serve_and_check(
    env: dict[str, str], out: str, tmp_path: Path, not_inputs: tuple[str, ...] = ()
) -> None:
    """The Bento the run built, under ``bentoml serve``: a prediction within the data's
    construction, a category outside the contract and a learned one unseen, both 422;
    each of ``not_inputs`` (a column of the source that is no feature, e.g. the target) in a
    record is 422 too, and in neither record schema of the OpenAPI document."""
    found = re.search(r"bento (census_service:[\w.-]+)", out)
    assert found, out
    home = Path(env["ML_ASSETS_HOME"])
    server = start_server(
        found.group(1),
        serve_env(home, home / "bentoml", ML_ASSETS_CONTRACTS=env["ML_ASSETS_CONTRACTS"]),
        tmp_path / "server.log",
    )
    try:
        server.wait_ready(180)
        record = {"age": 40, "hours": 38.0, "sector": "services", "occupation": "occ_07"}
        with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as http:
            resp = http.post("/v1/predict", json={"records": [record]})
            assert resp.status_code == 200, resp.text
            [prediction] = resp.json()["predictions"]
            # the data's income is about 400 * hours + 150 * age + 10,000 for services
            assert 20_000 < prediction["value"] < 40_000, prediction
            bad = http.post("/v1/predict", json={"records": [{**record, "sector": "mining"}]})
            assert bad.status_code == 422 and "records[0].sector" in bad.text
            # occupation's 55 values were learned from the training data, not listed
            unseen = {**record, "occupation": "occ_99"}
            bad = http.post("/v1/predict", json={"records": [unseen]})
            assert bad.status_code == 422 and "records[0].occupation" in bad.text, bad.text
            assert 'expected one of [\\"occ_00\\"' in bad.text  # the learned values, listed
            spec = http.get("/v1/openapi.json").json()
            assert len(json.dumps(spec).split('"occ_')) > 55  # the values in the schema
            for name in not_inputs:
                bad = http.post("/v1/predict", json={"records": [{**record, name: 1.0}]})
                assert bad.status_code == 422 and f"records[0].{name}" in bad.text, bad.text
                for record_kind in ("FeatureRecord", "EntityRecord"):
                    assert name not in spec["components"]["schemas"][record_kind]["properties"]
    finally:
        server.stop()


@pytest.mark.serve
def test_an_integer_year_dataset_runs_end_to_end_and_serves_on_sqlite(tmp_path: Path) -> None:
    env, ran = _onboard(tmp_path, f"sqlite:///{tmp_path / 'census.sqlite'}")
    _lake_checks(env, ran.stdout)
    _serve_and_check(env, ran.stdout, tmp_path)
    # a user's own dataset is monitored from the command line: a run per scored year, then the
    # summary; the results are in the lake, against the champion's reference
    monitored = _cli(env, "run", "census", "--only", "monitor", "--from", "2022-01-01")
    assert monitored.returncode == 0, monitored.stdout[-3000:] + monitored.stderr[-3000:]
    assert (
        "census_monitor: 3 partitions (2022-01-01 .. 2024-01-01), a run each, and the summary, "
        "succeeded" in monitored.stdout
    ), monitored.stdout
    import dagster as dg
    import polars as pl

    lake = Lake(base_path=str(Path(env["ML_ASSETS_HOME"]) / "lake"))
    results = lake.scan(dg.AssetKey(["census", "monitoring"]), ["2023-01-01"]).collect()
    assert results.get_column("reference").unique().to_list() == ["census@v1"]
    estimated = results.filter(pl.col("calculator") == "estimated_performance")
    assert estimated.height and estimated.get_column("value").is_not_null().all()


@pytest.mark.parametrize("where", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.serve
def test_upper_case_source_names_are_read_under_the_contracts_names(
    where: str, tmp_path: Path, request
) -> None:
    """The census published with upper-case tables and columns (``CENSUS_PEOPLE.AGEP``,
    ``"Hours Worked"``, quoted identifiers on PostgreSQL): the contract names its columns in
    snake case, two of them with ``source:``; check and the runs find every column."""
    url = (
        request.getfixturevalue("fresh_pg_url")
        if where == "postgres"
        else (f"sqlite:///{tmp_path / 'census.sqlite'}")
    )
    env, ran = _onboard(tmp_path, url, upper=True)
    _lake_checks(env, ran.stdout)
    assert "census_train: 1 run, succeeded" in ran.stdout and "champion: v1" in ran.stdout
    if where == "postgres":  # trained from PostgreSQL, served: the whole path on that engine
        _serve_and_check(env, ran.stdout, tmp_path)
    else:
        assert re.search(r"bento census_service:v1-\w+", ran.stdout), ran.stdout


@pytest.mark.parametrize("where", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.serve
def test_labels_in_the_entity_table_known_a_year_later(where: str, tmp_path: Path, request) -> None:
    """The income as a column of the answers' table, known 366 days after its wave: the
    entity reads the answers without it and the labels read it, neither warning of the other's
    columns as extra; each income lands in the partition of the year after its wave (the 2019
    wave's in 2020, known at 2020-01-02); the features never hold it; the training set cut
    off at the end of 2024 holds the waves 2015 .. 2023; and the Bento trained from that
    one table serves a prediction under ``bentoml serve``, refusing the income as an input.
    On SQLite and on PostgreSQL: the whole path on each engine."""
    import dagster as dg

    url = (
        request.getfixturevalue("fresh_pg_url")
        if where == "postgres"
        else f"sqlite:///{tmp_path / 'census.sqlite'}"
    )
    env, ran = _onboard(tmp_path, url, one_table=True)
    assert "schema_conformance" not in ran.stdout, ran.stdout  # no warning, no failure
    lake = Lake(base_path=str(Path(env["ML_ASSETS_HOME"]) / "lake"))
    labels = lake.scan(dg.AssetKey(["census", "validated_labels"]), ["2020-01-01"]).collect()
    assert labels.height == census.PEOPLE
    assert labels.get_column("person_id").min() == 4 * census.PEOPLE  # the 2019 wave
    assert labels.get_column("year").unique().to_list() == [dt.datetime(2020, 1, 2, tzinfo=dt.UTC)]
    entity = lake.scan(dg.AssetKey(["census", "validated_entity"]), ["2019-01-01"]).collect()
    assert "income" not in entity.columns and entity.height == census.PEOPLE
    features = lake.scan(dg.AssetKey(["census", "features"]), ["2019-01-01"]).collect()
    assert "income" not in features.columns
    training = lake.scan(dg.AssetKey(["census", "training_set"]), [None]).collect()
    assert training.height == 9 * census.PEOPLE
    assert "census_train: 1 run, succeeded" in ran.stdout and "champion: v1" in ran.stdout
    _serve_and_check(env, ran.stdout, tmp_path, not_inputs=("income",))
