"""Dagster wiring of the features: feature table, training set, online store and their checks.

Thin: every asset reads what it needs from the lake, calls the plain functions of
:mod:`ml_assets.features.compute` / :mod:`~ml_assets.features.online`, and reports metadata.
"""

import datetime as dt
import logging
import math
import os
from dataclasses import dataclass

import dagster as dg
import polars as pl
import sqlalchemy as sa

from ml_assets import settings
from ml_assets.contracts.model import Contract
from ml_assets.features.compute import (
    aggregate_snapshot,
    build_training_set,
    compute_features,
    entity_events,
    feature_schema,
    fingerprint,
    label_events,
    target_stats,
    to_utc,
)
from ml_assets.features.online import (
    OnlineClient,
    known_groups,
    write_snapshot,
)
from ml_assets.features.parity import parity_check, row_parity
from ml_assets.features.spec import FeatureSpec, Source, load_feature_spec
from ml_assets.ingest.assets import LAKE_IO
from ml_assets.partitions import partitions_def
from ml_assets.storage import Lake
from ml_assets.validate.assets import validated_key

log = logging.getLogger(__name__)

ONLINE_STORE = "online_store"
FRESHNESS = "online_store_fresh"
PARITY = "online_offline_parity"
POINT_IN_TIME = "point_in_time"
PARITY_SAMPLE_ROWS = 200


def features_key(contract: Contract) -> dg.AssetKey:
    return dg.AssetKey([contract.name, "features"])


def training_set_key(contract: Contract) -> dg.AssetKey:
    return dg.AssetKey([contract.name, "training_set"])


def online_key(contract: Contract) -> dg.AssetKey:
    return dg.AssetKey([contract.name, "online_features"])


class OnlineStore(dg.ConfigurableResource):
    """The online feature store: a SQL database reached through SQLAlchemy.

    ``url`` (PostgreSQL in production), else ``ML_ASSETS_ONLINE_URL``, else a SQLite file
    ``online.sqlite`` under ``ML_ASSETS_HOME``.
    """

    url: str | None = None

    def resolved_url(self) -> str:
        if self.url:
            return self.url
        s = settings.current()
        if s.online_url is None:
            s.root.mkdir(parents=True, exist_ok=True)
        return s.online_store_url

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.resolved_url())

    def client(self) -> OnlineClient:
        return OnlineClient(self.resolved_url())

    def safe_url(self) -> str:
        return sa.make_url(self.resolved_url()).render_as_string(hide_password=True)


class TrainingSetConfig(dg.Config):
    """Which rows a training set holds."""

    cutoff: str | None = None
    """ISO datetime (naive = UTC): rows before it, labels observed before it. Default: the end
    of the latest materialized feature partition."""
    window_days: float = 365.0
    """Rows with event time in [cutoff - window_days, cutoff)."""


# --- reading the lake ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    key: str
    start: dt.datetime
    end: dt.datetime


def _parts(pdef: dg.TimeWindowPartitionsDefinition) -> list[_Part]:
    out = []
    for key in pdef.get_partition_keys():
        tw = pdef.time_window_for_partition_key(key)
        out.append(_Part(key, to_utc(tw.start), to_utc(tw.end)))
    return out


def _overlapping(parts: list[_Part], start: dt.datetime, end: dt.datetime) -> list[str]:
    return [p.key for p in parts if p.start < end and p.end > start]


def _scan(lake: Lake, key: dg.AssetKey, partitions: list[str], why: str) -> pl.LazyFrame | None:
    """The partitions as one lazy frame; every one must be materialized."""
    missing = [p for p in partitions if not lake.exists(key, p)]
    if missing:
        raise FileNotFoundError(
            f"{key.to_user_string()} partitions {missing} are not materialized; {why} needs them"
        )
    return lake.scan(key, partitions) if partitions else None


def _latest(lake: Lake, key: dg.AssetKey, parts: list[_Part]) -> _Part | None:
    for p in reversed(parts):
        if lake.exists(key, p.key):
            return p
    return None


@dataclass
class Inputs:
    """Entity rows and events for features over [start, end), read from validated partitions."""

    entity: pl.DataFrame
    events: dict[Source, pl.DataFrame | None]
    labels_without_entity: int = 0


