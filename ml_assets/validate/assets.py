"""Validated and quarantine assets, with the data-quality checks that guard them.

Thin wiring: the split is :func:`ml_assets.validate.quarantine.split_valid`, the anomaly
baselines :mod:`ml_assets.validate.baselines`, the check verdicts :func:`check_results`.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from ml_assets.dataset import Dataset
from ml_assets.storage import LAKE_IO, Lake, column_schema, schema_hash
from ml_assets.validate.baselines import Anomalies, partition_anomalies, recent_stats
from ml_assets.validate.quarantine import (
    ValidationReport,
    quarantine_schema,
    split_valid,
    valid_schema,
)
from ml_assets.validate.schema import pandera_schema

SCHEMA = "schema_conformance"
KEY = "primary_key_unique"
RATE = "quarantine_rate"
NULLS = "null_rate"
ROWS = "row_count_anomaly"


class ValidationConfig(dg.Config):
    """Thresholds of the data-quality checks (overridable per run from the launchpad)."""

    quarantine_threshold: float | None = None
    """Largest share of quarantined rows that still lets downstream run; default: the contract's."""
    null_rate_tolerance: float = 0.05
    """Warn when a column's null rate exceeds its recent baseline by more than this."""
    row_count_ratio: float = 2.0
    """Warn when a partition holds more than this factor more (or fewer) rows than recent ones."""
    baseline_partitions: int = 8
    """How many earlier partitions make the baseline for the two checks above."""


def check_results(
    key: dg.AssetKey,
    total: ValidationReport,
    anomalies: Anomalies,
    threshold: float,
    raw_types: dict[str, str],
) -> list[dg.AssetCheckResult]:
    """The verdicts of the five data-quality checks over a run's partitions."""
    missing, extra = total.missing_columns, total.extra_columns
    duplicates = total.reasons.get("duplicate key", 0)
    return [
        dg.AssetCheckResult(
            check_name=SCHEMA,
            asset_key=key,
            passed=not missing and not extra,
            severity=dg.AssetCheckSeverity.ERROR if missing else dg.AssetCheckSeverity.WARN,
            description=(f"missing columns: {missing}" if missing else None)
            or (f"extra columns dropped: {extra}" if extra else None),
            metadata={
                "missing_columns": ", ".join(missing) or "none",
                "extra_columns": ", ".join(extra) or "none",
                "raw_types": dg.MetadataValue.json(raw_types),
            },
        ),
        dg.AssetCheckResult(
            check_name=KEY,
            asset_key=key,
            passed=duplicates == 0,
            description=f"{duplicates} rows share a key with another row (quarantined)"
            if duplicates
            else None,
            metadata={"duplicate_rows": duplicates},
        ),
        dg.AssetCheckResult(
            check_name=RATE,
            asset_key=key,
            passed=total.quarantine_rate <= threshold,
            description=(
                f"{total.quarantined} of {total.ingested} rows quarantined "
                f"({total.quarantine_rate:.2%}, threshold {threshold:.2%})"
            ),
            metadata={
                "quarantine_rate": round(total.quarantine_rate, 6),
                "threshold": threshold,
                "top_reasons": dg.MetadataValue.json(dict(total.reasons.most_common(10))),
            },
        ),
        *(
            dg.AssetCheckResult(
                check_name=name,
                asset_key=key,
                passed=not found,
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(found[:10]) or None,
                metadata={"anomalies": len(found), **extra},
            )
            for name, found, extra in (
                (NULLS, anomalies.nulls, {}),
                (
                    ROWS,
                    anomalies.rows,
                    {
                        "expected_empty": len(anomalies.expected_empty),
                        "expected_empty_partitions": ", ".join(anomalies.expected_empty[:20])
                        or "none",
                    },
                ),
            )
        ),
    ]


def materializations(
    vkey: dg.AssetKey,
    qkey: dg.AssetKey,
    table: Any,
    contract_version: str,
    total: ValidationReport,
    per_partition: dict[str, dict[str, int]],
) -> list[dg.MaterializeResult]:
    """The validated and quarantine materializations of a run's partitions."""
    common = {"partitions": len(per_partition), "contract_version": contract_version}
    return [
        dg.MaterializeResult(
            asset_key=vkey,
            metadata={
                **common,
                "dagster/row_count": total.valid,
                "ingested": total.ingested,
                "quarantined": total.quarantined,
                "quarantine_rate": round(total.quarantine_rate, 6),
                "schema_hash": schema_hash(valid_schema(table)),
                "rows_per_partition": dg.MetadataValue.json(per_partition),
            },
        ),
        dg.MaterializeResult(
            asset_key=qkey,
            metadata={
                **common,
                "dagster/row_count": total.quarantined,
                "schema_hash": schema_hash(quarantine_schema(table)),
                "reasons": dg.MetadataValue.md(_reasons_markdown(total)),
            },
        ),
    ]


def _reasons_markdown(report: ValidationReport) -> str:
    rows = "\n".join(f"| {reason} | {n} |" for reason, n in report.reasons.most_common(20))
    return "| reason | rows |\n|---|---|\n" + rows if rows else "none"


