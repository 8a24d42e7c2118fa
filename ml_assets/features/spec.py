"""Feature definitions, declared once per dataset in YAML and checked against its contract.

A features file (``contracts/features/<dataset>.yaml``) lists three kinds of features:

* ``row``: transforms of one entity row (``passthrough``, ``map``, ``ratio``, ``log1p``,
  ``date_part``), each compiled to a polars expression;
* ``aggregates``: trailing time-window aggregates (``count``, ``sum``, ``mean``, ``rate``,
  ``last``) of entity rows or of labels, per a grouping column of the entity table, computed
  strictly from what happened before the row's event time;
* ``request``: parts of the request time (``date_part``), which offline is the event time.

Loading validates the file against the contract: a feature naming a missing column, or a column
of the wrong type, fails with the file, line and feature name. Nothing here names a dataset's
columns; they all come from the contract and the YAML.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl
import yaml
from pydantic import Field, ValidationError, field_validator

from ml_assets.contracts.dtypes import VALIDATED_DTYPES
from ml_assets.contracts.model import NAME_RE, ColumnType, Contract, _Strict

log = logging.getLogger(__name__)

FEATURES_DIR = Path(__file__).resolve().parent.parent / "contracts" / "features"  # bundled

NUMERIC = (ColumnType.INT, ColumnType.FLOAT)
GROUPABLE = (ColumnType.INT, ColumnType.BOOL, ColumnType.STRING, ColumnType.CATEGORY)
DATETIMES = (ColumnType.DATETIME, ColumnType.DATE)

# Polars types of validated columns (no pandera import: the online path uses them).
COLUMN_DTYPES = VALIDATED_DTYPES

_WINDOW_RE = re.compile(r"^(\d+)([mhdw])$")
_WINDOW_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class FeatureSpecError(ValueError):
    """A features file that cannot be used; the message names the file, line and feature."""


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


# --- the validated, contract-bound spec ------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """A dataset's features, validated against its contract: what both paths compute."""

    contract: Contract
    file: FeatureFile
    origin: str = "<default>"

    @property
    def dataset(self) -> str:
        return self.contract.name

    @property
    def key(self) -> list[str]:
        return list(self.contract.entity.primary_key)

    @property
    def event_time(self) -> str:
        return self.contract.entity.event_time

    @property
    def timezone(self) -> str:
        return self.file.timezone or self.contract.partitioning.timezone

    @property
    def row(self) -> list[Passthrough | MapValues | Ratio | Log1p | DatePartOf]:
        return list(self.file.row)

    @property
    def aggregates(self) -> list[Aggregate]:
        return list(self.file.aggregates)

    @property
    def request(self) -> list[RequestDatePart]:
        return list(self.file.request)

    @property
    def names(self) -> list[str]:
        """Every feature, in output order: row, aggregates, request."""
        return [f.name for f in (*self.file.row, *self.file.aggregates, *self.file.request)]

    @property
    def group_columns(self) -> list[str]:
        """Entity columns the aggregates group by, in first-use order."""
        return list(dict.fromkeys(a.group_by for a in self.file.aggregates))

    @property
    def max_window(self) -> dt.timedelta:
        """The longest aggregate window: how far back events must be read."""
        return max((a.window_delta for a in self.file.aggregates), default=dt.timedelta(0))

    def column_type(self, column: str) -> ColumnType:
        return self.contract.entity.columns[column].type

    def row_inputs(self) -> list[str]:
        """Entity columns the row and request features read (the event time included)."""
        cols: list[str] = [self.event_time]
        for f in self.file.row:
            if isinstance(f, Ratio):
                cols += [f.numerator, f.denominator]
            elif isinstance(f, DatePartOf):
                cols.append(f.column or self.event_time)
            else:
                cols.append(f.column)
        return list(dict.fromkeys(cols))

    def request_inputs(self) -> list[str]:
        """Entity columns a serving request must carry: row inputs and group columns."""
        return [
            c
            for c in dict.fromkeys([*self.row_inputs(), *self.group_columns])
            if c != self.event_time
        ]

    def dtypes(self) -> dict[str, pl.DataType]:
        """Output type of every feature."""
        out: dict[str, pl.DataType] = {}
        for f in self.file.row:
            if isinstance(f, Passthrough):
                out[f.name] = COLUMN_DTYPES[self.column_type(f.column)]
            elif isinstance(f, MapValues):
                ints = all(
                    isinstance(v, int) for v in [*f.mapping.values(), f.default] if v is not None
                )
                out[f.name] = pl.Int64() if ints else pl.Float64()
            elif isinstance(f, DatePartOf):
                out[f.name] = _date_part_dtype(f.part)
            else:
                out[f.name] = pl.Float64()
        for a in self.file.aggregates:
            out[a.name] = aggregate_dtype(self, a)
        for r in self.file.request:
            out[r.name] = _date_part_dtype(r.part)
        return {n: out[n] for n in self.names}


def _date_part_dtype(part: DatePart) -> pl.DataType:
    return pl.Boolean() if part is DatePart.IS_WEEKEND else pl.Int64()


