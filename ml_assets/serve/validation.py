"""Request validation generated from a dataset's contract: plain functions for HTTP and gRPC.

Two record schemas per dataset, neither written by hand:

* :func:`entity_schema` (predict by keys): the contract's ``entity.columns``. The columns the
  features read (:meth:`FeatureSpec.request_inputs`) are required; the primary key, the event
  time (default: the request time) and any other entity column are optional. Types, nullability,
  ranges and allowed categories are the contract's.
* :func:`feature_schema` (predict on feature rows): the model's features, each with the rules
  implied by the contract column it is computed from (a passthrough keeps the column's type,
  range and categories; a mapped band may only take the mapping's values; a log keeps the log
  of the range; date parts their calendar range; a count is a non-negative integer; a rate lies
  in [0, 1]; ...).
* :func:`id_schema` (predict on feature rows, optional): the entity key and event time a feature
  record may carry next to the features, so that the prediction log can place the row at its
  event and join its label. Never model inputs.

:func:`validate_records` checks a list of records against a schema and returns them as value
rows in schema order; :func:`validate_feature_records` does the same for feature records and
splits off their optional id fields. Every problem is a :class:`~ml_assets.serve.decoding.RequestError` with an
HTTP status, a gRPC-friendly code and messages naming the field (``records[3].car_value:
expected a number, got "abc"``). No pandas, no pydantic on this path.

Body decoding and the errors are :mod:`ml_assets.serve.decoding`, one field's rule and checks
:mod:`ml_assets.serve.fields`; their names are imported here too, so
``from ml_assets.serve.validation import ...`` keeps working for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ml_assets.contracts.model import Column, ColumnType
from ml_assets.features.spec import (
    Agg,
    Aggregate,
    DatePart,
    DatePartOf,
    FeatureSpec,
    Log1p,
    MapValues,
    Passthrough,
    Ratio,
    RequestDatePart,
    Source,
)
from ml_assets.serve.decoding import (
    HTTP_STATUS,
    JSON_TYPES,
    MAX_ERRORS,
    ErrorCode,
    NonFinite,
    RequestError,
    check_content_type,
    check_count,
    decode_json,
    invalid,
    records_of,
    show,
    too_large,
)
from ml_assets.serve.fields import INT64, MAX_FLOAT, FieldRule, Kind, coerce, fast_check

# --- schemas ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordSchema:
    """The fields of one kind of record, in order, compiled for fast checks."""

    name: str
    fields: tuple[FieldRule, ...]
    together: tuple[str, ...] = ()
    """Fields a record gives all of or none of (the parts of a composite key)."""
    names: tuple[str, ...] = field(init=False)
    required: frozenset[str] = field(init=False)
    all_names: frozenset[str] = field(init=False)
    by_name: dict[str, FieldRule] = field(init=False)
    _checks: tuple[Callable[[Any], bool], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "names", tuple(f.name for f in self.fields))
        set_(self, "required", frozenset(f.name for f in self.fields if f.required))
        set_(self, "all_names", frozenset(self.names))
        set_(self, "by_name", {f.name: f for f in self.fields})
        set_(self, "_checks", tuple(fast_check(f) for f in self.fields))

    def field(self, name: str) -> FieldRule:
        return self.by_name[name]


Learned = Mapping[str, Sequence[str]]
"""The values a champion learned, per ``categories: learned`` entity column."""


def learned_by_column(spec: FeatureSpec, by_feature: Mapping[str, Sequence[str]]) -> Learned:
    """The model's learned categories (per passthrough feature) per entity column."""
    return {
        f.column: tuple(by_feature[f.name])
        for f in spec.row
        if isinstance(f, Passthrough) and f.name in by_feature
    }