def read_inputs(spec: FeatureSpec, lake: Lake, start: dt.datetime, end: dt.datetime) -> Inputs:
    """Everything features of rows in [start, end) need: entity rows from start - longest
    window on, labels observed in that span, and the group columns of those labels' rows.

    Events come from every partition overlapping [start - window, end), all of which must be
    materialized. A label's entity row may be older than the window: its group is looked up in
    every materialized entity partition before ``end``.
    """
    contract = spec.contract
    parts = _parts(partitions_def(contract))
    lookback = start - spec.max_window
    why = f"{spec.dataset} features of [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})"
    ekey, lkey = validated_key(contract, "entity"), validated_key(contract, "labels")
    scanned = _scan(lake, ekey, _overlapping(parts, lookback, end), why)
    t = pl.col(spec.event_time)
    empty = pl.DataFrame(schema=_validated_schema(contract, "entity"))
    entity = scanned.filter(t >= lookback, t < end).collect() if scanned is not None else empty
    events: dict[Source, pl.DataFrame | None] = {Source.ENTITY: None, Source.LABELS: None}
    if any(a.source is Source.ENTITY for a in spec.aggregates):
        events[Source.ENTITY] = entity_events(spec, entity).collect()
    missing = 0
    if any(a.source is Source.LABELS for a in spec.aggregates):
        lab = contract.labels
        labels = _scan(lake, lkey, _overlapping(parts, lookback, end), why)
        o = pl.col(lab.observed_at)
        labels = (
            labels.filter(o >= lookback, o < end).collect()
            if labels is not None
            else pl.DataFrame(schema=_validated_schema(contract, "labels"))
        )
        history = [p.key for p in parts if p.start < end and lake.exists(ekey, p.key)]
        owners = (
            lake.scan(ekey, history)
            .select(*spec.key, *spec.group_columns)
            .join(
                labels.lazy().select(
                    [pl.col(k).alias(e) for k, e in zip(lab.key_columns, spec.key, strict=True)]
                ),
                on=spec.key,
                how="semi",
            )
            if history
            else empty.lazy()
        )
        events[Source.LABELS] = label_events(spec, labels, owners).collect()
        missing = labels.height - events[Source.LABELS].height
    return Inputs(entity=entity, events=events, labels_without_entity=missing)


def _validated_schema(contract: Contract, role: str) -> dict[str, pl.DataType]:
    from ml_assets.features.spec import COLUMN_DTYPES

    return {n: COLUMN_DTYPES[c.type] for n, c in contract.tables[role].columns.items()}


def _lookback_partitions(contract: Contract, window: dt.timedelta) -> int:
    """How many partitions back the longest window reaches (shortest partition length)."""
    shortest = {"daily": 1, "weekly": 7, "monthly": 28}[contract.partitioning.granularity.value]
    return math.ceil(window / dt.timedelta(days=shortest))


# --- assets ----------------------------------------------------------------------------------


def build_features_asset(spec: FeatureSpec) -> dg.AssetsDefinition:
    """The feature table: every feature of every entity row, as of the row's event time."""
    contract = spec.contract
    pdef = partitions_def(contract)
    mapping = dg.TimeWindowPartitionMapping(
        start_offset=-_lookback_partitions(contract, spec.max_window),
        allow_nonexistent_upstream_partitions=True,
    )
    schema = feature_schema(spec)

    @dg.asset(
        key=features_key(contract),
        partitions_def=pdef,
        backfill_policy=dg.BackfillPolicy.single_run(),
        io_manager_key=LAKE_IO,
        deps=[
            dg.AssetDep(validated_key(contract, "entity"), partition_mapping=mapping),
            dg.AssetDep(validated_key(contract, "labels"), partition_mapping=mapping),
        ],
        group_name=contract.name,
        kinds={"polars", "parquet"},
        tags={"stage": "features", "dataset": contract.name},
        automation_condition=dg.AutomationCondition.eager(),
        description=(
            f"Features of every {contract.name} entity row in the partition, as of the row's "
            f"event time, declared in {os.path.basename(spec.origin)}: row transforms, "
            "trailing-window aggregates over events strictly before the row (labels by when "
            "they were observed), request-time parts. Training sets read these rows, and the "
            "serving path runs the same code, so training and serving cannot drift apart."
        ),
        metadata={
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(name=n, type=str(t)) for n, t in schema.items()]
            ),
            "features_file": spec.origin,
            "longest_window": str(spec.max_window),
        },
    )
    def features(
        context: dg.AssetExecutionContext, lake: Lake
    ) -> dg.MaterializeResult[dict[str, pl.DataFrame]]:
        keys = sorted(context.partition_keys)
        first = pdef.time_window_for_partition_key(keys[0])
        last = pdef.time_window_for_partition_key(keys[-1])
        start, end = to_utc(first.start), to_utc(last.end)
        inputs = read_inputs(spec, lake, start, end)
        t = pl.col(spec.event_time)
        rows = inputs.entity.filter(t >= start, t < end)
        table = compute_features(spec, rows, inputs.events)
        out: dict[str, pl.DataFrame] = {}
        for pk in keys:
            tw = pdef.time_window_for_partition_key(pk)
            lo, hi = to_utc(tw.start), to_utc(tw.end)
            out[pk] = table.filter(t >= lo, t < hi).sort(spec.key)
        if inputs.labels_without_entity:
            context.log.warning(
                f"{inputs.labels_without_entity} labels have no materialized entity row: "
                "left out of label aggregates"
            )
        context.log.info(f"{contract.name} features: {table.height} rows in {len(keys)} partitions")
        return dg.MaterializeResult(
            value=out,
            metadata={
                "dagster/row_count": table.height,
                "partitions": len(keys),
                "features": dg.MetadataValue.json(spec.names),
                "labels_without_entity": inputs.labels_without_entity,
                "null_rate": dg.MetadataValue.json(
                    {
                        n: round(table.get_column(n).null_count() / table.height, 6)
                        for n in spec.names
                    }
                    if table.height
                    else {}
                ),
            },
        )

    return features


