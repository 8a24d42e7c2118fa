"""The features file's YAML schema: pydantic models of what a user may declare, and nothing more.

A features file (``contracts/features/<dataset>.yaml``, see :mod:`ml_assets.features.spec`)
lists ``row`` features (one model per ``op``, a union told apart by that tag), trailing-window
``aggregates`` and ``request`` features. These models check each declaration on its own (names,
ops, window syntax); whether it fits the dataset's contract (columns exist and have the right
types) is :mod:`ml_assets.features.spec`'s job, which binds a parsed file to its contract as a
:class:`~ml_assets.features.spec.FeatureSpec`.

Kept apart so the schema reads as one page, and so code that only dispatches on feature kinds
(row transforms, serving rules) need not import the loader. No Dagster, no polars here.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator

from ml_assets.contracts.model import NAME_RE, _Strict

_WINDOW_RE = re.compile(r"^(\d+)([mhdw])$")
_WINDOW_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class DatePart(StrEnum):
    HOUR = "hour"
    MINUTE = "minute"
    WEEKDAY = "weekday"  # Monday = 1 ... Sunday = 7
    DAY = "day"
    MONTH = "month"
    YEAR = "year"
    DAY_OF_YEAR = "day_of_year"
    WEEK = "week"  # ISO week number
    IS_WEEKEND = "is_weekend"


class Agg(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    RATE = "rate"  # share of events whose column equals `equals`
    LAST = "last"  # most recent non-null value in the window


class Source(StrEnum):
    ENTITY = "entity"
    LABELS = "labels"


class _Named(_Strict):
    name: str
    description: str = ""
    drift: bool | None = None
    """Whether drift monitoring compares this feature with the champion's reference. Default:
    yes, except calendar parts and aggregates of labels (see
    :attr:`~ml_assets.features.spec.FeatureSpec.drift_exempt`)."""

    @field_validator("name")
    @classmethod
    def _snake(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"feature name {v!r} must be lower snake_case")
        return v


class Passthrough(_Named):
    """The column as it is (categories stay text: the model treats them as categorical)."""

    op: Literal["passthrough"]
    column: str


class MapValues(_Named):
    """Each value of a column to a number (e.g. an ordinal band to its rank)."""

    op: Literal["map"]
    column: str
    mapping: dict[str | int | bool, float | int]
    default: float | int | None = None
    """Value for anything not in the mapping; null when not given."""

    @field_validator("mapping")
    @classmethod
    def _not_empty(cls, v: dict) -> dict:
        if not v:
            raise ValueError("mapping must list at least one value")
        return v


class Ratio(_Named):
    """numerator / denominator; null when the denominator is zero or either side is null."""

    op: Literal["ratio"]
    numerator: str
    denominator: str


class Log1p(_Named):
    """log(1 + x); null for x <= -1."""

    op: Literal["log1p"]
    column: str


class DatePartOf(_Named):
    """A calendar part of a datetime column (the event time when no column is given)."""

    op: Literal["date_part"]
    part: DatePart
    column: str | None = None


RowFeature = Annotated[
    Passthrough | MapValues | Ratio | Log1p | DatePartOf, Field(discriminator="op")
]


class RequestDatePart(_Named):
    """A calendar part of the request time (serving) / event time (offline)."""

    op: Literal["date_part"]
    part: DatePart


RequestFeature = Annotated[RequestDatePart, Field(discriminator="op")]


class Aggregate(_Named):
    """A trailing window aggregate per group, over events strictly before the row's time.

    ``source: entity`` aggregates entity rows by their event time; ``source: labels``
    aggregates labels by when they were observed, each label taking the group of its entity row.
    The window of a row at time t is [t - window, t): an event exactly at t is not used.
    """

    source: Source
    group_by: str
    agg: Agg
    column: str | None = None
    equals: bool | int | float | str | None = None
    window: str

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        m = _WINDOW_RE.match(v)
        if not m or int(m.group(1)) == 0:
            raise ValueError(f"window {v!r} must be a positive whole number of m, h, d or w (90d)")
        return v

    @property
    def window_delta(self) -> dt.timedelta:
        m = _WINDOW_RE.match(self.window)
        assert m is not None
        return dt.timedelta(**{_WINDOW_UNITS[m.group(2)]: int(m.group(1))})


class FeatureFile(_Strict):
    """The YAML document."""

    dataset: str
    description: str = ""
    timezone: str | None = None
    """Timezone for date parts; default: the contract's partitioning timezone."""
    row: list[RowFeature] = []
    aggregates: list[Aggregate] = []
    request: list[RequestFeature] = []


# pydantic puts a discriminated union's tag (the ``op``) into an error's loc; the YAML has no
# such level.
OP_TAGS = frozenset({"passthrough", "map", "ratio", "log1p", "date_part"})
