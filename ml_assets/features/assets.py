"""Dagster wiring of the features: feature table, training set, online store and their checks.

Thin: every asset reads what it needs through :mod:`ml_assets.features.offline`, calls the plain
functions of :mod:`ml_assets.features.compute` / :mod:`~ml_assets.features.online`, and reports
metadata.
"""

import datetime as dt
import logging
import os

import dagster as dg
import polars as pl
import sqlalchemy as sa

from ml_assets import settings
from ml_assets.dataset import Dataset
from ml_assets.features.compute import compute_features, feature_schema
from ml_assets.features.offline import (
    latest_part,
    parity_sample,
    point_in_time_verdict,
    read_inputs,
    resolve_cutoff,
    resolve_window,
    snapshot_inputs,
    training_set_frame,
)
from ml_assets.features.online_client import OnlineClient
from ml_assets.features.online_store import known_groups, write_snapshot
from ml_assets.features.parity import parity_check, row_parity
from ml_assets.features.training_set import fingerprint, target_stats
from ml_assets.features.windows import aggregate_snapshot
from ml_assets.storage import LAKE_IO, Lake, frame_schema

log = logging.getLogger(__name__)

ONLINE_STORE = "online_store"
FRESHNESS = "online_store_fresh"
PARITY = "online_offline_parity"
POINT_IN_TIME = "point_in_time"
EMPTY_REASON = "why_empty"
"""Training-set metadata: why the set is empty (only then); the model's error repeats it."""
PARITY_SAMPLE_ROWS = 200


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


# --- assets ----------------------------------------------------------------------------------


def build_features_asset(dataset: Dataset) -> dg.AssetsDefinition:
    """The feature table: every feature of every entity row, as of the row's event time."""
    contract, spec, keys = dataset.contract, dataset.spec, dataset.keys
    partitions = dataset.partitions
    mapping = partitions.lookback_mapping(spec.max_window)

    @dg.asset(
        key=keys.features,
        partitions_def=partitions.definition,
        backfill_policy=dg.BackfillPolicy.single_run(),
        io_manager_key=LAKE_IO,
        deps=[dg.AssetDep(k, partition_mapping=mapping) for k in keys.validated.values()],
        **dataset.asset_args("features"),
        kinds={"polars", "parquet"},
        automation_condition=dg.AutomationCondition.eager(),
        description=(
            f"Features of every {contract.name} entity row in the partition, as of the row's "
            f"event time, declared in {os.path.basename(spec.origin)}: row transforms, "
            "trailing-window aggregates over events strictly before the row (labels by when "
            "they were observed), request-time parts. Training sets read these rows, and the "
            "serving path runs the same code, so training and serving cannot drift apart."
        ),
        metadata={
            "dagster/column_schema": frame_schema(feature_schema(spec)),
            "features_file": spec.origin,
            "longest_window": str(spec.max_window),
        },
    )
    def features(
        context: dg.AssetExecutionContext, lake: Lake
    ) -> dg.MaterializeResult[dict[str, pl.DataFrame]]:
        start, end = partitions.span(context.partition_keys)
        inputs = read_inputs(dataset, lake, start, end)
        t = pl.col(spec.event_time)
        table = compute_features(spec, inputs.entity.filter(t >= start, t < end), inputs.events)
        out: dict[str, pl.DataFrame] = {}
        for pk in sorted(context.partition_keys):
            lo, hi = partitions.utc_window(pk)
            out[pk] = table.filter(t >= lo, t < hi).sort(spec.key)
        if inputs.labels_without_entity:
            context.log.warning(
                f"{inputs.labels_without_entity} labels have no materialized entity row: "
                "left out of label aggregates"
            )
        context.log.info(f"{contract.name} features: {table.height} rows in {len(out)} partitions")
        null_rate = {
            n: round(table.get_column(n).null_count() / table.height, 6) for n in spec.names
        }
        return dg.MaterializeResult(
            value=out,
            metadata={
                "dagster/row_count": table.height,
                "partitions": len(out),
                "features": dg.MetadataValue.json(spec.names),
                "labels_without_entity": inputs.labels_without_entity,
                "null_rate": dg.MetadataValue.json(null_rate if table.height else {}),
            },
        )

    return features


class TrainingSetConfig(dg.Config):
    """Which rows a training set holds."""

    cutoff: str | None = None
    """ISO datetime (naive = UTC): rows before it, labels observed before it. Default: the end
    of the latest materialized feature partition."""
    window_days: float | None = None
    """Rows with event time in [cutoff - window_days, cutoff). Default: the contract's
    ``training.window_days``, else every row before the cutoff (from the earliest materialized
    feature partition), so no labelled row is dropped for being old."""