def resolve_cutoff(spec: FeatureSpec, lake: Lake, cutoff: str | None) -> tuple[dt.datetime, str]:
    """The cutoff of a training set and where it came from."""
    if cutoff:
        try:
            value = dt.datetime.fromisoformat(cutoff)
        except ValueError as exc:
            raise ValueError(f"cutoff {cutoff!r} is not an ISO datetime") from exc
        return to_utc(value), "config"
    latest = _latest(lake, features_key(spec.contract), _parts(partitions_def(spec.contract)))
    if latest is None:
        raise FileNotFoundError(f"{spec.dataset}: no feature partition is materialized yet")
    return latest.end, f"end of feature partition {latest.key}"


def training_set_frame(
    spec: FeatureSpec, lake: Lake, cutoff: dt.datetime, window: dt.timedelta
) -> tuple[pl.DataFrame, dict]:
    """The training set at ``cutoff`` read from the lake, and facts about it."""
    contract = spec.contract
    parts = _parts(partitions_def(contract))
    start = cutoff - window
    why = f"the {spec.dataset} training set of [{start:%Y-%m-%d}, {cutoff:%Y-%m-%d %H:%M})"
    feats = _scan(lake, features_key(contract), _overlapping(parts, start, cutoff), why)
    labels = _scan(lake, validated_key(contract, "labels"), _overlapping(parts, start, cutoff), why)
    if feats is None or labels is None:
        raise ValueError(f"{why}: no partition of {contract.name} overlaps it")
    t = pl.col(spec.event_time)
    in_window = feats.filter(t >= start, t < cutoff).select(pl.len()).collect().item()
    frame = build_training_set(spec, feats, labels, cutoff, window)
    facts = {
        "rows_in_window": in_window,
        "rows_without_label_by_cutoff": in_window - frame.height,
        "partitions": _overlapping(parts, start, cutoff),
    }
    return frame, facts