def _column_rule(
    name: str,
    column: Column,
    *,
    required: bool = True,
    description: str | None = None,
    learned: Sequence[str] | None = None,
) -> FieldRule:
    kind = Kind(column.type.value)
    allowed = tuple(column.allowed) if column.allowed is not None else None
    if column.categories == "learned" and column.unseen == "reject" and learned is not None:
        allowed = tuple(learned)  # the values the champion was trained on
    return FieldRule(
        name=name,
        kind=kind,
        nullable=column.nullable,
        required=required,
        min=column.min,
        max=column.max,
        allowed=allowed,
        description=column.description if description is None else description,
    )


def entity_schema(spec: FeatureSpec, learned: Learned | None = None) -> RecordSchema:
    """Entity records (predict by keys): every contract entity column, as the contract says.

    Required: the columns the features read (row inputs and the group keys the online store is
    keyed by). Optional: the primary key (echoed to the prediction log), the event time (the
    request time when absent) and any entity column the features do not need.
    """
    ent = spec.contract.entity
    needed = set(spec.request_inputs())
    rules = []
    for name, column in ent.columns.items():
        rule = _column_rule(
            name, column, required=name in needed, learned=(learned or {}).get(name)
        )
        if name == ent.event_time:
            rule = FieldRule(
                name=name,
                kind=Kind.DATETIME,
                nullable=False,
                required=False,
                description=f"{column.description} Default: the request time.".strip(),
            )
        rules.append(rule)
    return RecordSchema("entity", tuple(rules))


_DATE_PART_RANGE: dict[DatePart, tuple[int, int | None]] = {
    DatePart.HOUR: (0, 23),
    DatePart.MINUTE: (0, 59),
    DatePart.WEEKDAY: (1, 7),
    DatePart.DAY: (1, 31),
    DatePart.MONTH: (1, 12),
    DatePart.YEAR: (1, None),
    DatePart.DAY_OF_YEAR: (1, 366),
    DatePart.WEEK: (1, 53),
}


def _date_part_rule(name: str, part: DatePart, nullable: bool, description: str) -> FieldRule:
    if part is DatePart.IS_WEEKEND:
        return FieldRule(name, Kind.BOOL, nullable=nullable, description=description)
    lo, hi = _DATE_PART_RANGE[part]
    return FieldRule(name, Kind.INT, nullable=nullable, min=lo, max=hi, description=description)


def _log1p_bound(x: float | None, up: bool) -> float | None:
    if x is None or x <= -1:
        return None
    value = math.log1p(x)
    # polars and math may round the last bit differently: never reject a value on the bound.
    return value + abs(value) * 1e-12 if up else value - abs(value) * 1e-12


def _quotients(num: tuple[float, float], den: tuple[float, float]) -> tuple[float, float]:
    """The range of n / d over n in ``num``, d in ``den`` (0 < d or d < 0 throughout; bounds
    may be infinite): division is monotone in each argument, so the corners bound it."""
    out = []
    for n in num:
        for d in den:
            if math.isinf(n) and math.isinf(d):
                return -math.inf, math.inf  # no corner value: give up this side (unbounded)
            out.append(n / d if not math.isinf(d) else 0.0)
    return min(out), max(out)


def ratio_bounds(numerator: Column, denominator: Column) -> tuple[float | None, float | None]:
    """What a ``ratio`` feature can be, from the contract ranges of its two columns.

    The feature is null where the denominator is 0, so only nonzero denominators count; the
    smallest nonzero magnitude of a denominator is 1 for an integer column and the smallest
    positive double for a float one (the feature code divides in Float64). A side with no
    bound stays open (None). E.g. a value in [0, 1e6] over a length in [1, 120] is in [0, 1e6].
    """
    inf = math.inf
    num = (
        -inf if numerator.min is None else float(numerator.min),
        inf if numerator.max is None else float(numerator.max),
    )
    d_lo = -inf if denominator.min is None else float(denominator.min)
    d_hi = inf if denominator.max is None else float(denominator.max)
    tiny = 1.0 if denominator.type is ColumnType.INT else 5e-324
    parts = []
    if d_hi >= tiny:
        parts.append((max(d_lo, tiny), d_hi))
    if d_lo <= -tiny:
        parts.append((d_lo, min(d_hi, -tiny)))
    if not parts:  # the denominator is always 0: the feature is always null
        return None, None
    ranges = [_quotients(num, p) for p in parts]
    lo = min(r[0] for r in ranges)
    hi = max(r[1] for r in ranges)
    # the bound is exact in IEEE arithmetic; a hair of slack never rejects a value on it
    lo_b = None if math.isinf(lo) or math.isnan(lo) else lo - abs(lo) * 1e-12
    hi_b = None if math.isinf(hi) or math.isnan(hi) else hi + abs(hi) * 1e-12
    return lo_b, hi_b


