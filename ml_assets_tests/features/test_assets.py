"""The Dagster assets on the car-loan demo: seeded SQLite -> raw -> validated -> features ->
training set -> online store (SQLite and PostgreSQL), with their checks."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from ml_assets.contracts import Contract, load_contracts
from ml_assets.dataset import Dataset
from ml_assets.features import load_feature_spec
from ml_assets.features.assets import (
    FRESHNESS,
    ONLINE_STORE,
    PARITY,
    POINT_IN_TIME,
    OnlineStore,
    build_feature_definitions,
    run_parity,
)
from ml_assets.features.compute import compute_features, to_utc
from ml_assets.features.offline import read_inputs
from ml_assets.features.online import OnlineClient, read_table, table_name
from ml_assets.features.parity import compare_features
from ml_assets.features.spec import FeatureSpec
from ml_assets.ingest.assets import SqlSource, build_raw_asset
from ml_assets.ingest.demo import seed_demo
from ml_assets.storage import LAKE_IO, Lake, LakeIOManager
from ml_assets.validate.assets import build_validated_assets

from .conftest import drop_store

LAST_FEATURES = "2019-06-24"  # features up to here: the store is as of 2019-07-01, mid-data
AS_OF = dt.datetime(2019, 7, 1, tzinfo=dt.UTC)


@dataclass
class Pipeline:
    contract: Contract
    spec: FeatureSpec
    lake: Lake
    tmp: Path
    source_url: str
    defs: dg.Definitions

    @property
    def dataset(self) -> Dataset:
        return Dataset(self.contract, self.spec)

    def resources(self, store_url: str | None = None) -> dict:
        return {
            "lake": self.lake,
            LAKE_IO: LakeIOManager(lake=self.lake),
            "source": SqlSource(url=self.source_url),
            ONLINE_STORE: OnlineStore(url=store_url or self.sqlite_store),
        }

    @property
    def sqlite_store(self) -> str:
        return f"sqlite:///{self.tmp / 'online.sqlite'}"

    def asset(self, key: dg.AssetKey) -> dg.AssetsDefinition:
        return next(a for a in self.defs.assets if key in a.keys)  # type: ignore[union-attr]

    def materialize(self, keys: list[dg.AssetKey], store_url: str | None = None, **kw):
        return dg.materialize(
            [self.asset(k) for k in keys] + list(self.defs.asset_checks or []),
            resources=self.resources(store_url),
            selection=dg.AssetSelection.assets(*keys) | dg.AssetSelection.checks_for_assets(*keys),
            **kw,
        )


def _range(first: str, last: str) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _meta(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    events = [m for m in result.get_asset_materialization_events() if m.asset_key == key]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """Seed, then raw + validated over every partition, then features up to LAST_FEATURES."""
    contract = load_contracts()["car_loan"]
    tmp = tmp_path_factory.mktemp("features_pipeline")
    source_url = f"sqlite:///{tmp / 'source.sqlite'}"
    seed_demo(source_url, contract)
    defs = build_feature_definitions(Dataset.build(contract))
    p = Pipeline(
        contract,
        load_feature_spec(contract),
        Lake(base_path=str(tmp / "lake")),
        tmp,
        source_url,
        defs,
    )
    keys = Dataset.build(contract).partitions.definition.get_partition_keys()
    ingest = [build_raw_asset(Dataset.build(contract), r) for r in contract.tables] + [
        build_validated_assets(Dataset.build(contract), r) for r in contract.tables
    ]
    assert dg.materialize(ingest, resources=p.resources(), tags=_range(keys[0], keys[-1])).success
    result = p.materialize(
        [Dataset.build(contract).keys.features], tags=_range(keys[0], LAST_FEATURES)
    )
    assert result.success
    return p


def _stored_features(p: Pipeline, partitions: list[str]) -> pl.DataFrame:
    return p.lake.scan(Dataset.build(p.contract).keys.features, partitions).collect()


@pytest.mark.slow
def test_feature_partitions_equal_one_computation_over_all_history(pipeline: Pipeline) -> None:
    """Each partition, computed from its own lookback only, matches a computation over
    everything at once: the lookback reads enough, and nothing more is needed."""
    p = pipeline
    ekey, lkey = (
        Dataset.build(p.contract).keys.validated["entity"],
        Dataset.build(p.contract).keys.validated["labels"],
    )
    keys = Dataset.build(p.contract).partitions.definition.get_partition_keys()
    ent = p.lake.scan(ekey, keys).collect()
    lab = p.lake.scan(lkey, keys).collect()
    from ml_assets.features.compute import entity_events, label_events
    from ml_assets.features.spec import Source

    everything = compute_features(
        p.spec,
        ent.filter(pl.col("timestamp") < AS_OF),
        {Source.ENTITY: entity_events(p.spec, ent), Source.LABELS: label_events(p.spec, lab, ent)},
    ).sort("id")
    # Recompute one partition alone, in its own run, then compare the whole stored table.
    one = p.materialize([Dataset.build(p.contract).keys.features], partition_key="2019-03-04")
    assert one.success
    stored = _stored_features(p, keys[: keys.index(LAST_FEATURES) + 1]).sort("id")
    assert stored.height == everything.height == ent.filter(pl.col("timestamp") < AS_OF).height
    assert stored.select("id", "timestamp").equals(everything.select("id", "timestamp"))
    report = compare_features(everything, stored, p.spec.names)
    assert report.passed, report.examples
    # The aggregates are real: the default rate is known for most rows and differs by band.
    rate = stored.get_column("default_rate_90d_by_salary")
    assert rate.null_count() < 0.05 * stored.height
    by_band = stored.group_by("salary_rank").agg(pl.col("default_rate_90d_by_salary").mean())
    assert by_band.get_column("default_rate_90d_by_salary").n_unique() == by_band.height == 4


@pytest.mark.slow
def test_training_set_is_point_in_time_and_rebuilds_to_the_same_fingerprint(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    key = Dataset.build(p.contract).keys.training_set
    cfg = {"cutoff": "2019-03-15T12:00:00", "window_days": 120}
    run_config = {"ops": {"car_loan__training_set": {"config": cfg}}}
    first = p.materialize([key], run_config=run_config)
    meta = _meta(first, key)
    assert _checks(first)[POINT_IN_TIME].passed
    frame = p.lake.scan(key, [None]).collect()
    cutoff = dt.datetime(2019, 3, 15, 12, tzinfo=dt.UTC)
    start = cutoff - dt.timedelta(days=120)
    assert meta["cutoff"] == cutoff.isoformat() and meta["dagster/row_count"] == frame.height
    assert frame.get_column("timestamp").min() >= start
    assert frame.get_column("timestamp").max() < cutoff
    # Every label used was observed before the cutoff; labels observed later were not used.
    keys = Dataset.build(p.contract).partitions.definition.get_partition_keys()
    lab = p.lake.scan(Dataset.build(p.contract).keys.validated["labels"], keys).collect()
    used = frame.join(lab, on="id", how="left")
    assert used.get_column("observed_at").max() < cutoff
    assert (used.get_column("repaid") == used.get_column("repaid_right")).all()
    late = (
        _stored_features(p, keys[: keys.index(LAST_FEATURES) + 1])
        .filter(pl.col("timestamp") >= start, pl.col("timestamp") < cutoff)
        .join(lab.filter(pl.col("observed_at") >= cutoff), on="id")
    )
    assert late.height > 1000  # many rows' labels arrive after the cutoff ...
    assert frame.join(late, on="id", how="semi").height == 0  # ... and none of them is used
    assert meta["rows_without_label_by_cutoff"] == late.height
    assert meta["rows_in_window"] == frame.height + late.height
    assert set(meta["target_stats"]) == {"0", "1"}
    assert meta["features"] == p.spec.names

    again = p.materialize([key], run_config=run_config)
    assert _meta(again, key)["fingerprint"] == meta["fingerprint"]
    other = {"ops": {"car_loan__training_set": {"config": {**cfg, "window_days": 119}}}}
    assert _meta(p.materialize([key], run_config=other), key)["fingerprint"] != meta["fingerprint"]

    default = p.materialize([key])  # cutoff: end of the latest feature partition
    assert _meta(default, key)["cutoff"] == AS_OF.isoformat()

    # A cutoff before any label arrived: an empty set warns, it does not block or fail the run.
    early = {"cutoff": "2018-01-08T00:00:00", "window_days": 7}
    result = p.materialize([key], run_config={"ops": {"car_loan__training_set": {"config": early}}})
    assert result.success and _meta(result, key)["dagster/row_count"] == 0
    check = _checks(result)[POINT_IN_TIME]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN


@pytest.mark.slow
def test_online_store_on_sqlite_is_fresh_in_parity_and_idempotent(pipeline: Pipeline) -> None:
    p = pipeline
    key = Dataset.build(p.contract).keys.online
    result = p.materialize([key])
    assert result.success
    checks = _checks(result)
    assert checks[PARITY].passed, checks[PARITY].description
    assert checks[FRESHNESS].passed
    assert _meta(result, key)["as_of"] == AS_OF.isoformat()
    engine = sa.create_engine(p.sqlite_store)
    first = read_table(engine, "car_loan")
    assert p.materialize([key]).success
    second = read_table(engine, "car_loan")
    engine.dispose()
    assert first.drop("updated_at").equals(second.drop("updated_at"))
    assert first.height == 4  # one row per salary band
    with OnlineClient(p.sqlite_store) as client:
        got = client.get("car_loan", ["0 - 20K €", "60K+ €"])
        assert got.get_column("applications_7d_by_salary").min() > 0
        assert got.get_column("outcomes_90d_by_salary").min() > 0


@pytest.mark.slow
def test_online_store_on_postgresql(pipeline: Pipeline, pg_url: str) -> None:
    p = pipeline
    drop_store(pg_url, "car_loan")
    try:
        result = p.materialize([Dataset.build(p.contract).keys.online], store_url=pg_url)
        checks = _checks(result)
        assert result.success and checks[PARITY].passed and checks[FRESHNESS].passed
        engine = sa.create_engine(pg_url)
        pg = read_table(engine, "car_loan")
        engine.dispose()
        engine = sa.create_engine(p.sqlite_store)
        # The SQLite store exists only if the SQLite test ran first in this process.
        has_sqlite = sa.inspect(engine).has_table(table_name("car_loan"))
        lite = read_table(engine, "car_loan") if has_sqlite else pl.DataFrame()
        engine.dispose()
        if lite.height:  # both stores hold the same values
            cols = [c for c in pg.columns if c not in ("updated_at", "as_of")]
            assert compare_features(lite.select(cols), pg.select(cols), cols[2:]).passed
    finally:
        drop_store(pg_url, "car_loan")


@pytest.mark.slow
def test_parity_on_the_car_loan_demo_catches_a_wrong_store(pipeline: Pipeline) -> None:
    """Parity on 1000 demo rows; then a store whose value is off by a little fails it."""
    p = pipeline
    assert p.materialize([Dataset.build(p.contract).keys.online]).success
    report, rows = run_parity(p.dataset, p.lake, OnlineStore(url=p.sqlite_store), sample_rows=1000)
    assert report.passed and rows.passed
    assert report.rows == rows.rows == 1000
    inputs = read_inputs(p.dataset, p.lake, AS_OF, AS_OF)
    assert inputs.labels_without_entity == 0
    # The parity really looked at non-trivial aggregates.
    broken = p.tmp / "broken.sqlite"
    shutil.copy(p.tmp / "online.sqlite", broken)
    engine = sa.create_engine(f"sqlite:///{broken}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE online_car_loan SET mean_car_value_30d_by_salary = "
            "mean_car_value_30d_by_salary * (1 + 1e-6) WHERE group_value = '40K - 60K €'"
        )
    engine.dispose()
    report, _ = run_parity(
        p.dataset, p.lake, OnlineStore(url=f"sqlite:///{broken}"), sample_rows=1000
    )
    assert not report.passed
    assert {k for k, v in report.mismatches.items() if v} == {"mean_car_value_30d_by_salary"}


@pytest.mark.slow
def test_freshness_fails_until_the_store_catches_up(pipeline: Pipeline) -> None:
    p = pipeline
    assert p.materialize([Dataset.build(p.contract).keys.online]).success
    assert p.materialize(
        [Dataset.build(p.contract).keys.features], partition_key="2019-07-01"
    ).success
    checks_only = dg.materialize(
        [p.asset(Dataset.build(p.contract).keys.online), *(p.defs.asset_checks or [])],
        resources=p.resources(),
        selection=dg.AssetSelection.checks_for_assets(Dataset.build(p.contract).keys.online),
    )
    assert not _checks(checks_only)[FRESHNESS].passed
    caught_up = p.materialize([Dataset.build(p.contract).keys.online])
    assert _checks(caught_up)[FRESHNESS].passed
    with OnlineClient(p.sqlite_store) as client:
        assert client.as_of("car_loan") == to_utc(dt.datetime(2019, 7, 8))


def test_feature_definitions_of_every_bundled_dataset_load_with_their_resources() -> None:
    for contract in load_contracts().values():
        defs = dg.Definitions.merge(
            build_feature_definitions(Dataset.build(contract)),
            dg.Definitions(
                resources={
                    "lake": Lake(),
                    LAKE_IO: LakeIOManager(lake=Lake()),
                    ONLINE_STORE: OnlineStore(),
                }
            ),
        )
        dg.Definitions.validate_loadable(defs)
        keys = {k for a in defs.assets or [] for k in a.keys}  # type: ignore[union-attr]
        want = {
            Dataset.build(contract).keys.features,
            Dataset.build(contract).keys.training_set,
            Dataset.build(contract).keys.online,
        }
        assert keys == want
        checks = {s.name for c in defs.asset_checks or [] for s in c.check_specs}
        assert checks == {FRESHNESS, PARITY}