def build_training_set_asset(spec: FeatureSpec) -> dg.AssetsDefinition:
    """A point-in-time correct training set at a cutoff."""
    contract = spec.contract
    key = training_set_key(contract)

    @dg.asset(
        key=key,
        io_manager_key=LAKE_IO,
        deps=[features_key(contract), validated_key(contract, "labels")],
        group_name=contract.name,
        kinds={"polars", "parquet"},
        tags={"stage": "training_set", "dataset": contract.name},
        check_specs=[
            dg.AssetCheckSpec(
                POINT_IN_TIME,
                asset=key,
                blocking=True,
                description="Rows lie in [cutoff - window, cutoff) and every row has its label "
                "(error: blocks downstream); the set is not empty (warning: labels may simply not "
                "have arrived yet for a recent cutoff).",
            )
        ],
        description=(
            f"Rows of {contract.name} with event time in [cutoff - window, cutoff), each with "
            "its features as of its own event time (from the feature table) and its label as "
            "known at the cutoff: a label observed at or after the cutoff is not used, and its "
            "row is dropped. No feature from the future, no label from after the cutoff. "
            "Content-fingerprinted: the same inputs rebuild to the same fingerprint."
        ),
    )
    def training_set(
        context: dg.AssetExecutionContext, config: TrainingSetConfig, lake: Lake
    ) -> dg.MaterializeResult:
        cutoff, origin = resolve_cutoff(spec, lake, config.cutoff)
        window = dt.timedelta(days=config.window_days)
        frame, facts = training_set_frame(spec, lake, cutoff, window)
        t = frame.get_column(spec.event_time)
        in_bounds = frame.height == 0 or (t.min() >= cutoff - window and t.max() < cutoff)
        unlabelled = frame.get_column(contract.target).null_count()
        broken = not in_bounds or unlabelled > 0
        fp = fingerprint(frame, spec.key)
        context.log.info(
            f"{contract.name} training set at {cutoff.isoformat()}: {frame.height} rows, "
            f"fingerprint {fp}"
        )
        # Written here (not through the IO manager) because the asset also reports a check;
        # the lake IO manager loads it for downstream assets from the same place.
        written = lake.write(key, None, frame)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": frame.height,
                "lake_path": dg.MetadataValue.path(written["path"]),
                "cutoff": cutoff.isoformat(),
                "cutoff_from": origin,
                "window_days": config.window_days,
                "window_start": (cutoff - window).isoformat(),
                "rows_in_window": facts["rows_in_window"],
                "rows_without_label_by_cutoff": facts["rows_without_label_by_cutoff"],
                "label_coverage": round(frame.height / max(facts["rows_in_window"], 1), 6),
                "target_stats": dg.MetadataValue.json(target_stats(spec, frame)),
                "features": dg.MetadataValue.json(spec.names),
                "fingerprint": fp,
                "feature_partitions": len(facts["partitions"]),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=POINT_IN_TIME,
                    passed=not broken and frame.height > 0,
                    severity=dg.AssetCheckSeverity.ERROR if broken else dg.AssetCheckSeverity.WARN,
                    description=(
                        f"rows outside the window: {not in_bounds}, unlabelled rows: {unlabelled}"
                        if broken
                        else (
                            "no row has a label observed before the cutoff"
                            if not frame.height
                            else None
                        )
                    ),
                    metadata={"rows": frame.height, "unlabelled": unlabelled},
                )
            ],
        )

    return training_set


def snapshot_inputs(spec: FeatureSpec, lake: Lake) -> tuple[dt.datetime, Inputs]:
    """The online store's as-of time (end of the latest feature partition) and its events."""
    latest = _latest(lake, features_key(spec.contract), _parts(partitions_def(spec.contract)))
    if latest is None:
        raise FileNotFoundError(f"{spec.dataset}: no feature partition is materialized yet")
    return latest.end, read_inputs(spec, lake, latest.end, latest.end)


def build_online_asset(spec: FeatureSpec) -> dg.AssetsDefinition:
    """The online store: the latest value of every group-keyed aggregate, in SQL."""
    contract = spec.contract

    @dg.asset(
        key=online_key(contract),
        deps=[
            features_key(contract),
            validated_key(contract, "entity"),
            validated_key(contract, "labels"),
        ],
        group_name=contract.name,
        kinds={"sql", "polars"},
        tags={"stage": "online", "dataset": contract.name},
        automation_condition=dg.AutomationCondition.eager(),
        description=(
            f"The latest value of every {contract.name} aggregate per group, as of the end of "
            "the latest feature partition, upserted into the online store's SQL table in one "
            "transaction. What the serving path looks up; computed by the same function as the "
            "feature table, at that single time."
        ),
    )
    def online_features(
        context: dg.AssetExecutionContext, lake: Lake, online_store: OnlineStore
    ) -> dg.MaterializeResult:
        as_of, inputs = snapshot_inputs(spec, lake)
        engine = online_store.engine()
        try:
            snapshot = aggregate_snapshot(
                spec, inputs.events, as_of, known_groups(engine, contract.name)
            )
            written = write_snapshot(engine, spec, snapshot, as_of)
        finally:
            engine.dispose()
        context.log.info(
            f"{contract.name}: {written['rows']} groups as of {as_of.isoformat()} "
            f"in {written['table']} at {online_store.safe_url()}"
        )
        return dg.MaterializeResult(
            metadata={
                "as_of": as_of.isoformat(),
                "dagster/row_count": written["rows"],
                "table": written["table"],
                "store": online_store.safe_url(),
                "features": dg.MetadataValue.json([a.name for a in spec.aggregates]),
                "snapshot": dg.MetadataValue.md(_markdown(snapshot.head(20))),
            }
        )

    return online_features


