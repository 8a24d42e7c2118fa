"""Split a raw partition into valid rows and quarantined rows, each with its reasons.

Every raw row ends up in exactly one of the two outputs (valid + quarantined = raw, always).
Types come from the contract; the rules are checked by the pandera schema generated from it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandera.polars as pa
import polars as pl

from ml_assets.contracts.model import ColumnType, Table
from ml_assets.validate.schema import TYPED, cast_expr, pandera_schema, parse_datetimes

ROW = "__row"
REASON = "_reason"
EXTRA = "_extra"


@dataclass
class ValidationReport:
    """What validation found in one partition."""

    ingested: int = 0
    valid: int = 0
    quarantined: int = 0
    missing_columns: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def quarantine_rate(self) -> float:
        return self.quarantined / self.ingested if self.ingested else 0.0

    def merge(self, other: ValidationReport) -> ValidationReport:
        return ValidationReport(
            ingested=self.ingested + other.ingested,
            valid=self.valid + other.valid,
            quarantined=self.quarantined + other.quarantined,
            missing_columns=sorted({*self.missing_columns, *other.missing_columns}),
            extra_columns=sorted({*self.extra_columns, *other.extra_columns}),
            reasons=self.reasons + other.reasons,
        )


def quarantine_schema(table: Table) -> dict[str, pl.DataType]:
    """Quarantined rows keep every raw value as text, so nothing is lost to a failed cast."""
    return {
        **{name: pl.String() for name in table.columns},
        EXTRA: pl.String(),
        REASON: pl.String(),
    }


def valid_schema(table: Table) -> dict[str, pl.DataType]:
    return {name: TYPED[col.type] for name, col in table.columns.items()}


def split_valid(
    raw: pl.DataFrame,
    table: Table,
    timezone: str = "UTC",
    schema: pa.DataFrameSchema | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, ValidationReport]:
    """Return (valid rows typed per contract, quarantined rows with reasons, report)."""
    schema = schema or pandera_schema(table)
    report = ValidationReport(ingested=raw.height)
    report.missing_columns = [c for c in table.columns if c not in raw.columns]
    report.extra_columns = [c for c in raw.columns if c not in table.columns]
    raw = raw.with_row_index(ROW)

    # 1. Types: cast each present column; a non-null raw value that casts to null is wrong-typed.
    typed_cols: list[pl.Expr] = [pl.col(ROW)]
    type_errors: list[pl.Expr] = []
    for name, col in table.columns.items():
        if name in report.missing_columns:
            typed_cols.append(pl.lit(None, dtype=TYPED[col.type]).alias(name))
            continue
        if col.type is ColumnType.DATETIME and raw.schema[name] == pl.String:
            # Evaluated eagerly so clean data takes one parse instead of one per known format.
            typed = pl.lit(parse_datetimes(raw.get_column(name), timezone)).alias(name)
        else:
            typed = cast_expr(name, col, raw.schema[name], timezone).alias(name)
        typed_cols.append(typed)
        if raw.schema[name] != TYPED[col.type]:
            bad = pl.col(name).is_not_null() & typed.is_null()
            type_errors.append(
                pl.when(bad).then(pl.lit(f"{name}: wrong type, expected {col.type.value}"))
            )
    typed = raw.select(typed_cols)
    if type_errors:
        flags = raw.select(pl.col(ROW), pl.concat_list(type_errors).list.drop_nulls().alias("r"))
    else:
        flags = raw.select(pl.col(ROW), pl.lit([], dtype=pl.List(pl.String)).alias("r"))

    # 2. Rules: the generated pandera schema, every failure with the row it came from.
    rule_reasons = _pandera_failures(typed.drop(ROW), schema)

    # 3. Put reasons together per row.
    reasons = flags.explode("r").drop_nulls("r")
    if report.missing_columns:
        missing = ", ".join(report.missing_columns)
        reasons = pl.concat(
            [reasons, raw.select(pl.col(ROW), pl.lit(f"missing column: {missing}").alias("r"))]
        )
    if rule_reasons.height:
        wrong_typed = reasons.select(ROW, pl.col("r").str.extract(r"^(\w+): wrong type").alias("c"))
        rule_reasons = rule_reasons.join(
            wrong_typed.drop_nulls("c"), on=[ROW, "c"], how="anti"
        ).filter(~pl.col("c").is_in(report.missing_columns).fill_null(False))
        reasons = pl.concat([reasons, rule_reasons.select(ROW, "r")])
    per_row = reasons.group_by(ROW).agg(
        pl.col("r").unique(maintain_order=True).str.join("; ").alias(REASON)
    )

    bad_rows = per_row.get_column(ROW)
    valid = typed.filter(~pl.col(ROW).is_in(bad_rows.implode())).drop(ROW)
    text_cols = [pl.col(c).cast(pl.String) for c in table.columns if c in raw.columns]
    text_cols += [pl.lit(None, dtype=pl.String).alias(c) for c in report.missing_columns]
    if report.extra_columns:
        extra = pl.struct(
            [pl.col(c).cast(pl.String) for c in report.extra_columns]
        ).struct.json_encode()
    else:
        extra = pl.lit(None, dtype=pl.String)
    quarantined = (
        raw.join(per_row, on=ROW, how="inner")
        .sort(ROW)
        .select(*text_cols, extra.alias(EXTRA), pl.col(REASON))
        .select(list(quarantine_schema(table)))
    )
    report.valid = valid.height
    report.quarantined = quarantined.height
    for text in per_row.get_column(REASON).to_list():
        for reason in text.split("; "):
            report.reasons[reason] += 1
    return valid, quarantined, report


def _pandera_failures(typed: pl.DataFrame, schema: pa.DataFrameSchema) -> pl.DataFrame:
    """Rows that break a rule of the schema: (row, column, reason)."""
    empty = pl.DataFrame(schema={ROW: pl.UInt32, "c": pl.String, "r": pl.String})
    if typed.height == 0:
        return empty
    try:
        schema.validate(typed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = (
            pl.DataFrame(exc.failure_cases)
            if not isinstance(exc.failure_cases, pl.DataFrame)
            else exc.failure_cases
        )
        cases = cases.filter(pl.col("index").is_not_null())
        return cases.select(
            pl.col("index").cast(pl.UInt32).alias(ROW),
            pl.col("column").alias("c"),
            pl.when(pl.col("check").str.contains("uniqueness"))
            .then(pl.lit("duplicate key"))
            .when(pl.col("column").is_null())
            .then(pl.col("check"))
            .otherwise(pl.format("{}: {}", pl.col("column"), pl.col("check")))
            .alias("r"),
        )
    return empty
