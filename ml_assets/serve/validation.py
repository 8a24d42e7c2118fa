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

:func:`decode_json` turns a body into Python objects (orjson; a slow path names the field of a
NaN or Infinity literal), :func:`validate_records` checks a list of records against a schema
and returns them as value rows in schema order. Every problem is a :class:`RequestError` with
an HTTP status, a gRPC-friendly code and messages naming the field
(``records[3].car_value: expected a number, got "abc"``). No pandas, no pydantic on this path.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

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

MAX_FLOAT = sys.float_info.max
INT64 = (-(2**63), 2**63 - 1)
MAX_ERRORS = 20
JSON_TYPES = ("application/json",)


class Kind(StrEnum):
    """What a field holds on the wire."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STRING = "string"
    CATEGORY = "category"
    DATETIME = "datetime"
    DATE = "date"


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "invalid_argument"
    BAD_JSON = "bad_json"
    TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNAVAILABLE = "unavailable"


HTTP_STATUS = {
    ErrorCode.INVALID_ARGUMENT: 422,
    ErrorCode.BAD_JSON: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.UNAVAILABLE: 503,
}


class RequestError(Exception):
    """A request that cannot be served as sent; ``problems`` are (field, message) pairs."""

    def __init__(self, code: ErrorCode, problems: list[tuple[str, str]]) -> None:
        self.code = code
        self.problems = problems
        super().__init__(self.message)

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]

    @property
    def message(self) -> str:
        shown = [f"{f}: {m}" if f else m for f, m in self.problems[:MAX_ERRORS]]
        more = len(self.problems) - MAX_ERRORS
        return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code.value,
                "message": self.message,
                "fields": [{"field": f, "message": m} for f, m in self.problems[:MAX_ERRORS]],
            }
        }


def invalid(where: str, message: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_ARGUMENT, [(where, message)])


# --- schemas ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRule:
    """One field of a record: its kind and the rules a value must satisfy."""

    name: str
    kind: Kind
    nullable: bool = False
    required: bool = True
    min: float | None = None
    max: float | None = None
    allowed: tuple[Any, ...] | None = None
    description: str = ""

    def json_schema(self) -> dict[str, Any]:
        """The field as a JSON Schema (for the OpenAPI description)."""
        base: dict[str, Any] = {
            Kind.FLOAT: {"type": "number"},
            Kind.INT: {"type": "integer"},
            Kind.BOOL: {"type": "boolean"},
            Kind.STRING: {"type": "string"},
            Kind.CATEGORY: {"type": "string"},
            Kind.DATETIME: {"type": "string", "format": "date-time"},
            Kind.DATE: {"type": "string", "format": "date"},
        }[self.kind].copy()
        if self.min is not None:
            base["minimum"] = self.min
        if self.max is not None:
            base["maximum"] = self.max
        if self.allowed is not None:
            base["enum"] = list(self.allowed)
        if self.nullable:
            base = {"anyOf": [base, {"type": "null"}]}
        if self.description:
            base["description"] = self.description
        return base


@dataclass(frozen=True)
class RecordSchema:
    """The fields of one kind of record, in order, compiled for fast checks."""

    name: str
    fields: tuple[FieldRule, ...]
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
        set_(self, "_checks", tuple(_fast_check(f) for f in self.fields))

    def field(self, name: str) -> FieldRule:
        return self.by_name[name]


def _column_rule(
    name: str, column: Column, *, required: bool = True, description: str | None = None
) -> FieldRule:
    kind = Kind(column.type.value)
    allowed = tuple(column.allowed) if column.allowed is not None else None
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


def entity_schema(spec: FeatureSpec) -> RecordSchema:
    """Entity records (predict by keys): every contract entity column, as the contract says.

    Required: the columns the features read (row inputs and the group keys the online store is
    keyed by). Optional: the primary key (echoed to the prediction log), the event time (the
    request time when absent) and any entity column the features do not need.
    """
    ent = spec.contract.entity
    needed = set(spec.request_inputs())
    rules = []
    for name, column in ent.columns.items():
        rule = _column_rule(name, column, required=name in needed)
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


def feature_rules(spec: FeatureSpec) -> dict[str, FieldRule]:
    """The rule of every feature of the spec, derived from the contract columns behind it."""
    ent = spec.contract.entity
    dtypes = spec.dtypes()
    rules: dict[str, FieldRule] = {}
    for f in spec.row:
        what = f.description
        if isinstance(f, Passthrough):
            rules[f.name] = _column_rule(f.name, ent.columns[f.column], description=what or None)
        elif isinstance(f, MapValues):
            col = ent.columns[f.column]
            values = [*f.mapping.values(), *([f.default] if f.default is not None else [])]
            kind = Kind.INT if dtypes[f.name].is_integer() else Kind.FLOAT
            covered = col.allowed is not None and all(v in f.mapping for v in col.allowed)
            nullable = col.nullable or (f.default is None and not covered)
            allowed = tuple(sorted(set(values)))
            rules[f.name] = FieldRule(f.name, kind, nullable, allowed=allowed, description=what)
        elif isinstance(f, Ratio):
            rules[f.name] = FieldRule(f.name, Kind.FLOAT, nullable=True, description=what)
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
    if a.agg is Agg.SUM:
        return FieldRule(a.name, Kind.FLOAT, nullable=group_nullable, description=what)
    if a.agg is Agg.MEAN:
        lo, hi = (col.min, col.max) if col.type is not ColumnType.BOOL else (0, 1)
        return FieldRule(a.name, Kind.FLOAT, nullable=True, min=lo, max=hi, description=what)
    rule = _column_rule(a.name, col, description=what)  # LAST: a value of the column
    return FieldRule(
        rule.name, rule.kind, True, True, rule.min, rule.max, rule.allowed, rule.description
    )


def feature_schema(spec: FeatureSpec, features: Sequence[str]) -> RecordSchema:
    """Feature records (predict): exactly the model's features, every one required."""
    rules = feature_rules(spec)
    unknown = [f for f in features if f not in rules]
    if unknown:
        raise ValueError(
            f"{spec.dataset}: the model needs features {unknown} that the feature spec "
            f"({spec.origin}) does not declare"
        )
    return RecordSchema("features", tuple(rules[f] for f in features))