def _markdown(frame: pl.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return head + "\n".join(
        "| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in frame.rows()
    )


def build_online_checks(spec: FeatureSpec) -> list[dg.AssetChecksDefinition]:
    """Freshness of the online store and parity of the online path with the offline one."""
    contract = spec.contract
    key = online_key(contract)

    @dg.asset_check(
        asset=key,
        name=FRESHNESS,
        description="The store's as_of equals the end of the latest materialized feature "
        "partition: serving sees the aggregates of the newest data.",
    )
    def fresh(lake: Lake, online_store: OnlineStore) -> dg.AssetCheckResult:
        latest = _latest(lake, features_key(contract), _parts(partitions_def(contract)))
        with online_store.client() as client:
            as_of = client.as_of(contract.name)
        want = latest.end if latest else None
        return dg.AssetCheckResult(
            passed=as_of is not None and as_of == want,
            severity=dg.AssetCheckSeverity.WARN,
            description=None if as_of == want else f"store as of {as_of}, features to {want}",
            metadata={
                "store_as_of": str(as_of),
                "latest_feature_partition_end": str(want),
            },
        )

    @dg.asset_check(
        asset=key,
        name=PARITY,
        blocking=True,
        description=f"For {PARITY_SAMPLE_ROWS} sample entity rows, the serving path (request "
        "payload -> row transforms + store lookup + request-time features) returns exactly the "
        "features the offline path computes for the same rows stamped at the store's as_of; "
        "and the row features served at each row's own time equal the stored feature table.",
    )
    def parity(lake: Lake, online_store: OnlineStore) -> dg.AssetCheckResult:
        report, rows_report = run_parity(spec, lake, online_store)
        passed = report.passed and rows_report.passed
        return dg.AssetCheckResult(
            passed=passed,
            description=None
            if passed
            else "; ".join(report.examples + rows_report.examples)[:2000],
            metadata={
                "rows": report.rows,
                "mismatches_as_of_store": dg.MetadataValue.json(report.mismatches),
                "mismatches_row_features_vs_feature_table": dg.MetadataValue.json(
                    rows_report.mismatches
                ),
                "max_abs_diff": dg.MetadataValue.json(report.max_abs_diff),
            },
        )

    return [fresh, parity]


def run_parity(
    spec: FeatureSpec, lake: Lake, online_store: OnlineStore, sample_rows: int = PARITY_SAMPLE_ROWS
) -> tuple:
    """Both parity comparisons against the store as it is now (see :mod:`.parity`)."""
    contract = spec.contract
    with online_store.client() as client:
        as_of = client.as_of(contract.name)
        if as_of is None:
            raise LookupError(f"{contract.name}: the online store has no snapshot")
        inputs = read_inputs(spec, lake, as_of, as_of)
        sample, stored = _parity_sample(spec, lake, as_of, sample_rows)
        report = parity_check(spec, sample, inputs.events, client, as_of)
    return report, row_parity(spec, sample, stored)


def _parity_sample(
    spec: FeatureSpec, lake: Lake, as_of: dt.datetime, n: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Up to n entity rows from the newest non-empty feature partitions before as_of, and their
    stored feature-table rows."""
    contract = spec.contract
    ekey, fkey = validated_key(contract, "entity"), features_key(contract)
    for p in reversed([p for p in _parts(partitions_def(contract)) if p.end <= as_of]):
        if not (lake.exists(fkey, p.key) and lake.exists(ekey, p.key)):
            continue
        rows = lake.scan(ekey, [p.key]).collect()
        if rows.height:
            sample = rows.sample(min(n, rows.height), seed=0).sort(spec.key)
            stored = lake.scan(fkey, [p.key]).collect()
            return sample, stored
    raise LookupError(f"{contract.name}: no materialized entity rows before {as_of}")


def build_feature_definitions(
    contract: Contract, spec: FeatureSpec | None = None
) -> dg.Definitions:
    """Feature table, training set, online store and checks of one dataset.

    Needs the resources ``lake``, ``lake_io_manager`` and ``online_store``.
    """
    spec = spec or load_feature_spec(contract)
    assets = [build_features_asset(spec), build_training_set_asset(spec)]
    checks: list[dg.AssetChecksDefinition] = []
    if spec.aggregates:
        assets.append(build_online_asset(spec))
        checks = build_online_checks(spec)
    return dg.Definitions(assets=assets, asset_checks=checks)