def feature_rules(spec: FeatureSpec, learned: Learned | None = None) -> dict[str, FieldRule]:
    """The rule of every feature of the spec, derived from the contract columns behind it
    (``learned``: the champion's values of its learned categories, per entity column)."""
    ent = spec.contract.entity
    learned = learned or {}
    dtypes = spec.dtypes()
    rules: dict[str, FieldRule] = {}
    for f in spec.row:
        what = f.description
        if isinstance(f, Passthrough):
            rules[f.name] = _column_rule(
                f.name,
                ent.columns[f.column],
                description=what or None,
                learned=learned.get(f.column),
            )
        elif isinstance(f, MapValues):
            col = ent.columns[f.column]
            values = [*f.mapping.values(), *([f.default] if f.default is not None else [])]
            kind = Kind.INT if dtypes[f.name].is_integer() else Kind.FLOAT
            covered = col.allowed is not None and all(v in f.mapping for v in col.allowed)
            nullable = col.nullable or (f.default is None and not covered)
            allowed = tuple(sorted(set(values)))
            rules[f.name] = FieldRule(f.name, kind, nullable, allowed=allowed, description=what)
        elif isinstance(f, Ratio):
            lo, hi = ratio_bounds(ent.columns[f.numerator], ent.columns[f.denominator])
            rules[f.name] = FieldRule(
                f.name, Kind.FLOAT, nullable=True, min=lo, max=hi, description=what
            )
        elif isinstance(f, Log1p):
            col = ent.columns[f.column]
            rules[f.name] = FieldRule(
                f.name,
                Kind.FLOAT,
                nullable=True,
                min=_log1p_bound(col.min, up=False),
                max=_log1p_bound(col.max, up=True),
                description=what,
            )
        elif isinstance(f, DatePartOf):
            column = f.column or spec.event_time
            rules[f.name] = _date_part_rule(f.name, f.part, ent.columns[column].nullable, what)
    for a in spec.aggregates:
        rules[a.name] = _aggregate_rule(spec, a)
    for r in spec.request:
        rules[r.name] = _request_rule(r)
    return {n: rules[n] for n in spec.names}


def _request_rule(r: RequestDatePart) -> FieldRule:
    return _date_part_rule(r.name, r.part, False, r.description or "Part of the request time.")


def _aggregate_rule(spec: FeatureSpec, a: Aggregate) -> FieldRule:
    contract = spec.contract
    group_nullable = contract.entity.columns[a.group_by].nullable
    what = a.description
    if a.agg is Agg.COUNT:
        return FieldRule(a.name, Kind.INT, nullable=group_nullable, min=0, description=what)
    if a.agg is Agg.RATE:
        return FieldRule(a.name, Kind.FLOAT, nullable=True, min=0, max=1, description=what)
    table = contract.entity if a.source is Source.ENTITY else contract.labels
    assert a.column is not None
    col = table.columns[a.column]
    if a.agg is Agg.SUM:  # of any number of values: only the sign of the column's range holds
        lo = 0 if col.min is not None and col.min >= 0 else None
        hi = 0 if col.max is not None and col.max <= 0 else None
        return FieldRule(a.name, Kind.FLOAT, group_nullable, min=lo, max=hi, description=what)
    if a.agg is Agg.MEAN:
        lo, hi = (col.min, col.max) if col.type is not ColumnType.BOOL else (0, 1)
        return FieldRule(a.name, Kind.FLOAT, nullable=True, min=lo, max=hi, description=what)
    rule = _column_rule(a.name, col, description=what)  # LAST: a value of the column
    return FieldRule(
        rule.name, rule.kind, True, True, rule.min, rule.max, rule.allowed, rule.description
    )