# --- fast checks -------------------------------------------------------------------------------


def _fast_check(rule: FieldRule) -> Callable[[Any], bool]:
    """A predicate that accepts exactly the values needing no conversion; anything it rejects
    goes through :func:`_coerce`, which converts (a whole float for an int, a datetime string)
    or explains what is wrong."""
    nullable = rule.nullable
    lo = -MAX_FLOAT if rule.min is None else rule.min
    hi = MAX_FLOAT if rule.max is None else rule.max
    if rule.kind is Kind.FLOAT:
        if rule.allowed is not None:
            allowed = frozenset(rule.allowed)

            def check(v: Any) -> bool:
                t = type(v)
                return ((t is float or t is int) and v in allowed) or (v is None and nullable)

            return check

        def check_float(v: Any) -> bool:
            t = type(v)
            return ((t is float or t is int) and lo <= v <= hi) or (v is None and nullable)

        return check_float
    if rule.kind is Kind.INT:
        ilo = INT64[0] if rule.min is None else rule.min
        ihi = INT64[1] if rule.max is None else rule.max
        if rule.allowed is not None:
            allowed = frozenset(rule.allowed)
            return lambda v: (type(v) is int and v in allowed) or (v is None and nullable)
        return lambda v: (type(v) is int and ilo <= v <= ihi) or (v is None and nullable)
    if rule.kind is Kind.BOOL:
        return lambda v: type(v) is bool or (v is None and nullable)
    if rule.kind in (Kind.STRING, Kind.CATEGORY):
        if rule.allowed is not None:
            allowed = frozenset(rule.allowed)
            return lambda v: (type(v) is str and v in allowed) or (v is None and nullable)
        return lambda v: type(v) is str or (v is None and nullable)
    # Datetimes and dates arrive as text and always take the conversion path.
    return lambda v: v is None and nullable