def aggregate_dtype(spec: FeatureSpec, a: Aggregate) -> pl.DataType:
    if a.agg is Agg.COUNT:
        return pl.Int64()
    if a.agg is Agg.LAST:
        assert a.column is not None
        table = spec.contract.entity if a.source is Source.ENTITY else spec.contract.labels
        return COLUMN_DTYPES[table.columns[a.column].type]
    return pl.Float64()


# --- loading with line numbers ---------------------------------------------------------------


def _line_index(node: yaml.Node, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple, int]]:
    """(path, 1-based line) of every node of a composed YAML document."""
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = (*path, key_node.value)
            yield sub, key_node.start_mark.line + 1
            for p, line in _line_index(value_node, sub):
                if p != sub:
                    yield p, line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _line_index(item, (*path, i))


_TAGS = {"passthrough", "map", "ratio", "log1p", "date_part"}


def _line_for(lines: dict[tuple, int], loc: tuple[Any, ...]) -> int | None:
    # pydantic puts a union's tag (the op) into loc; the YAML has no such level: drop it.
    loc = tuple(str(x) if not isinstance(x, int) else x for x in loc if x not in _TAGS)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _feature_name(data: Any, loc: tuple[Any, ...]) -> str | None:
    if len(loc) >= 2 and isinstance(data, dict) and isinstance(loc[1], int):
        items = data.get(loc[0])
        if isinstance(items, list) and loc[1] < len(items) and isinstance(items[loc[1]], dict):
            name = items[loc[1]].get("name")
            return str(name) if name is not None else None
    return None