def feature_schema(
    spec: FeatureSpec, features: Sequence[str], learned: Learned | None = None
) -> RecordSchema:
    """Feature records (predict): exactly the model's features, every one required."""
    rules = feature_rules(spec, learned)
    unknown = [f for f in features if f not in rules]
    if unknown:
        raise ValueError(
            f"{spec.dataset}: the model needs features {unknown} that the feature spec "
            f"({spec.origin}) does not declare"
        )
    return RecordSchema("features", tuple(rules[f] for f in features))


def id_schema(spec: FeatureSpec, features: Sequence[str]) -> RecordSchema:
    """The optional id fields of a feature record: the entity key and the event time.

    A client scoring feature rows may say which entity and event a row is for; the prediction
    log then records them (its key and event-time columns), so monitoring places the row at the
    event it predicts and joins its late label by the key. Typed as the contract's columns
    (the event time an ISO 8601 string), never null when given, never model inputs. The parts
    of a composite key come all together or not at all.

    A key or event-time column that is also one of the model's ``features`` is left out: the
    feature meaning wins (the value is validated by the feature's rule and fed to the model;
    the log's column of that name holds the feature value), so the name is never ambiguous.
    The feature spec rejects such a feature today (:func:`ml_assets.features.spec.parse_feature_spec`:
    "is a key, event time or target"; none of the bundled ones has one), so this is a guard,
    not a case served.
    """
    ent = spec.contract.entity
    taken = set(features)
    rules: list[FieldRule] = []
    for name in spec.key:
        if name in taken:
            continue  # a feature: the feature meaning wins (see above)
        column = ent.columns[name]
        what = (
            f"{column.description} Optional: the entity key, never a model input; logged with "
            "the prediction so that its label can be joined."
        ).strip()
        rules.append(
            FieldRule(
                name=name,
                kind=Kind(column.type.value),
                nullable=False,
                required=False,
                min=column.min,
                max=column.max,
                allowed=tuple(column.allowed) if column.allowed is not None else None,
                description=what,
            )
        )
    if spec.event_time not in taken:  # a feature of that name wins too
        column = ent.columns[spec.event_time]
        what = (
            f"{column.description} Optional: when the event happened (ISO 8601), never a model "
            "input; logged as the prediction's event time (default: none, the request time "
            "places it)."
        ).strip()
        rules.append(
            FieldRule(
                spec.event_time, Kind.DATETIME, nullable=False, required=False, description=what
            )
        )
    together = tuple(r.name for r in rules if r.name != spec.event_time)
    return RecordSchema("ids", tuple(rules), together=together if len(together) > 1 else ())


# --- records ---------------------------------------------------------------------------------


def validate_records(schema: RecordSchema, records: list[Any]) -> list[list[Any]]:
    """Check every record against ``schema``; return their values as rows in schema order.

    Optional fields a record leaves out are None. Raises :class:`RequestError` listing every
    problem (unknown and missing fields, wrong types, nulls, ranges, categories), each named
    ``records[i].field``.
    """
    return _validate(schema, records, None)[0]


def validate_feature_records(
    schema: RecordSchema, ids: RecordSchema, records: list[Any]
) -> tuple[list[list[Any]], list[list[Any] | None] | None]:
    """:func:`validate_records` for feature records that may carry the id fields of ``ids``
    (:func:`id_schema`): the feature rows (schema order, ids split off), and per record its id
    row in ``ids`` order (None for a record giving none), or None when no record gave any.

    A record without id fields takes exactly the path of :func:`validate_records`; every id
    problem is reported with the others, named ``records[i].field``.
    """
    return _validate(schema, records, ids)