class NonFinite:
    """A NaN or Infinity literal found by the slow JSON path, kept to name its field."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def __repr__(self) -> str:
        return self.literal


def show(value: Any, limit: int = 60) -> str:
    """A value as the client wrote it (JSON), shortened."""
    if isinstance(value, NonFinite):
        return value.literal
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    try:
        text = orjson.dumps(value, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


_EXPECTED = {
    Kind.FLOAT: "a number",
    Kind.INT: "an integer",
    Kind.BOOL: "true or false",
    Kind.STRING: "a string",
    Kind.CATEGORY: "a string",
    Kind.DATETIME: 'an ISO 8601 datetime string (e.g. "2019-07-01T12:00:00Z")',
    Kind.DATE: 'an ISO 8601 date string (e.g. "2019-07-01")',
}


def _coerce(rule: FieldRule, v: Any) -> Any:
    """The value to use for a value the fast check rejected, or a ValueError saying why not."""
    if v is None:
        raise ValueError("must not be null")
    kind = rule.kind
    got = show(v)
    if kind in (Kind.FLOAT, Kind.INT):
        if isinstance(v, NonFinite) or (isinstance(v, float) and not math.isfinite(v)):
            raise ValueError(f"expected a finite number, got {got}")
        if type(v) not in (int, float):
            raise ValueError(f"expected {_EXPECTED[kind]}, got {got}")
        if kind is Kind.INT and type(v) is float:
            if not v.is_integer():
                raise ValueError(f"expected an integer, got {got}")
            v = int(v)
            if _fast_check(rule)(v):
                return v
        if rule.allowed is not None and v not in rule.allowed:
            raise ValueError(f"expected one of {show(list(rule.allowed), 200)}, got {got}")
        if rule.min is not None and v < rule.min:
            raise ValueError(f"must be >= {_num(rule.min)}, got {got}")
        if rule.max is not None and v > rule.max:
            raise ValueError(f"must be <= {_num(rule.max)}, got {got}")
        if kind is Kind.INT and not INT64[0] <= v <= INT64[1]:
            raise ValueError(f"out of the 64-bit integer range, got {got}")
        if kind is Kind.FLOAT and abs(v) > MAX_FLOAT:
            raise ValueError(f"out of the double range, got {got}")
        return v
    if kind is Kind.BOOL:
        raise ValueError(f"expected true or false, got {got}")
    if kind in (Kind.STRING, Kind.CATEGORY):
        if type(v) is not str:
            raise ValueError(f"expected {_EXPECTED[kind]}, got {got}")
        assert rule.allowed is not None
        raise ValueError(f"expected one of {show(list(rule.allowed), 200)}, got {got}")
    if kind is Kind.DATETIME:
        if type(v) is not str:
            raise ValueError(f"expected {_EXPECTED[kind]}, got {got}")
        try:
            when = dt.datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"expected {_EXPECTED[kind]}, got {got}") from None
        return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    if type(v) is not str:
        raise ValueError(f"expected {_EXPECTED[kind]}, got {got}")
    try:
        return dt.date.fromisoformat(v)
    except ValueError:
        raise ValueError(f"expected {_EXPECTED[kind]}, got {got}") from None


# --- bodies and records ----------------------------------------------------------------------


def check_content_type(content_type: str | None) -> None:
    """Only JSON is accepted (not form data, not BentoML's pickle content type)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in JSON_TYPES:
        got = f'"{content_type}"' if content_type else "none"
        raise RequestError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            [("content-type", f"expected application/json, got {got}")],
        )


def too_large(size: int, limit: int) -> RequestError:
    return RequestError(
        ErrorCode.TOO_LARGE, [("body", f"{size} bytes is more than the limit of {limit} bytes")]
    )


def decode_json(body: bytes) -> Any:
    """Parse a JSON body. NaN and Infinity literals (not JSON) are kept as :class:`NonFinite` so
    that validation can name their field; anything else unparsable is a BAD_JSON error."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body, parse_constant=NonFinite)
        except (ValueError, RecursionError):
            raise RequestError(ErrorCode.BAD_JSON, [("body", f"not valid JSON: {exc}")]) from None


def records_of(payload: Any, max_records: int) -> list[Any]:
    """The ``records`` list of a request object: present, a non-empty list, not too long."""
    if type(payload) is not dict:
        raise invalid("body", f'expected a JSON object with "records", got {show(payload)}')
    if len(payload) != 1 or "records" not in payload:
        unknown = [k for k in payload if k != "records"]
        if unknown:
            raise invalid(str(unknown[0]), 'unknown field (a request has only "records")')
        raise invalid("records", "missing")
    records = payload["records"]
    if type(records) is not list:
        raise invalid("records", f"expected a list of records, got {show(records)}")
    check_count(len(records), max_records)
    return records


def check_count(n: int, max_records: int) -> None:
    if n == 0:
        raise invalid("records", "empty batch: send at least one record")
    if n > max_records:
        raise RequestError(
            ErrorCode.TOO_LARGE,
            [("records", f"{n} records is more than the limit of {max_records} per request")],
        )


def validate_records(schema: RecordSchema, records: list[Any]) -> list[list[Any]]:
    """Check every record against ``schema``; return their values as rows in schema order.

    Optional fields a record leaves out are None. Raises :class:`RequestError` listing every
    problem (unknown and missing fields, wrong types, nulls, ranges, categories), each named
    ``records[i].field``.
    """
    names = schema.names
    checks = schema._checks
    full = schema.all_names
    rows: list[list[Any]] = []
    problems: list[tuple[str, str]] = []
    append = rows.append
    for i, rec in enumerate(records):
        if type(rec) is not dict:
            problems.append((f"records[{i}]", f"expected an object, got {show(rec)}"))
            continue
        if rec.keys() == full:
            row = [rec[n] for n in names]
        else:
            row = _partial_row(schema, rec, i, problems)
        for j, check in enumerate(checks):
            if not check(row[j]):
                rule = schema.fields[j]
                if rule.name not in rec:
                    continue  # left out: optional, or already reported as missing
                try:
                    row[j] = _coerce(rule, row[j])
                except ValueError as exc:
                    problems.append((f"records[{i}].{rule.name}", str(exc)))
        append(row)
        if len(problems) > MAX_ERRORS:
            break
    if problems:
        raise RequestError(ErrorCode.INVALID_ARGUMENT, problems)
    return rows


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
