"""The rules of a pandera schema as polars expressions, to check every row in ONE query.

pandera checks a polars frame rule by rule, each a separate query with its own failure-case
bookkeeping, which is many times slower than the rules themselves. :func:`schema_rules` takes
the rules ``schema.validate(typed, lazy=True)`` would check out of the schema instead: frame
and column uniqueness, non-null, and each column check's own expression (caught by standing in
for the frame it selects from), each with the column and reason text pandera reports. It
answers None whenever pandera would not validate the frame the usual way or a rule cannot be
taken; the caller then asks pandera itself.

The pandera side of :mod:`ml_assets.validate.quarantine`, which turns these rules into the
valid/quarantined split and its reasons; kept apart because it mirrors pandera's internals
(its polars backend and check functions), which a pandera upgrade may change.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import pandera.polars as pa
import polars as pl


class Rule(NamedTuple):
    """One row-wise rule of a schema, as pandera reports its failures."""

    column: str | None  # pandera's failure-case column (the schema's name for a frame rule)
    reason: str
    fails: pl.Expr  # True on each row pandera reports as breaking the rule


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


def check_expr(check: pa.Check, name: str) -> pl.Expr | None:
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
_RULES: dict[int, tuple[weakref.ref, tuple, list[Rule] | None]] = {}


def schema_rules(schema: pa.DataFrameSchema, typed: pl.DataFrame) -> list[Rule] | None:
    """Every rule ``schema.validate(typed, lazy=True)`` checks row by row, in its order.

    None when pandera would not validate ``typed`` with its native polars backend as usual,
    or when the schema's rules cannot be taken (see :func:`take_rules`). Taking them costs about
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
    rules = take_rules(schema, typed)
    _RULES[key] = (weakref.ref(schema, lambda _, key=key: _RULES.pop(key, None)), dtypes, rules)
    return rules


def take_rules(schema: pa.DataFrameSchema, typed: pl.DataFrame) -> list[Rule] | None:
    """The rules of :func:`schema_rules`, or None if pandera has to check them.

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
        rules: list[Rule] = []
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
                rules.append(Rule(schema.name, "duplicate key", fails))
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
                rules.append(Rule(name, f"{name}: not_nullable", fails))
            if column.unique:
                rules.append(Rule(name, "duplicate key", pl.col(name).is_duplicated()))
            for check in column.checks:
                expr = check_expr(check, name)
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
                rules.append(Rule(name, reason, ~ok))
        if checked:
            outputs = lf.select(e.alias(f"_{i}") for i, e in enumerate(checked)).collect_schema()
            if any(dtype != pl.Boolean for dtype in outputs.dtypes()):
                return None
    except Exception:
        return None
    return rules
