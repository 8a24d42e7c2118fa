"""Split a raw partition into valid rows and quarantined rows, each with its reasons.

Every raw row ends up in exactly one of the two outputs (valid + quarantined = raw, always).
Types come from the contract; the rules are those of the pandera schema generated from it.
pandera checks rule by rule, each a separate query with its own failure-case bookkeeping, which
is many times slower than the rules themselves. So the schema's own check expressions are taken
from it and evaluated for every row in ONE polars query, and each bad row's reasons are written
from them, with the texts and in the order pandera reports them (``_split_valid(...,
use_pandera=True)`` is the reference, see ml_assets_tests/validate/test_quarantine.py). A schema
whose rules cannot be taken that way is validated by pandera itself. Taking the rules out of a
schema is :mod:`ml_assets.validate.rules`; this module splits the rows and writes the reasons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import pandera.polars as pa
import polars as pl

from ml_assets.contracts.model import ColumnType, Table
from ml_assets.validate.rules import schema_rules
from ml_assets.validate.schema import (
    TYPED,
    cast_expr,
    expected_text,
    pandera_schema,
    parse_datetimes,
)

ROW = "__row"
REASON = "_reason"
EXTRA = "_extra"

_rules = schema_rules  # the name this module has always used (the tests call it)


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


class _WrongType(NamedTuple):
    column: str
    reason: str
    rows: pl.Series  # True where a non-null raw value did not cast to the contract's type


def split_valid(
    raw: pl.DataFrame,
    table: Table,
    timezone: str = "UTC",
    schema: pa.DataFrameSchema | None = None,
    shared: Iterable[str] = (),
) -> tuple[pl.DataFrame, pl.DataFrame, ValidationReport]:
    """Return (valid rows typed per contract, quarantined rows with reasons, report).

    ``shared``: source columns another table of the contract reads from the same source (the
    labels in the entity's table): dropped, but not reported as extra."""
    known = set(shared)
    if known & set(raw.columns):
        raw = raw.drop([c for c in raw.columns if c in known])
    valid, quarantined, report = _split_valid(raw, table, timezone, schema or pandera_schema(table))
    return _observed_later(valid, table), quarantined, report


def _observed_later(valid: pl.DataFrame, table: Table) -> pl.DataFrame:
    """Labels known ``observed_after_days`` after their time column: that later time."""
    days = getattr(table, "observed_after_days", None)
    if days is None or valid.height == 0:
        return valid
    column = table.time_column
    return valid.with_columns(pl.col(column) + pl.duration(microseconds=int(days * 86_400e6)))


def _split_valid(
    raw: pl.DataFrame,
    table: Table,
    timezone: str,
    schema: pa.DataFrameSchema,
    *,
    use_pandera: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame, ValidationReport]:
    """``split_valid``; ``use_pandera`` has pandera find the rule failures even where the
    schema's rules can be evaluated directly: the reference the direct way must agree with."""
    report = ValidationReport(ingested=raw.height)
    report.missing_columns = [c for c in table.columns if c not in raw.columns]
    report.extra_columns = [c for c in raw.columns if c not in table.columns]
    raw_types = raw.schema

    # 1. Types: cast each present column; a non-null raw value that casts to null is wrong-typed.
    typed_cols: list[pl.Expr] = []
    for name, col in table.columns.items():
        if name in report.missing_columns:
            typed_cols.append(pl.lit(None, dtype=TYPED[col.type]).alias(name))
        elif (
            col.type is ColumnType.DATETIME
            and col.stored_as is None
            and raw_types[name] == pl.String
        ):
            # Evaluated eagerly so clean data takes one parse instead of one per known format.
            typed_cols.append(pl.lit(parse_datetimes(raw.get_column(name), timezone)).alias(name))
        else:
            typed_cols.append(cast_expr(name, col, raw_types[name], timezone).alias(name))
    typed = raw.select(typed_cols)
    wrong_types: list[_WrongType] = []
    for name, col in table.columns.items():
        if name in report.missing_columns or raw_types[name] == TYPED[col.type]:
            continue
        before, after = raw.get_column(name), typed.get_column(name)
        # A cast keeps every null, so only more nulls after it can be wrong-typed values.
        if after.null_count() > before.null_count():
            rows = after.is_null() & before.is_not_null()
            wrong_types.append(
                _WrongType(name, f"{name}: wrong type, expected {expected_text(col)}", rows)
            )

    # 2. Rules: which rows are bad, and the reasons of each (in row order).
    found = None if use_pandera else _direct_reasons(typed, schema, wrong_types, report)
    bad, reasons = found or _pandera_reasons(typed, schema, wrong_types, report)

    if not bad.any():
        # Every row is valid: nothing to put together.
        report.valid = typed.height
        return typed, pl.DataFrame(schema=quarantine_schema(table)), report

    # 3. Put the outputs together.
    valid = typed.filter(~bad)
    text_cols = [
        pl.col(c).cast(pl.String) if c in raw.columns else pl.lit(None, dtype=pl.String).alias(c)
        for c in table.columns
    ]
    if report.extra_columns:
        extra = pl.struct(
            [pl.col(c).cast(pl.String) for c in report.extra_columns]
        ).struct.json_encode()
    else:
        extra = pl.lit(None, dtype=pl.String)
    quarantined = raw.filter(bad).select(
        *text_cols, extra.alias(EXTRA), pl.lit(reasons).alias(REASON)
    )
    report.valid = valid.height
    report.quarantined = quarantined.height
    report.reasons = _count(reasons)
    return valid, quarantined, report


def _count(reasons: pl.Series) -> Counter[str]:
    """How many rows have each reason, in the order the reasons first appear."""
    if len(reasons) <= 1000:  # a query costs more than a few split strings
        return Counter(r for text in reasons.to_list() for r in text.split("; "))
    counts = reasons.str.split("; ").explode().to_frame().group_by(REASON, maintain_order=True)
    return Counter(dict(counts.len().iter_rows()))


def _none_bad() -> tuple[pl.Series, pl.Series]:
    return pl.Series("bad", [], dtype=pl.Boolean), pl.Series(REASON, [], dtype=pl.String)


def _direct_reasons(
    typed: pl.DataFrame,
    schema: pa.DataFrameSchema,
    wrong_types: list[_WrongType],
    report: ValidationReport,
) -> tuple[pl.Series, pl.Series] | None:
    """(bad rows, their reasons) from the schema's own rules in one query; None to ask pandera.

    A row's reasons, as the pandera way gives them: its wrong-typed columns, the missing
    columns, then the rules it breaks in pandera's order (frame-level uniqueness, then column by
    column: not null, unique, the checks), leaving out the rules of a missing column and, on a
    wrong-typed value, the rules of its column (the failed cast left a null there), each reason
    text once.
    """
    rules = schema_rules(schema, typed)
    if rules is None:
        return None
    if typed.height == 0:
        return _none_bad()
    wrong = {w.column: w.rows for w in wrong_types}
    reasons = [w.reason for w in wrong_types]
    fails = [pl.lit(w.rows) for w in wrong_types]
    if report.missing_columns:
        reasons.append(f"missing column: {', '.join(report.missing_columns)}")
        fails.append(pl.repeat(True, pl.len()))
    for rule in rules:
        if rule.column in report.missing_columns:
            continue
        reasons.append(rule.reason)
        if rule.column in wrong:
            fails.append(rule.fails & ~pl.lit(wrong[rule.column]))
        else:
            fails.append(rule.fails)
    if not fails:
        return _none_bad()
    names = [f"_{i}" for i in range(len(fails))]
    try:
        # Eager: a lazy query's optimizer costs more than the rules on 10,000 rows.
        flags = typed.select(f.alias(n) for f, n in zip(fails, names, strict=True)).with_columns(
            pl.any_horizontal(names).alias("bad")
        )
    except Exception:
        # A check that cannot run on this data: pandera reports that its own way.
        return None
    bad = flags.get_column("bad")
    if not bad.any():
        return _none_bad()
    # The reasons of the bad rows only, from the rules some of them break.
    flags = flags.filter(bad)
    broken = [(n, r) for n, r in zip(names, reasons, strict=True) if flags.get_column(n).any()]
    texts = pl.concat_list(pl.when(pl.col(n)).then(pl.lit(r)) for n, r in broken).list.drop_nulls()
    if len({r for _, r in broken}) < len(broken):
        texts = texts.list.unique(maintain_order=True)
    return bad, flags.select(texts.list.join("; ").alias(REASON)).to_series()


def _pandera_reasons(
    typed: pl.DataFrame,
    schema: pa.DataFrameSchema,
    wrong_types: list[_WrongType],
    report: ValidationReport,
) -> tuple[pl.Series, pl.Series]:
    """(bad rows, their reasons) with the rule failures pandera reports."""
    rows = pl.int_range(pl.len(), dtype=pl.UInt32).alias(ROW)
    reasons = pl.DataFrame(schema={ROW: pl.UInt32, "r": pl.String})
    if wrong_types:
        each = [pl.when(pl.lit(w.rows)).then(pl.lit(w.reason)) for w in wrong_types]
        flags = typed.select(rows, pl.concat_list(each).list.drop_nulls().alias("r"))
        reasons = flags.explode("r").drop_nulls("r")
    if report.missing_columns:
        missing = ", ".join(report.missing_columns)
        reasons = pl.concat(
            [reasons, typed.select(rows, pl.lit(f"missing column: {missing}").alias("r"))]
        )
    rule_reasons = _pandera_failures(typed, schema)
    if rule_reasons.height:
        wrong_typed = reasons.select(ROW, pl.col("r").str.extract(r"^(\w+): wrong type").alias("c"))
        rule_reasons = rule_reasons.join(
            wrong_typed.drop_nulls("c"), on=[ROW, "c"], how="anti"
        ).filter(~pl.col("c").is_in(report.missing_columns).fill_null(False))
        reasons = pl.concat([reasons, rule_reasons.select(ROW, "r")])
    per_row = (
        reasons.group_by(ROW)
        .agg(pl.col("r").unique(maintain_order=True).str.join("; ").alias(REASON))
        .sort(ROW)
    )
    bad = typed.select(rows.is_in(per_row.get_column(ROW).implode())).to_series()
    return bad, per_row.get_column(REASON)


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