def build_validated_assets(dataset: Dataset, role: str) -> dg.AssetsDefinition:
    """Validated rows (typed, every contract rule holds) and quarantined rows with reasons."""
    contract = dataset.contract
    table = contract.tables[role]
    partitions = dataset.partitions
    vkey, qkey = dataset.keys.validated[role], dataset.keys.quarantine[role]
    schema = pandera_schema(table, name=f"{contract.name}.{role}")

    def spec(name: str, description: str, blocking: bool = True) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(name, asset=vkey, blocking=blocking, description=description)

    check_specs = [
        spec(SCHEMA, "Every contract column is present; extra source columns are dropped (warn)."),
        spec(KEY, f"No two source rows share a key {table.key}."),
        spec(RATE, "The share of quarantined rows is at most the threshold."),
        spec(NULLS, "Null rates are in line with recent partitions.", blocking=False),
        spec(ROWS, "Row counts are in line with recent partitions.", blocking=False),
    ]

    @dg.multi_asset(
        name=f"{contract.name}_validate_{role}",
        outs={
            "validated": dg.AssetOut(
                key=vkey,
                io_manager_key=LAKE_IO,
                kinds={"pandera", "polars", "parquet"},
                owners=dataset.owners,
                tags=dataset.tags("validated"),
                description=(
                    f"{role.capitalize()} rows of {contract.name} that satisfy contract "
                    f"v{contract.version}: typed, in range, allowed values only, unique keys. "
                    "What every downstream asset reads."
                ),
                metadata={"dagster/column_schema": column_schema(table, valid_schema(table))},
                automation_condition=dg.AutomationCondition.eager(),
            ),
            "quarantine": dg.AssetOut(
                key=qkey,
                io_manager_key=LAKE_IO,
                kinds={"polars", "parquet"},
                owners=dataset.owners,
                tags=dataset.tags("quarantine"),
                description=(
                    f"{role.capitalize()} rows of {contract.name} that break the contract, kept "
                    "with every raw value as text and the reasons, for triage and replay."
                ),
                automation_condition=dg.AutomationCondition.eager(),
            ),
        },
        ins={"raw": dg.AssetIn(dataset.keys.raw[role], metadata={"by_partition": True})},
        check_specs=check_specs,
        partitions_def=partitions.definition,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=contract.name,
        pool=dataset.pool("validated"),
    )
    def validate(
        context: dg.AssetExecutionContext,
        config: ValidationConfig,
        lake: Lake,
        raw: dict[str, pl.LazyFrame],
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        threshold = config.quarantine_threshold
        threshold = contract.quarantine_threshold if threshold is None else threshold
        total, anomalies = ValidationReport(), Anomalies()
        shared = contract.shared_columns(role)
        per_partition: dict[str, dict] = {}
        raw_types: dict[str, str] = {}
        # a range is committed together: a run that fails part-way changes no partition (the
        # baselines of a partition read its predecessors' staged files in the same run)
        with lake.batch() as batch:
            # each partition's footer is read once, not once per later partition whose
            # baseline it is (on an object store each read is a round trip)
            footers: dict[str, dict | None] = {}

            def stats(p: str) -> dict | None:
                if p not in footers:
                    footers[p] = lake.parquet_stats(vkey, p, batch)
                return footers[p]

            for i, (pk, frame) in enumerate(sorted(raw.items()), 1):
                data = frame.collect()
                raw_types.update({c: str(t) for c, t in data.schema.items()})
                valid, quarantined, report = split_valid(
                    data, table, partitions.timezone, schema, shared=shared
                )
                lake.write(vkey, pk, valid, batch=batch)
                lake.write(qkey, pk, quarantined, batch=batch)
                footers.pop(pk, None)
                total = total.merge(report)
                per_partition[pk] = {"valid": report.valid, "quarantined": report.quarantined}
                context.log.info(
                    f"[{i}/{len(raw)}] {contract.name}.{role} {pk}: {report.valid} valid, "
                    f"{report.quarantined} quarantined of {report.ingested}"
                )
                baseline = recent_stats(
                    stats,
                    partitions.before(pk),
                    config.baseline_partitions,
                )
                ago = partitions.season_ago(pk)
                partition_anomalies(
                    pk,
                    valid,
                    table.columns,
                    baseline,
                    row_count_ratio=config.row_count_ratio,
                    null_rate_tolerance=config.null_rate_tolerance,
                    into=anomalies,
                    season=stats(ago) if ago else None,
                )
        yield from materializations(vkey, qkey, table, contract.version, total, per_partition)
        yield from check_results(vkey, total, anomalies, threshold, raw_types)

    return validate


def freshness_checks(dataset: Dataset) -> list[dg.AssetChecksDefinition]:
    """The newest partition of each validated table must land within a day of its window."""
    return list(
        dg.build_time_partition_freshness_checks(
            assets=list(dataset.keys.validated.values()),
            deadline_cron=dataset.partitions.deadline_cron,
            timezone=dataset.partitions.timezone,
            severity=dg.AssetCheckSeverity.WARN,
        )
    )
