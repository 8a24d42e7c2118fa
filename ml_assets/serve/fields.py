"""One field of a request record: its rule, the fast check of a value, and the slow path.

A :class:`FieldRule` says what a field holds on the wire (its :class:`Kind`), whether it may be
null or left out, and its range and allowed values. Each rule compiles to a fast predicate
(:func:`fast_check`) that accepts exactly the values needing no conversion; whatever it rejects
goes through :func:`coerce`, which converts (a whole float for an int, a datetime string) or
says what is wrong, in the words the client sees.

The per-value half of validation, kept apart from the record schemas derived from a contract
(:mod:`ml_assets.serve.validation`), which compile these rules and run them over records.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ml_assets.serve.decoding import NonFinite, show

MAX_FLOAT = sys.float_info.max
INT64 = (-(2**63), 2**63 - 1)
TIME_RANGE = (dt.datetime(1900, 1, 1, tzinfo=dt.UTC), dt.datetime(2200, 1, 1, tzinfo=dt.UTC))
"""Datetimes and dates a request may give: [1900-01-01, 2200-01-01) UTC. A platform bound
(contracts declare no time range): wide enough for any event a model scores, narrow enough that
every value converts to UTC, to the log's microsecond timestamps and to pandas' nanoseconds."""
_TIME_TEXT = f"{TIME_RANGE[0]:%Y-%m-%d} to before {TIME_RANGE[1]:%Y-%m-%d} (UTC)"
MAX_UTC_OFFSET = dt.timedelta(hours=14)
"""The largest UTC offset in use (Kiribati, +14:00); larger ones are typos, rejected."""


class Kind(StrEnum):
    """What a field holds on the wire."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STRING = "string"
    CATEGORY = "category"
    DATETIME = "datetime"
    DATE = "date"


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
        lo, hi = self.min, self.max
        if self.kind is Kind.INT:  # what the server (and protobuf's int64) takes at most
            lo = INT64[0] if lo is None else lo
            hi = INT64[1] if hi is None else hi
        if lo is not None:
            base["minimum"] = lo
        if hi is not None:
            base["maximum"] = hi
        if self.allowed is not None:
            base["enum"] = list(self.allowed)
        if self.nullable:
            base = {"anyOf": [base, {"type": "null"}]}
        description = self.description
        if self.kind in (Kind.DATETIME, Kind.DATE):
            rule = f"From {_TIME_TEXT}" + (
                "; a UTC offset within -14:00..+14:00, none meaning UTC."
                if self.kind is Kind.DATETIME
                else "."
            )
            description = f"{description} {rule}".strip()
        if description:
            base["description"] = description
        return base


# --- fast checks -------------------------------------------------------------------------------


def fast_check(rule: FieldRule) -> Callable[[Any], bool]:
    """A predicate that accepts exactly the values needing no conversion; anything it rejects
    goes through :func:`coerce`, which converts (a whole float for an int, a datetime string)
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


def coerce(rule: FieldRule, v: Any) -> Any:
    """The value to use for a value the fast check rejected, or a ValueError saying why not."""
    if v is None:
        raise ValueError("must not be null")
    kind = rule.kind
    given = v  # shown in a message only when there is one (show() is not free)
    if kind in (Kind.FLOAT, Kind.INT):
        if isinstance(v, NonFinite) or (isinstance(v, float) and not math.isfinite(v)):
            raise ValueError(f"expected a finite number, got {show(given)}")
        if type(v) not in (int, float):
            raise ValueError(f"expected {_EXPECTED[kind]}, got {show(given)}")
        if kind is Kind.INT and type(v) is float:
            if not v.is_integer():
                raise ValueError(f"expected an integer, got {show(given)}")
            v = int(v)
            if fast_check(rule)(v):
                return v
        if rule.allowed is not None and v not in rule.allowed:
            raise ValueError(f"expected one of {show(list(rule.allowed), 200)}, got {show(given)}")
        if rule.min is not None and v < rule.min:
            raise ValueError(f"must be >= {_num(rule.min)}, got {show(given)}")
        if rule.max is not None and v > rule.max:
            raise ValueError(f"must be <= {_num(rule.max)}, got {show(given)}")
        if kind is Kind.INT and not INT64[0] <= v <= INT64[1]:
            raise ValueError(f"out of the 64-bit integer range, got {show(given)}")
        if kind is Kind.FLOAT and abs(v) > MAX_FLOAT:
            raise ValueError(f"out of the double range, got {show(given)}")
        return v
    if kind is Kind.BOOL:
        raise ValueError(f"expected true or false, got {show(given)}")
    if kind in (Kind.STRING, Kind.CATEGORY):
        if type(v) is not str:
            raise ValueError(f"expected {_EXPECTED[kind]}, got {show(given)}")
        assert rule.allowed is not None
        raise ValueError(f"expected one of {show(list(rule.allowed), 200)}, got {show(given)}")
    if kind is Kind.DATETIME:
        if type(v) is not str:
            raise ValueError(f"expected {_EXPECTED[kind]}, got {show(given)}")
        try:
            when = dt.datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"expected {_EXPECTED[kind]}, got {show(given)}") from None
        return _in_time_range(when, given)
    if type(v) is not str:
        raise ValueError(f"expected {_EXPECTED[kind]}, got {show(given)}")
    try:
        day = dt.date.fromisoformat(v)
    except ValueError:
        raise ValueError(f"expected {_EXPECTED[kind]}, got {show(given)}") from None
    if not TIME_RANGE[0].date() <= day < TIME_RANGE[1].date():
        raise ValueError(f"must be from {_TIME_TEXT}, got {show(given)}")
    return day


def _in_time_range(when: dt.datetime, given: Any) -> dt.datetime:
    """``when`` in UTC (naive: taken as UTC), or a ValueError: an offset beyond +-14:00, or a
    time outside :data:`TIME_RANGE` (checked before converting, which may overflow)."""
    offset = when.utcoffset()
    if offset is None:
        when = when.replace(tzinfo=dt.UTC)
    elif abs(offset) > MAX_UTC_OFFSET:
        raise ValueError(f"UTC offset beyond -14:00..+14:00, got {show(given)}")
    # Compare the wall time first: converting a year-9999 or year-1 time may overflow.
    naive = when.replace(tzinfo=None)
    lo, hi = (t.replace(tzinfo=None) for t in TIME_RANGE)
    if lo - MAX_UTC_OFFSET <= naive < hi + MAX_UTC_OFFSET:
        utc = when.astimezone(dt.UTC)
        if TIME_RANGE[0] <= utc < TIME_RANGE[1]:
            return utc
    raise ValueError(f"must be from {_TIME_TEXT}, got {show(given)}")
