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
    type_bad: list[pl.Expr] = []
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
            type_bad.append(bad)
            type_errors.append(
                pl.when(bad).then(pl.lit(f"{name}: wrong type, expected {col.type.value}"))
            )
    typed = raw.select(typed_cols)
    # One cheap pass first: most partitions have no wrong-typed value at all.
    if type_errors and raw.select(pl.any_horizontal(type_bad).any()).item():
        flags = raw.select(pl.col(ROW), pl.concat_list(type_errors).list.drop_nulls().alias("r"))
        reasons = flags.explode("r").drop_nulls("r")
    else:
        reasons = pl.DataFrame(schema={ROW: raw.schema[ROW], "r": pl.String})

    # 2. Rules: the generated pandera schema, every failure with the row it came from.
    rule_reasons = _rule_failures(typed.drop(ROW), schema)

    if not reasons.height and not rule_reasons.height and not report.missing_columns:
        # Every row is valid: nothing to put together.
        report.valid = typed.height
        return typed.drop(ROW), pl.DataFrame(schema=quarantine_schema(table)), report

    # 3. Put reasons together per row.
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


def _rule_failures(typed: pl.DataFrame, schema: pa.DataFrameSchema) -> pl.DataFrame:
    """Rows that break a rule of the schema: (row, column, reason); pandera only when needed.

    pandera checks rule by rule, each a separate polars query, which costs milliseconds per
    call whatever the size of the frame. When one combined query of the schema's own checks
    shows that pandera would find nothing, it is not run; otherwise pandera reports the
    failures, exactly as before.
    """
    if typed.height and _passes_every_rule(typed, schema):
        return _no_failures()
    return _pandera_failures(typed, schema)


def _no_failures() -> pl.DataFrame:
    return pl.DataFrame(schema={ROW: pl.UInt32, "c": pl.String, "r": pl.String})


class _Probe:
    """Stands in for the LazyFrame a check function selects from, to take its expression.

    pandera's built-in polars checks (and ``pandera_schema``'s own) are all
    ``data.lazyframe.select(<expr>)``; with the expression in hand, every check of a table runs
    in ONE query. A check function doing anything else simply runs on the real frame.
    """

    __slots__ = ("exprs",)

    def __init__(self) -> None:
        self.exprs: tuple | None = None

    def select(self, *exprs: object, **named: object) -> _Probe:
        if self.exprs is not None or named:
            raise TypeError("not a single select")
        self.exprs = exprs
        return self

    def expr(self) -> pl.Expr | None:
        if self.exprs is None or len(self.exprs) != 1:
            return None
        (expr,) = self.exprs
        if not isinstance(expr, pl.Expr) or expr.meta.has_multiple_outputs():
            return None
        return expr


def _passes_every_rule(typed: pl.DataFrame, schema: pa.DataFrameSchema) -> bool:
    """True only if ``schema.validate(typed)`` would pass; False when it fails or may fail.

    Mirrors pandera's native polars backend for the schema features ``pandera_schema`` uses:
    exact columns, dtypes, non-null (NaN counts as null for floats), the columns' own checks
    (their functions, nulls passing when the check ignores them) and uniqueness. Anything else
    (dataframe-level checks, parsers, coercion, defaults, regex columns, element-wise or grouped
    checks, another pandera backend, a check that raises) answers False and is left to pandera.
    """
    try:
        from pandera.api.polars.types import PolarsData
        from pandera.backends.polars.checks import PolarsCheckBackend
        from pandera.backends.polars.container import DataFrameSchemaBackend

        lf = typed.lazy()
        dtypes = typed.schema
        if (
            # The backends pandera registers on its first validate() in a process.
            type(schema.get_backend(typed)) is not DataFrameSchemaBackend
            or pa.Check.get_backend(lf) is not PolarsCheckBackend
            or schema.checks
            or getattr(schema, "parsers", None)
            or schema.dtype is not None
            or schema.coerce
            or schema.add_missing_columns
            or schema.drop_invalid_rows
            or list(typed.columns) != list(schema.columns)
        ):
            return False
        rules: list[pl.Expr] = []  # each one boolean: this rule holds for every row
        others: list[pl.LazyFrame] = []  # checks whose expression could not be taken
        for name, column in schema.columns.items():
            if (
                column.regex
                or column.coerce
                or column.drop_invalid_rows
                or column.default is not None
                or getattr(column, "parsers", None)
                or column.dtype is None
                or not column.dtype.check(dtypes[name], PolarsData(lf.select(name), name))
            ):
                return False
            if not column.nullable:
                not_null = pl.col(name).is_not_null()
                if dtypes[name] in (pl.Float32, pl.Float64):
                    not_null = not_null & pl.col(name).is_not_nan()
                rules.append(not_null.all())
            if column.unique:
                rules.append(pl.col(name).is_duplicated().not_().all())
            for check in column.checks:
                if check.element_wise or check.groupby is not None:
                    return False
                # The function pandera's check backend applies (built-ins resolved for polars,
                # as Check.__call__ does), then its null handling and all().
                fn = check._check_fn
                builtin = getattr(fn, "__name__", None)
                if builtin is not None and check.is_builtin_check(builtin):
                    fn = check.get_builtin_check_fn(builtin)
                probe = _Probe()
                try:
                    out = fn(PolarsData(probe, name), **check._check_kwargs)
                except Exception:
                    out = None
                expr = probe.expr() if out is probe else None
                if expr is not None:
                    ok = expr | expr.is_null() if check.ignore_na else expr.fill_null(False)
                    rules.append(ok.all())
                    continue
                if not (probe.exprs is None and isinstance(out, bool)):
                    out = fn(PolarsData(lf, name), **check._check_kwargs)  # on the real frame
                if isinstance(out, bool):
                    if not out:
                        return False
                    continue
                if len(out.collect_schema()) != 1:
                    return False
                ok = pl.first()
                ok = ok | ok.is_null() if check.ignore_na else ok.fill_null(False)
                others.append(out.select(ok.all().alias(f"_{len(others)}")))
        if rules:
            others.insert(0, lf.select(pl.all_horizontal(rules).alias("_rules")))
        if others:
            verdicts = others[0] if len(others) == 1 else pl.concat(others, how="horizontal")
            if not all(verdicts.collect().row(0)):
                return False
        if schema.unique:
            subsets = (
                [schema.unique] if all(isinstance(x, str) for x in schema.unique) else schema.unique
            )
            for subset in subsets:
                keys = typed.select(subset)
                # All rows distinct: n_unique is far cheaper than is_duplicated (which pandera
                # uses) and agrees with it wherever equality is exact (no float keys).
                exact = all(
                    d.is_integer() or d in (pl.String, pl.Boolean) or d.is_temporal()
                    for d in keys.dtypes
                )
                if exact and keys.n_unique() == keys.height:
                    continue
                if keys.is_duplicated().any():
                    return False
    except Exception:
        return False
    return True


def _pandera_failures(typed: pl.DataFrame, schema: pa.DataFrameSchema) -> pl.DataFrame:
    """Rows that break a rule of the schema: (row, column, reason)."""
    empty = _no_failures()
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
