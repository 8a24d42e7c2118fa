"""Split a raw partition into valid rows and quarantined rows, each with its reasons.

Every raw row ends up in exactly one of the two outputs (valid + quarantined = raw, always).
Types come from the contract; the rules are those of the pandera schema generated from it.
pandera checks rule by rule, each a separate query with its own failure-case bookkeeping, which
is many times slower than the rules themselves. So the schema's own check expressions are taken
from it and evaluated for every row in ONE polars query, and each bad row's reasons are written
from them, with the texts and in the order pandera reports them (``_split_valid(...,
use_pandera=True)`` is the reference, see ml_assets_tests/validate/test_quarantine.py). A schema
whose rules cannot be taken that way is validated by pandera itself.
"""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

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


class _WrongType(NamedTuple):
    column: str
    reason: str
    rows: pl.Series  # True where a non-null raw value did not cast to the contract's type


class _Rule(NamedTuple):
    column: str | None  # pandera's failure-case column (the schema's name for a frame rule)
    reason: str
    fails: pl.Expr  # True on each row pandera reports as breaking the rule


def split_valid(
    raw: pl.DataFrame,
    table: Table,
    timezone: str = "UTC",
    schema: pa.DataFrameSchema | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, ValidationReport]:
    """Return (valid rows typed per contract, quarantined rows with reasons, report)."""
    return _split_valid(raw, table, timezone, schema or pandera_schema(table))


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
        elif col.type is ColumnType.DATETIME and raw_types[name] == pl.String:
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
                _WrongType(name, f"{name}: wrong type, expected {col.type.value}", rows)
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
    rules = _rules(schema, typed)
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


class _Probe:
    """Stands in for the LazyFrame a check function selects from, to take its expression.

    pandera's built-in polars checks (and ``pandera_schema``'s own) are all
    ``data.lazyframe.select(<expr>)``; with the expression in hand, every check of a table runs
    in ONE query.
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


def _check_expr(check: pa.Check, name: str) -> pl.Expr | None:
    """The polars expression a column check's function selects, if it is one row-wise select."""
    from pandera.api.polars.types import PolarsData

    if (
        check.element_wise
        or check.groupby is not None
        or check.raise_warning
        or check.n_failure_cases is not None
    ):
        return None
    # The function pandera's check backend applies (built-ins resolved for polars, as
    # Check.__call__ does).
    fn = check._check_fn
    builtin = getattr(fn, "__name__", None)
    if builtin is not None and check.is_builtin_check(builtin):
        fn = check.get_builtin_check_fn(builtin)
    probe = _Probe()
    try:
        out = fn(PolarsData(probe, name), **check._check_kwargs)
    except Exception:
        return None
    expr = probe.expr() if out is probe else None
    # One value per row, or pandera would not report the rows this would.
    if expr is None or not expr.meta.is_length_preserving():
        return None
    return expr


# Rules taken from a schema, by the schema's id: (the schema, the frame's dtypes, rules).
_RULES: dict[int, tuple[weakref.ref, tuple, list[_Rule] | None]] = {}


def _rules(schema: pa.DataFrameSchema, typed: pl.DataFrame) -> list[_Rule] | None:
    """Every rule ``schema.validate(typed, lazy=True)`` checks row by row, in its order.

    None when pandera would not validate ``typed`` with its native polars backend as usual,
    or when the schema's rules cannot be taken (see ``_take_rules``). Taking them costs about
    as much as checking 10,000 rows, so they are kept per schema (a schema is not changed once
    used: pandera's own API returns changed copies) and frame dtypes.
    """
    from pandera.api.polars.utils import get_validation_depth
    from pandera.backends.polars.checks import PolarsCheckBackend
    from pandera.backends.polars.container import DataFrameSchemaBackend
    from pandera.config import ValidationDepth, get_config_context

    try:
        if (
            not get_config_context().validation_enabled
            or get_validation_depth(typed) is ValidationDepth.SCHEMA_ONLY
            # The backends pandera registers on its first validate() in a process.
            or type(schema.get_backend(typed)) is not DataFrameSchemaBackend
            or pa.Check.get_backend(typed.lazy()) is not PolarsCheckBackend
        ):
            return None
    except Exception:
        return None
    key = id(schema)
    dtypes = tuple(typed.schema.items())
    kept = _RULES.get(key)
    if kept is not None and kept[0]() is schema and kept[1] == dtypes:
        return kept[2]
    rules = _take_rules(schema, typed)
    _RULES[key] = (weakref.ref(schema, lambda _, key=key: _RULES.pop(key, None)), dtypes, rules)
    return rules


def _take_rules(schema: pa.DataFrameSchema, typed: pl.DataFrame) -> list[_Rule] | None:
    """The rules of ``_rules``, or None if pandera has to check them.

    Mirrors pandera's native polars backend for the schema features ``pandera_schema`` uses:
    exact columns, dtypes, frame-level uniqueness, non-null (NaN counts as null for floats),
    column uniqueness and the columns' own checks (their expressions; nulls passing when the
    check ignores them), reported as ``"{column}: {check}"`` or, for uniqueness, ``"duplicate
    key"``. Anything else (dataframe-level checks, parsers, coercion, defaults, regex columns,
    element-wise or grouped checks, a check that is not one row-wise select) answers None.
    """
    from pandera.api.polars.types import PolarsData

    try:
        lf = typed.lazy()
        dtypes = typed.schema
        if (
            schema.checks
            or getattr(schema, "parsers", None)
            or schema.dtype is not None
            or schema.coerce
            or schema.add_missing_columns
            or schema.drop_invalid_rows
            or list(typed.columns) != list(schema.columns)
        ):
            return None
        rules: list[_Rule] = []
        if schema.unique:
            # Only the first key with duplicates is reported.
            subsets = (
                [schema.unique] if all(isinstance(x, str) for x in schema.unique) else schema.unique
            )
            earlier: list[pl.Expr] = []
            for subset in subsets:
                if not subset:
                    return None
                dup = (
                    pl.col(subset[0]).is_duplicated()
                    if len(subset) == 1
                    else pl.struct(subset).is_duplicated()
                )
                fails = dup & ~pl.any_horizontal(earlier) if earlier else dup
                rules.append(_Rule(schema.name, "duplicate key", fails))
                earlier.append(dup.any())
        checked: list[pl.Expr] = []
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
                return None
            if not column.nullable:
                fails = pl.col(name).is_null()
                if dtypes[name] in (pl.Float32, pl.Float64):
                    fails = fails | pl.col(name).is_nan()
                rules.append(_Rule(name, f"{name}: not_nullable", fails))
            if column.unique:
                rules.append(_Rule(name, "duplicate key", pl.col(name).is_duplicated()))
            for check in column.checks:
                expr = _check_expr(check, name)
                if expr is None:
                    return None
                checked.append(expr)
                label = (
                    check.error
                    if check.error is not None
                    else check.name
                    if check.name is not None
                    else str(check)
                )
                reason = "duplicate key" if "uniqueness" in label else f"{name}: {label}"
                ok = expr.fill_null(check.ignore_na)  # pandera: out | out.is_null(), or nulls fail
                rules.append(_Rule(name, reason, ~ok))
        if checked:
            outputs = lf.select(e.alias(f"_{i}") for i, e in enumerate(checked)).collect_schema()
            if any(dtype != pl.Boolean for dtype in outputs.dtypes()):
                return None
    except Exception:
        return None
    return rules


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