def _validate(
    schema: RecordSchema, records: list[Any], ids: RecordSchema | None
) -> tuple[list[list[Any]], list[list[Any] | None] | None]:
    names = schema.names
    checks = schema._checks
    full = schema.all_names
    id_names = ids.all_names if ids is not None and ids.fields else None
    id_rows: dict[int, list[Any]] = {}
    rows: list[list[Any]] = []
    problems: list[tuple[str, str]] = []
    append = rows.append
    for i, rec in enumerate(records):
        if type(rec) is not dict:
            problems.append((f"records[{i}]", f"expected an object, got {show(rec)}"))
            continue
        if rec.keys() == full:  # the hot path: exactly the schema's fields
            row = [rec[n] for n in names]
        else:
            if id_names is not None and not id_names.isdisjoint(rec):
                assert ids is not None
                id_rows[i] = _id_row(ids, rec, i, problems)
                if rec.keys() - id_names == full:  # the features exactly, besides the ids
                    row = [rec[n] for n in names]
                else:
                    rest = {k: v for k, v in rec.items() if k not in id_names}
                    row = _partial_row(schema, rest, i, problems)
            else:
                row = _partial_row(schema, rec, i, problems)
        for j, check in enumerate(checks):
            if not check(row[j]):
                rule = schema.fields[j]
                if rule.name not in rec:
                    continue  # left out: optional, or already reported as missing
                try:
                    row[j] = coerce(rule, row[j])
                except ValueError as exc:
                    problems.append((f"records[{i}].{rule.name}", str(exc)))
        append(row)
        if len(problems) > MAX_ERRORS:
            break
    if problems:
        raise RequestError(ErrorCode.INVALID_ARGUMENT, problems)
    if not id_rows:
        return rows, None
    return rows, [id_rows.get(i) for i in range(len(rows))]


def _id_row(ids: RecordSchema, rec: dict, i: int, problems: list[tuple[str, str]]) -> list[Any]:
    """The id fields of a record, checked, in ``ids`` order (None where left out)."""
    row = [rec.get(n) for n in ids.names]
    if ids.together:
        given = [n for n in ids.together if n in rec]
        if given and len(given) < len(ids.together):
            key = ", ".join(ids.together)
            for n in ids.together:
                if n not in rec:
                    problems.append(
                        (
                            f"records[{i}].{n}",
                            f"missing: the key is ({key}); give all of its fields or none",
                        )
                    )
    for j, check in enumerate(ids._checks):
        rule = ids.fields[j]
        if rule.name in rec and not check(row[j]):
            try:
                row[j] = coerce(rule, row[j])
            except ValueError as exc:
                problems.append((f"records[{i}].{rule.name}", str(exc)))
    return row


def _partial_row(
    schema: RecordSchema, rec: dict, i: int, problems: list[tuple[str, str]]
) -> list[Any]:
    """Report unknown and missing required fields; the row of what is there (None elsewhere),
    so the fields present are still checked and every problem is named in one answer."""
    keys = rec.keys()
    for k in [k for k in keys if k not in schema.all_names]:
        problems.append((f"records[{i}].{k}", "unknown field"))
    for n in schema.names:
        if n in schema.required and n not in keys:
            problems.append((f"records[{i}].{n}", "missing (required)"))
    return [rec.get(n) for n in schema.names]


__all__ = [
    "HTTP_STATUS",
    "INT64",
    "JSON_TYPES",
    "MAX_ERRORS",
    "MAX_FLOAT",
    "ErrorCode",
    "FieldRule",
    "Kind",
    "NonFinite",
    "RecordSchema",
    "RequestError",
    "check_content_type",
    "check_count",
    "decode_json",
    "entity_schema",
    "feature_rules",
    "feature_schema",
    "id_schema",
    "invalid",
    "ratio_bounds",
    "records_of",
    "show",
    "too_large",
    "validate_feature_records",
    "validate_records",
]