def parse_feature_spec(text: str, contract: Contract, origin: str = "<string>") -> FeatureSpec:
    """Parse a features YAML text and validate it against ``contract``.

    Raises :class:`FeatureSpecError` listing every problem as ``file:line: feature 'x': why``.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}" if mark else origin
        raise FeatureSpecError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise FeatureSpecError(f"{origin}: a features file is a YAML mapping")
    lines = dict(_line_index(node)) if node is not None else {}

    def where(loc: tuple[Any, ...]) -> str:
        line = _line_for(lines, loc)
        name = _feature_name(data, loc)
        return f"{origin}:{line}: " + (f"feature {name!r}: " if name else "")

    try:
        parsed = FeatureFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc if p not in _TAGS) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where(loc)}{field}: {msg}")
        raise FeatureSpecError("invalid features file\n  " + "\n  ".join(problems)) from exc

    problems = [f"{where(loc)}{msg}" for loc, msg in _check_against_contract(parsed, contract)]
    if problems:
        raise FeatureSpecError(
            f"features do not fit contract {contract.name!r} v{contract.version}\n  "
            + "\n  ".join(problems)
        )
    return FeatureSpec(contract=contract, file=parsed, origin=origin)


def _check_against_contract(f: FeatureFile, c: Contract) -> list[tuple[tuple, str]]:
    """(YAML path, message) for every feature that does not fit the contract."""
    out: list[tuple[tuple, str]] = []
    ent, lab = c.entity, c.labels
    reserved = {*ent.primary_key, ent.event_time, c.target}
    if f.dataset != c.name:
        out.append((("dataset",), f"dataset {f.dataset!r} is not {c.name!r}"))
    if f.timezone is not None:
        try:
            import zoneinfo

            zoneinfo.ZoneInfo(f.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            out.append((("timezone",), f"unknown timezone {f.timezone!r}"))

    seen: set[str] = set()
    for section in ("row", "aggregates", "request"):
        for i, feat in enumerate(getattr(f, section)):
            if feat.name in seen:
                out.append(((section, i, "name"), f"name {feat.name!r} is used twice"))
            if feat.name in reserved:
                out.append(
                    ((section, i, "name"), f"name {feat.name!r} is a key, event time or target")
                )
            seen.add(feat.name)

    def entity_col(loc: tuple, col: str, allowed: tuple[ColumnType, ...], what: str) -> bool:
        if col not in ent.columns:
            out.append((loc, f"column {col!r} is not an entity column of {c.name}"))
            return False
        t = ent.columns[col].type
        if t not in allowed:
            kinds = ", ".join(a.value for a in allowed)
            out.append((loc, f"column {col!r} is {t.value}; {what} needs {kinds}"))
            return False
        return True

    non_time = tuple(t for t in ColumnType if t not in DATETIMES)
    for i, feat in enumerate(f.row):
        loc = ("row", i)
        if isinstance(feat, Passthrough):
            fits = entity_col((*loc, "column"), feat.column, non_time, "passthrough")
            if fits and feat.column in ent.primary_key:
                out.append(((*loc, "column"), f"column {feat.column!r} is the primary key"))
        elif isinstance(feat, MapValues):
            kinds = (ColumnType.CATEGORY, ColumnType.STRING, ColumnType.INT, ColumnType.BOOL)
            if entity_col((*loc, "column"), feat.column, kinds, "map"):
                out += _check_mapping(loc, feat, ent.columns[feat.column])
        elif isinstance(feat, Ratio):
            entity_col((*loc, "numerator"), feat.numerator, NUMERIC, "ratio")
            entity_col((*loc, "denominator"), feat.denominator, NUMERIC, "ratio")
        elif isinstance(feat, Log1p):
            entity_col((*loc, "column"), feat.column, NUMERIC, "log1p")
        elif isinstance(feat, DatePartOf) and feat.column is not None:
            entity_col((*loc, "column"), feat.column, DATETIMES, "date_part")

    for i, a in enumerate(f.aggregates):
        loc = ("aggregates", i)
        entity_col((*loc, "group_by"), a.group_by, GROUPABLE, "group_by")
        if a.agg is Agg.COUNT:
            if a.column is not None or a.equals is not None:
                out.append((loc, "count counts events: give no column or equals"))
            continue
        if a.column is None:
            out.append((loc, f"{a.agg.value} needs a column"))
            continue
        if a.source is Source.ENTITY:
            table, table_name = ent, "entity"
            skip = {ent.event_time}
        else:
            table, table_name = lab, "labels"
            skip = {*lab.key_columns, lab.observed_at}
        if a.column not in table.columns or a.column in skip:
            out.append(
                (
                    (*loc, "column"),
                    f"column {a.column!r} is not a value column of the {table_name} table",
                )
            )
            continue
        col = table.columns[a.column]
        needs: dict[Agg, tuple[ColumnType, ...]] = {
            Agg.SUM: (*NUMERIC, ColumnType.BOOL),
            Agg.MEAN: (*NUMERIC, ColumnType.BOOL),
            Agg.RATE: GROUPABLE,
            Agg.LAST: (*NUMERIC, *GROUPABLE),
        }
        if col.type not in needs[a.agg]:
            kinds = ", ".join(dict.fromkeys(t.value for t in needs[a.agg]))
            out.append(
                (
                    (*loc, "column"),
                    f"column {a.column!r} is {col.type.value}; {a.agg.value} needs {kinds}",
                )
            )
            continue
        if a.agg is Agg.RATE:
            if a.equals is None:
                out.append((loc, "rate needs equals: the value whose share is measured"))
            elif not _value_fits(a.equals, col.type):
                out.append(
                    ((*loc, "equals"), f"equals {a.equals!r} is not a {col.type.value} value")
                )
            elif col.allowed is not None and a.equals not in col.allowed:
                out.append(
                    (
                        (*loc, "equals"),
                        f"equals {a.equals!r} is not an allowed value of {a.column!r}",
                    )
                )
        elif a.equals is not None:
            out.append(((*loc, "equals"), "equals only applies to rate"))
    return out


def _value_fits(v: Any, t: ColumnType) -> bool:
    if t is ColumnType.BOOL:
        return isinstance(v, bool)
    if t is ColumnType.INT:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, str)


def _check_mapping(loc: tuple, feat: MapValues, col: Any) -> list[tuple[tuple, str]]:
    out = []
    bad = [k for k in feat.mapping if not _value_fits(k, col.type)]
    if bad:
        out.append(((*loc, "mapping"), f"mapping keys {bad!r} are not {col.type.value} values"))
    elif col.allowed is not None:
        unknown = [k for k in feat.mapping if k not in col.allowed]
        if unknown:
            out.append(
                (
                    (*loc, "mapping"),
                    f"mapping keys {unknown!r} are not allowed values of {feat.column!r}",
                )
            )
        missing = [v for v in col.allowed if v not in feat.mapping]
        if missing and feat.default is None:
            out.append(
                (
                    (*loc, "mapping"),
                    f"mapping misses allowed values {missing!r}: add them or a default",
                )
            )
    return out


def default_feature_file(contract: Contract) -> FeatureFile:
    """What a dataset without a features file gets: every non-time feature column as is."""
    cols = [c for c in contract.feature_columns if contract.entity.columns[c].type not in DATETIMES]
    return FeatureFile(
        dataset=contract.name,
        description="Default: every contract feature column, passed through.",
        row=[Passthrough(name=c, op="passthrough", column=c) for c in cols],
    )


def features_path(contract: Contract, directory: str | Path | None = None) -> Path:
    """Where a dataset's features file lives.

    ``directory``, else the settings' features folder (``ML_ASSETS_FEATURES``, else a
    ``features/`` folder beside the contracts, see :mod:`ml_assets.settings`).
    """
    if directory is None:
        from ml_assets import settings

        directory = settings.current().features_path
    return Path(directory) / f"{contract.name}.yaml"


def load_feature_spec(
    contract: Contract, path: str | Path | None = None, directory: str | Path | None = None
) -> FeatureSpec:
    """Load and validate a dataset's features (see :func:`features_path` for where from).

    A dataset with no features file gets every contract feature column passed through.
    """
    file = Path(path) if path is not None else features_path(contract, directory)
    if not file.exists():
        if path is not None:
            raise FeatureSpecError(f"{file}: no such features file")
        log.info("%s: no features file at %s; passing feature columns through", contract.name, file)
        return FeatureSpec(contract=contract, file=default_feature_file(contract))
    return parse_feature_spec(file.read_text(encoding="utf-8"), contract, origin=str(file))
