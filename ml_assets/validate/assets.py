"""Validated and quarantine assets, with the data-quality checks that guard them."""

import statistics
from collections.abc import Iterator

import dagster as dg
import polars as pl

from ml_assets.contracts.model import Contract
from ml_assets.ingest.assets import LAKE_IO, column_schema, raw_key
from ml_assets.partitions import partitions_def
from ml_assets.storage import Lake, schema_hash
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


def validated_key(contract: Contract, role: str) -> dg.AssetKey:
    return dg.AssetKey([contract.name, f"validated_{role}"])


def quarantine_key(contract: Contract, role: str) -> dg.AssetKey:
    return dg.AssetKey([contract.name, f"quarantine_{role}"])


def _baseline(lake: Lake, key: dg.AssetKey, earlier: list[str], n: int) -> list[dict]:
    stats = []
    for pk in reversed(earlier):
        s = lake.parquet_stats(key, pk)
        if s is not None:
            stats.append(s)
        if len(stats) >= n:
            break
    return stats


def build_validated_assets(contract: Contract, role: str) -> dg.AssetsDefinition:
    """Validated rows (typed, every contract rule holds) and quarantined rows with reasons."""
    table = contract.tables[role]
    pdef = partitions_def(contract)
    vkey, qkey = validated_key(contract, role), quarantine_key(contract, role)
    schema = pandera_schema(table, name=f"{contract.name}.{role}")
    tz = contract.partitioning.timezone
    owners = [contract.owner] if "@" in contract.owner else None

    check_specs = [
        dg.AssetCheckSpec(
            SCHEMA,
            asset=vkey,
            blocking=True,
            description="Every contract column is present; extra source columns are dropped (warn).",
        ),
        dg.AssetCheckSpec(
            KEY,
            asset=vkey,
            blocking=True,
            description=f"No two source rows share a key {table.key}.",
        ),
        dg.AssetCheckSpec(
            RATE,
            asset=vkey,
            blocking=True,
            description="The share of quarantined rows is at most the threshold.",
        ),
        dg.AssetCheckSpec(
            NULLS, asset=vkey, description="Null rates are in line with recent partitions."
        ),
        dg.AssetCheckSpec(
            ROWS, asset=vkey, description="Row counts are in line with recent partitions."
        ),
    ]

    @dg.multi_asset(
        name=f"{contract.name}_validate_{role}",
        outs={
            "validated": dg.AssetOut(
                key=vkey,
                io_manager_key=LAKE_IO,
                kinds={"pandera", "polars", "parquet"},
                owners=owners,
                tags={"stage": "validated", "dataset": contract.name},
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
                owners=owners,
                tags={"stage": "quarantine", "dataset": contract.name},
                description=(
                    f"{role.capitalize()} rows of {contract.name} that break the contract, kept "
                    "with every raw value as text and the reasons, for triage and replay."
                ),
                automation_condition=dg.AutomationCondition.eager(),
            ),
        },
        ins={"raw": dg.AssetIn(raw_key(contract, role), metadata={"by_partition": True})},
        check_specs=check_specs,
        partitions_def=pdef,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=contract.name,
    )
    def validate(
        context: dg.AssetExecutionContext,
        config: ValidationConfig,
        lake: Lake,
        raw: dict[str, pl.LazyFrame],
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        threshold = (
            config.quarantine_threshold
            if config.quarantine_threshold is not None
            else contract.quarantine_threshold
        )
        all_keys = pdef.get_partition_keys()
        total = ValidationReport()
        per_partition: dict[str, dict] = {}
        row_warnings: list[str] = []
        null_warnings: list[str] = []
        raw_types: dict[str, str] = {}
        for i, (pk, frame) in enumerate(sorted(raw.items()), 1):
            data = frame.collect()
            raw_types.update({c: str(t) for c, t in data.schema.items()})
            valid, quarantined, report = split_valid(data, table, tz, schema)
            lake.write(vkey, pk, valid)
            lake.write(qkey, pk, quarantined)
            total = total.merge(report)
            per_partition[pk] = {"valid": report.valid, "quarantined": report.quarantined}
            context.log.info(
                f"[{i}/{len(raw)}] {contract.name}.{role} {pk}: {report.valid} valid, "
                f"{report.quarantined} quarantined of {report.ingested}"
            )
            earlier = all_keys[: all_keys.index(pk)] if pk in all_keys else []
            base = _baseline(lake, vkey, earlier, config.baseline_partitions)
            if base:
                median_rows = statistics.median(b["rows"] for b in base)
                ratio = config.row_count_ratio
                if median_rows > 0 and not (
                    median_rows / ratio <= report.valid <= median_rows * ratio
                ):
                    row_warnings.append(f"{pk}: {report.valid} rows vs median {median_rows:g}")
                base_rows = max(sum(b["rows"] for b in base), 1)
                for col in table.columns:
                    base_rate = sum(b["nulls"].get(col, 0) for b in base) / base_rows
                    rate = (
                        valid.get_column(col).null_count() / valid.height if valid.height else 0.0
                    )
                    if rate > base_rate + config.null_rate_tolerance:
                        null_warnings.append(
                            f"{pk}: {col} {rate:.1%} null vs {base_rate:.1%} recently"
                        )

        reasons_md = "\n".join(
            f"| {reason} | {count} |" for reason, count in total.reasons.most_common(20)
        )
        common = {"partitions": len(raw), "contract_version": contract.version}
        yield dg.MaterializeResult(
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
        )
        yield dg.MaterializeResult(
            asset_key=qkey,
            metadata={
                **common,
                "dagster/row_count": total.quarantined,
                "schema_hash": schema_hash(quarantine_schema(table)),
                "reasons": dg.MetadataValue.md(
                    "| reason | rows |\n|---|---|\n" + reasons_md if reasons_md else "none"
                ),
            },
        )
        yield dg.AssetCheckResult(
            check_name=SCHEMA,
            asset_key=vkey,
            passed=not total.missing_columns and not total.extra_columns,
            severity=dg.AssetCheckSeverity.ERROR
            if total.missing_columns
            else dg.AssetCheckSeverity.WARN,
            description=(
                f"missing columns: {total.missing_columns}" if total.missing_columns else None
            )
            or (f"extra columns dropped: {total.extra_columns}" if total.extra_columns else None),
            metadata={
                "missing_columns": ", ".join(total.missing_columns) or "none",
                "extra_columns": ", ".join(total.extra_columns) or "none",
                "raw_types": dg.MetadataValue.json(raw_types),
            },
        )
        duplicates = total.reasons.get("duplicate key", 0)
        yield dg.AssetCheckResult(
            check_name=KEY,
            asset_key=vkey,
            passed=duplicates == 0,
            description=f"{duplicates} rows share a key with another row (quarantined)"
            if duplicates
            else None,
            metadata={"duplicate_rows": duplicates},
        )
        yield dg.AssetCheckResult(
            check_name=RATE,
            asset_key=vkey,
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
        )
        yield dg.AssetCheckResult(
            check_name=NULLS,
            asset_key=vkey,
            passed=not null_warnings,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(null_warnings[:10]) or None,
            metadata={"anomalies": len(null_warnings)},
        )
        yield dg.AssetCheckResult(
            check_name=ROWS,
            asset_key=vkey,
            passed=not row_warnings,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(row_warnings[:10]) or None,
            metadata={"anomalies": len(row_warnings)},
        )

    return validate


def freshness_checks(contract: Contract) -> list[dg.AssetChecksDefinition]:
    """The newest partition of each validated table must land within a day of its window."""
    granularity_cron = {"daily": "0 6 * * *", "weekly": "0 6 * * 1", "monthly": "0 6 2 * *"}
    cron = granularity_cron[contract.partitioning.granularity.value]
    return list(
        dg.build_time_partition_freshness_checks(
            assets=[validated_key(contract, role) for role in contract.tables],
            deadline_cron=cron,
            timezone=contract.partitioning.timezone,
            severity=dg.AssetCheckSeverity.WARN,
        )
    )