def build_training_set_asset(dataset: Dataset) -> dg.AssetsDefinition:
    """A point-in-time correct training set at a cutoff."""
    contract, spec, key = dataset.contract, dataset.spec, dataset.keys.training_set

    @dg.asset(
        key=key,
        io_manager_key=LAKE_IO,
        deps=[dataset.keys.features, dataset.keys.validated["labels"]],
        **dataset.asset_args("training_set"),
        kinds={"polars", "parquet"},
        check_specs=[
            dg.AssetCheckSpec(
                POINT_IN_TIME,
                asset=key,
                blocking=True,
                description="Rows lie in [cutoff - window, cutoff) and every row has its label "
                "(error: blocks downstream); the set is not empty (warning: labels may simply not "
                "have arrived yet for a recent cutoff; the description then gives the window, "
                "the cutoff, the rows in the window, the labelled rows, the labels' observed-at "
                "range and what to change).",
            )
        ],
        description=(
            f"Rows of {contract.name} with event time in [cutoff - window, cutoff) (the window: "
            "run config `window_days`, else the contract's `training.window_days`, else every "
            "row before the cutoff), each with its features as of its own event time (from the feature table) and its label as "
            "known at the cutoff: a label observed at or after the cutoff is not used, and its "
            "row is dropped. No feature from the future, no label from after the cutoff. "
            "Content-fingerprinted: the same inputs rebuild to the same fingerprint."
        ),
    )
    def training_set(
        context: dg.AssetExecutionContext, config: TrainingSetConfig, lake: Lake
    ) -> dg.MaterializeResult:
        cutoff, origin = resolve_cutoff(dataset, lake, config.cutoff)
        window = resolve_window(dataset, lake, cutoff, config.window_days)
        frame, facts = training_set_frame(dataset, lake, window)
        why_empty = facts.why_empty(contract.name)
        verdict = point_in_time_verdict(
            frame, spec.event_time, contract.target, cutoff, window.length, why_empty
        )
        fp = fingerprint(frame, spec.key)
        context.log.info(
            f"{contract.name} training set at {cutoff.isoformat()}, window {window.describe()}: "
            f"{frame.height} rows of {facts.rows_in_window} in the window, "
            f"{facts.rows_before_window} older rows left out, fingerprint {fp}"
        )
        if why_empty:
            context.log.warning(f"{contract.name}: the training set is empty: {why_empty}")
        # Written here (not through the IO manager) because the asset also reports a check;
        # the lake IO manager loads it for downstream assets from the same place.
        written = lake.write(key, None, frame)
        observed = facts.observed_range
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": frame.height,
                "lake_path": dg.MetadataValue.path(written["path"]),
                "cutoff": cutoff.isoformat(),
                "cutoff_from": origin,
                "window_days": round(window.length / dt.timedelta(days=1), 6),
                "window_from": window.origin,
                "window_start": window.start.isoformat(),
                "rows_in_window": facts.rows_in_window,
                "rows_before_window": facts.rows_before_window,
                "rows_without_label_by_cutoff": facts.rows_without_label_by_cutoff,
                "label_coverage": round(frame.height / max(facts.rows_in_window, 1), 6),
                "labels_observed": dg.MetadataValue.json(
                    {
                        "labels": facts.labels,
                        "before_cutoff": facts.labels_before_cutoff,
                        "first": observed[0].isoformat() if observed else None,
                        "last": observed[1].isoformat() if observed else None,
                    }
                ),
                "target_stats": dg.MetadataValue.json(target_stats(spec, frame)),
                "features": dg.MetadataValue.json(spec.names),
                "fingerprint": fp,
                "feature_partitions": len(facts.partitions),
                **({EMPTY_REASON: why_empty} if why_empty else {}),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=POINT_IN_TIME,
                    passed=verdict.passed,
                    severity=dg.AssetCheckSeverity.ERROR
                    if verdict.broken
                    else dg.AssetCheckSeverity.WARN,
                    description=verdict.description,
                    metadata={"rows": verdict.rows, "unlabelled": verdict.unlabelled},
                )
            ],
        )

    return training_set


def build_online_asset(dataset: Dataset) -> dg.AssetsDefinition:
    """The online store: the latest value of every group-keyed aggregate, in SQL."""
    contract, spec = dataset.contract, dataset.spec

    @dg.asset(
        key=dataset.keys.online,
        deps=[dataset.keys.features, *dataset.keys.validated.values()],
        **dataset.asset_args("online"),
        kinds={"sql", "polars"},
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
        as_of, inputs = snapshot_inputs(dataset, lake)
        engine = online_store.engine()
        try:
            groups = known_groups(engine, contract.name)
            snapshot = aggregate_snapshot(spec, inputs.events, as_of, groups)
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


def build_online_checks(dataset: Dataset) -> list[dg.AssetChecksDefinition]:
    """Freshness of the online store and parity of the online path with the offline one."""
    name, key = dataset.name, dataset.keys.online

    @dg.asset_check(
        asset=key,
        name=FRESHNESS,
        description="The store's as_of equals the end of the latest materialized feature "
        "partition: serving sees the aggregates of the newest data.",
    )
    def fresh(lake: Lake, online_store: OnlineStore) -> dg.AssetCheckResult:
        latest = latest_part(dataset, lake, dataset.keys.features)
        with online_store.client() as client:
            as_of = client.as_of(name)
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
        report, rows_report = run_parity(dataset, lake, online_store)
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
    dataset: Dataset, lake: Lake, online_store: OnlineStore, sample_rows: int = PARITY_SAMPLE_ROWS
) -> tuple:
    """Both parity comparisons against the store as it is now (see :mod:`.parity`)."""
    spec = dataset.spec
    with online_store.client() as client:
        as_of = client.as_of(dataset.name)
        if as_of is None:
            raise LookupError(f"{dataset.name}: the online store has no snapshot")
        inputs = read_inputs(dataset, lake, as_of, as_of)
        sample, stored = parity_sample(dataset, lake, as_of, sample_rows)
        report = parity_check(spec, sample, inputs.events, client, as_of)
    return report, row_parity(spec, sample, stored)


def build_feature_definitions(dataset: Dataset) -> dg.Definitions:
    """Feature table, training set, online store and checks of one dataset.

    Needs the resources ``lake``, ``lake_io_manager`` and ``online_store``.
    """
    assets = [build_features_asset(dataset), build_training_set_asset(dataset)]
    checks: list[dg.AssetChecksDefinition] = []
    if dataset.spec.aggregates:
        assets.append(build_online_asset(dataset))
        checks = build_online_checks(dataset)
    return dg.Definitions(assets=assets, asset_checks=checks)
