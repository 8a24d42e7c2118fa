"""Data contracts: the YAML a user writes to onboard a dataset.

A contract declares where a dataset's rows live (a SQLAlchemy source), how they are keyed,
timed and partitioned, what every column must look like, where labels come from and when they
were observed, and the learning problem. Everything downstream (pandera schemas, Dagster
assets, checks) is generated from it, so no platform code names a dataset's columns.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ml_assets.contracts.yaml_lines import Lines, line_for, line_index, load_yaml, pydantic_problems

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _by_snake_name(names: Iterable[str]) -> dict[str, list[str]]:
    """Source column names grouped by the contract name each derives (:func:`snake_name`)."""
    derived: dict[str, list[str]] = {}
    for n in names:
        derived.setdefault(snake_name(n), []).append(n)
    return derived


def snake_name(source: str) -> str:
    """The contract name of a source column: lower case, each run of other characters one
    underscore, none at either end, ``c_`` before a leading digit (``AGEP`` -> ``agep``,
    ``Hours Worked`` -> ``hours_worked``, ``2nd-Job`` -> ``c_2nd_job``)."""
    name = re.sub(r"[^a-z0-9]+", "_", source.lower()).strip("_")
    if not name:
        return "c_"
    return f"c_{name}" if name[0].isdigit() else name


Problem = tuple[tuple[Any, ...], str]
"""A broken rule: (YAML path of the field at fault, what is wrong and what to change)."""

SHAPE_ONLY = {"shape_only": True}
"""Validation context: check each field's type and form, not the rules across fields.

The rules (key columns exist, the time column is a datetime, the target fits the problem...)
are pure functions over what a document declares (:func:`column_problems`,
:func:`table_problems`, :func:`contract_problems`). The models' validators run them, so a model
built in code holds them; :func:`contract_findings` runs them itself over every part of a
document that is readable, because pydantic skips a model's validator as soon as one of its
fields fails, which would hide a rule broken above a typo until the typo is fixed.
"""


def _rules_off(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("shape_only"))


@dataclass(frozen=True)
class Finding:
    """One problem of a file: where (file, line, field path) and what to change."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}"


class ContractError(ValueError):
    """A contract file that cannot be used; the message names the file, line and field."""

    def __init__(self, message: str, findings: list[Finding] | None = None) -> None:
        super().__init__(message)
        self.findings = findings or []


class FieldError(ValueError):
    """A rule broken by a field below the model that checks it; ``loc`` is relative to it.

    A model validator's error is reported at the model itself; this lets a cross-field check
    point at the field (and so the line) that is actually wrong.
    """

    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


class FieldErrors(ValueError):
    """Every rule a model breaks, each located relative to it (see :class:`FieldError`)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(m for _, m in problems))
        self.problems = problems


def _raise_all(problems: list[Problem]) -> None:
    if problems:
        raise FieldErrors(problems)


class ColumnType(StrEnum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STRING = "string"
    CATEGORY = "category"
    DATETIME = "datetime"
    DATE = "date"


# How much each type can hold: narrowing a column to a lower rank is a breaking change.
TYPE_WIDTH: dict[ColumnType, tuple[str, int]] = {
    ColumnType.BOOL: ("number", 0),
    ColumnType.INT: ("number", 1),
    ColumnType.FLOAT: ("number", 2),
    ColumnType.CATEGORY: ("text", 0),
    ColumnType.STRING: ("text", 1),
    ColumnType.DATE: ("time", 0),
    ColumnType.DATETIME: ("time", 1),
}


class ProblemType(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


class Granularity(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"


class StoredAs(StrEnum):
    """How the source stores a ``datetime`` column that is not a timestamp: decoded at ingestion
    (the SQL window filters on the stored values; validation turns them into the period's first
    instant, in the contract's timezone), so every later stage sees a datetime."""

    DATE = "date"
    """A DATE column: midnight of the day."""
    YEAR = "year"
    """An integer year (2019): 1 January, 00:00."""
    YEAR_MONTH = "year_month"
    """An integer ``yyyymm`` (201907): the 1st of the month, 00:00."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(_Strict):
    """One column: its type and the rules every value must satisfy."""

    type: ColumnType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: list[Any] | None = None
    description: str = ""
    pii: bool = False
    stored_as: StoredAs | None = None
    """A ``datetime`` column the source holds as a date, an integer year or ``yyyymm``."""
    source: str | None = None
    """The column's name in the source, when it is not the contract's name or the one
    :func:`snake_name` derives from it (``AGEP`` is found as ``agep`` without it)."""
    categories: Literal["declared", "learned"] = "declared"
    """A category's values: ``declared`` in ``allowed``, or ``learned`` from the training data
    (any text validates; the champion serves the values it was trained on)."""
    unseen: Literal["reject", "accept"] = "reject"
    """At serving, a learned category's value the champion never saw: ``reject`` (422 naming
    the field and the learned values) or ``accept`` (scored as CatBoost scores an unseen
    category, and counted by monitoring's unseen-values rate)."""

    @model_validator(mode="after")
    def _rules_fit_type(self, info: ValidationInfo) -> Column:
        if not _rules_off(info):
            _raise_all(column_problems(self))
        return self


def column_problems(col: Column) -> list[Problem]:
    """The rules of one column's own fields (reported at the column)."""
    out: list[Problem] = []
    numeric = col.type in (ColumnType.INT, ColumnType.FLOAT)
    if (col.min is not None or col.max is not None) and not numeric:
        out.append(((), f"min/max apply to int and float columns, not {col.type.value}"))
    elif col.min is not None and col.max is not None and col.min > col.max:
        out.append(((), f"min ({col.min}) is greater than max ({col.max})"))
    if col.stored_as is not None and col.type is not ColumnType.DATETIME:
        out.append(
            (
                ("stored_as",),
                f"stored_as applies to datetime columns (declare type: datetime, "
                f"stored_as: {col.stored_as.value}), not {col.type.value}",
            )
        )
    learned = col.categories == "learned"
    if learned and col.type is not ColumnType.CATEGORY:
        out.append(((), f"categories: learned applies to category columns, not {col.type.value}"))
    elif learned and col.allowed is not None:
        out.append(((), "give allowed values or categories: learned, not both"))
    if col.unseen != "reject" and not learned:
        out.append(((), "unseen applies to categories: learned"))
    if col.type is ColumnType.CATEGORY and not col.allowed and not learned:
        out.append(
            (
                (),
                "a category column needs its allowed values (or categories: learned, to take "
                "them from the training data)",
            )
        )
    elif col.allowed is not None:
        if len(col.allowed) == 0:
            out.append(((), "allowed must list at least one value"))
        elif col.type in (ColumnType.DATETIME, ColumnType.DATE, ColumnType.FLOAT):
            out.append(((), f"allowed does not apply to {col.type.value} columns"))
        else:
            want = {ColumnType.INT: int, ColumnType.BOOL: bool}.get(col.type, str)
            bad = [
                v
                for v in col.allowed
                if not isinstance(v, want) or (want is int and isinstance(v, bool))
            ]
            if bad:
                out.append(((), f"allowed values {bad!r} are not of type {col.type.value}"))
            elif len(set(col.allowed)) != len(col.allowed):
                out.append(((), "allowed values repeat"))
    return out


class Source(_Strict):
    """Where the tables live: a SQLAlchemy URL, read from an environment variable or given."""

    url_env: str | None = "ML_ASSETS_SOURCE_URL"
    url: str | None = None


class Partitioning(_Strict):
    granularity: Granularity
    start: dt.date
    end: dt.date | None = None
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown timezone {v!r} (use an IANA name like Europe/Amsterdam)"
            ) from exc
        return v

    @model_validator(mode="after")
    def _end_after_start(self, info: ValidationInfo) -> Partitioning:
        if not _rules_off(info):
            _raise_all(partitioning_problems(self))
        return self


def partitioning_problems(p: Partitioning) -> list[Problem]:
    """The rules across a partitioning block's fields."""
    if p.end is not None and p.end <= p.start:
        return [(("end",), "end must be after start")]
    return []


class Table(_Strict):
    """A source table (or query) with a time column that places each row in a partition."""

    table: str | None = None
    query: str | None = Field(
        default=None,
        description="SELECT whose rows make up the table; the platform wraps it to filter by time.",
    )
    columns: dict[str, Column]

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> Table:
        if not _rules_off(info):
            _raise_all(table_problems(TableView.of(self)))
        return self

    @property
    def time_column(self) -> str:
        raise NotImplementedError

    @property
    def key(self) -> list[str]:
        raise NotImplementedError

    def source_columns(self, names: Iterable[str]) -> dict[str, str]:
        """Contract name -> source name of the declared columns found among a source's column
        ``names``: a column's ``source`` exactly, else its own name, else the one source column
        whose :func:`snake_name` is its name (``AGEP``, ``Hours Worked`` -> ``agep``,
        ``hours_worked``). A name two source columns derive is left out (see
        :meth:`ambiguous_columns`)."""
        present = list(names)
        exact = set(present)
        derived = _by_snake_name(present)
        out: dict[str, str] = {}
        for name, col in self.columns.items():
            if col.source is not None:
                if col.source in exact:
                    out[name] = col.source
            elif name in exact:
                out[name] = name
            elif len(derived.get(name, [])) == 1:
                out[name] = derived[name][0]
        return out

    def ambiguous_columns(self, names: Iterable[str]) -> dict[str, list[str]]:
        """Declared columns (without ``source``, not in the source by their own name) that
        more than one source column derives: the contract must say which, with ``source``."""
        present = list(names)
        derived = _by_snake_name(present)
        return {
            name: derived[name]
            for name, col in self.columns.items()
            if col.source is None and name not in present and len(derived.get(name, [])) > 1
        }


class EntityTable(Table):
    """The rows to predict on: one per primary key, stamped with the event time."""

    primary_key: list[str]
    event_time: str

    @property
    def time_column(self) -> str:
        return self.event_time

    @property
    def key(self) -> list[str]:
        return self.primary_key


class LabelTable(Table):
    """Late-arriving labels: keyed like the entity, stamped with when the label was observed.

    The labels may be columns of the entity's own table (``table`` the same): then each role
    reads its own columns of it, and neither warns of the other's as extra. A label known a
    fixed time after a time column of its row (its event time, say) says so with
    ``observed_after_days``."""

    key_columns: list[str] = Field(alias="key")
    observed_at: str
    observed_after_days: float | None = Field(default=None, gt=0)
    """The label becomes known this many days after ``observed_at``'s time (a loan's outcome
    90 days after its application): ingestion places each label at that later time."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def time_column(self) -> str:
        return self.observed_at

    @property
    def key(self) -> list[str]:
        return self.key_columns


# The YAML field naming each kind of table's key and time column.
_TABLE_FIELDS: dict[type[Table], tuple[str, str, str]] = {
    # class: (key field, time field, what the key is called in messages)
    EntityTable: ("primary_key", "event_time", "primary key column"),
    LabelTable: ("key", "observed_at", "key column"),
}


@dataclass(frozen=True)
class TableView:
    """What a table declares, as far as it is readable: what :func:`table_problems` checks.

    ``columns`` maps each declared name to its column, or to None when that column is itself
    invalid (declared, but of unknown type); ``columns``, ``key`` and ``time`` are None when
    the field itself is unreadable (its rules are then not checked: pydantic reported it).
    """

    kind: type[Table]
    table: str | None
    query: str | None
    columns: Mapping[Any, Column | None] | None
    key: list[str] | None
    time: str | None

    @classmethod
    def of(cls, t: Table) -> TableView:
        if type(t) not in _TABLE_FIELDS:  # a bare Table has no key or time column
            return cls(type(t), t.table, t.query, t.columns, None, None)
        return cls(type(t), t.table, t.query, t.columns, list(t.key), t.time_column)

    @classmethod
    def read(cls, kind: type[Table], data: Any) -> TableView | None:
        """The readable parts of a table's YAML mapping (None if it is not a mapping)."""
        if not isinstance(data, dict):
            return None
        key_field, time_field, _ = _TABLE_FIELDS[kind]
        columns: dict[Any, Column | None] | None = None
        if isinstance(data.get("columns"), dict):
            columns = {}
            for name, value in data["columns"].items():
                try:
                    columns[name] = Column.model_validate(value, context=SHAPE_ONLY)
                except ValidationError:
                    columns[name] = None
        return cls(
            kind,
            _readable(str | None, data.get("table")),
            _readable(str | None, data.get("query")),
            columns,
            _readable(list[str], data.get(key_field)),
            _readable(str, data.get(time_field)),
        )


@cache
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation)


def _readable(annotation: Any, value: Any) -> Any:
    """``value`` validated as ``annotation``, or None when it is not one."""
    try:
        return _adapter(annotation).validate_python(value)
    except ValidationError:
        return None


_WRITES = re.compile(
    r"\b(insert|update|delete|merge|upsert|drop|alter|create|truncate|grant|revoke|copy|"
    r"call|execute|vacuum|attach|detach|pragma)\b",
    re.IGNORECASE,
)


def query_problems(query: str) -> list[str]:
    """A contract's ``query`` must be ONE read-only SELECT (or WITH ... SELECT): the platform
    wraps it as a subquery, and a source's credentials should be read-only anyway. Comments and
    quoted text and identifiers are ignored when looking for statements and writes (a column
    named like a write keyword, ``update`` say, must be quoted)."""
    text = re.sub(r"--[^\n]*|/\*.*?\*/", " ", query, flags=re.S)
    text = re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", "''", text)
    body = text.strip().rstrip(";").strip()
    out = []
    if ";" in body:
        out.append("query must be a single statement (no ';' inside it)")
    first = body.split(None, 1)[0].lower() if body else ""
    if first not in ("select", "with"):
        out.append(f"query must be a SELECT (or WITH ... SELECT), not {first.upper() or 'empty'}")
    elif found := _WRITES.search(body):
        out.append(f"query must only read: it contains {found.group(1).upper()}")
    return out


def table_problems(t: TableView) -> list[Problem]:
    """The rules across a table's fields: source, column names, key and time column."""
    out: list[Problem] = []
    key_field, time_field, key_what = _TABLE_FIELDS.get(t.kind, ("key", "time", "key column"))
    if (t.table is None) == (t.query is None):
        out.append(
            (("query",) if t.query is not None else (), "give exactly one of 'table' or 'query'")
        )
    if t.query is not None:
        out += [(("query",), m) for m in query_problems(t.query)]
    if t.table is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", t.table):
        out.append((("table",), f"table name {t.table!r} is not a plain SQL identifier"))
    if t.columns is None:
        return out
    for name in t.columns:
        if isinstance(name, str) and not NAME_RE.match(name):
            out.append(
                (
                    ("columns", name),
                    f"column name {name!r} must be lower snake_case: declare it as "
                    f"{snake_name(name)!r} (a source column {name!r} is found by that name), or "
                    f"give it another name with source: {name}",
                )
            )
    sources: dict[str, str] = {}
    for name, col in t.columns.items():
        if col is not None and col.source is not None:
            if col.source in sources:
                out.append(
                    (
                        ("columns", name, "source"),
                        f"columns {sources[col.source]!r} and {name!r} both read source column "
                        f"{col.source!r}",
                    )
                )
            sources.setdefault(col.source, name)
    if t.key is not None:
        if not t.key and t.kind is EntityTable:
            out.append(((key_field,), "primary_key must name at least one column"))
        for i, k in enumerate(t.key):
            if k not in t.columns:
                out.append(((key_field, i), f"{key_what} {k!r} is not one of the declared columns"))
            elif t.kind is EntityTable and (col := t.columns[k]) is not None and col.nullable:
                out.append(
                    (("columns", k, "nullable"), f"primary key column {k!r} cannot be nullable")
                )
    if t.time is not None:
        name = t.time
        col = t.columns.get(name)
        if name not in t.columns:
            out.append(((time_field,), f"time column {name!r} is not one of the declared columns"))
        elif col is not None and col.type is not ColumnType.DATETIME:
            hint = {
                ColumnType.INT: "an integer year or yyyymm: declare type: datetime with "
                "stored_as: year (or year_month)",
                ColumnType.DATE: "a date: declare type: datetime with stored_as: date",
            }.get(col.type)
            message = f"time column {name!r} must have type datetime"
            if hint:
                message += f"; if the source holds {hint}, and it is converted at ingestion"
            out.append((("columns", name, "type"), message))
        elif col is not None and col.nullable:
            out.append((("columns", name, "nullable"), f"time column {name!r} cannot be nullable"))
    return out


class Demo(_Strict):
    """How the bundled demo data (shipped in the nannyml package) maps onto the tables."""

    loader: str
    quality_loader: str | None = None
    rename: dict[str, str] = {}
    label_delay_days: tuple[float, float] = (1.0, 30.0)
    replay: bool = False
    """``make demo`` trains on the first half only and replays the second half as if live
    (served, batch-scored, monitored, retrained by the sensor: :mod:`ml_assets.replay`)."""


RETRAIN_TRIGGERS = (
    "estimated_performance",
    "realized_performance",
    "multivariate_drift",
    "univariate_drift",
    "domain_classifier",
)
"""Monitoring calculators whose sustained alerts may retrain (``ml_assets.monitor.schema``)."""


class Monitoring(_Strict):
    """What the dataset's monitoring acts on."""

    retrain_on: list[str] = ["estimated_performance", "realized_performance"]
    """Calculators whose alerts, sustained for N partitions (and once the labels of the new
    regime have arrived), make the retrain sensor train a challenger. Performance by default;
    add ``multivariate_drift`` where a performance drop is too small for its threshold at the
    partition's size but the inputs have clearly moved (the gate still decides)."""

    @field_validator("retrain_on")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in RETRAIN_TRIGGERS]
        if unknown or not value:
            raise ValueError(
                f"retrain_on must list some of {list(RETRAIN_TRIGGERS)}"
                + (f", not {unknown}" if unknown else "")
            )
        return value


class Training(_Strict):
    """How the dataset's training sets are drawn (every field optional).

    ``window_days``: a training set holds the rows with event time in [cutoff - window_days,
    cutoff). Unset (the default), it holds every row labelled before the cutoff, from the
    earliest materialized feature partition on: a fixed window silently drops older rows, or
    all of them when events are sparse (a yearly survey has none in most 365-day windows). Set
    it when older rows describe a regime that no longer holds. A training set's own
    ``window_days`` (run config, ``ml-assets run --window-days``) takes precedence.
    """

    window_days: float | None = Field(default=None, gt=0)


class Contract(_Strict):
    """A dataset's data contract."""

    name: str
    version: str
    owner: str
    description: str = ""
    problem_type: ProblemType
    target: str
    source: Source = Source()
    partitioning: Partitioning
    entity: EntityTable
    labels: LabelTable
    demo: Demo | None = None
    monitoring: Monitoring = Monitoring()
    quarantine_threshold: float = Field(default=0.05, ge=0, le=1)
    training: Training | None = None

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("name must be lower snake_case (it names assets and tables)")
        return v

    @field_validator("version")
    @classmethod
    def _semver(cls, v: str) -> str:
        if not re.fullmatch(r"\d+\.\d+\.\d+", v):
            raise ValueError("version must look like MAJOR.MINOR.PATCH")
        return v

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Contract:
        if not _rules_off(info):
            _raise_all(
                contract_problems(
                    self.problem_type,
                    self.target,
                    TableView.of(self.entity),
                    TableView.of(self.labels),
                )
            )
        return self

    @property
    def tables(self) -> dict[str, Table]:
        """The source tables by role: ``entity`` and ``labels``."""
        return {"entity": self.entity, "labels": self.labels}

    def shared_columns(self, role: str) -> list[str]:
        """Columns of ``role``'s source that the other role declares and ``role`` does not:
        expected in the source, read by the other role (labels in the entity table)."""
        mine = self.tables[role]
        other = self.tables["labels" if role == "entity" else "entity"]
        same = (mine.table, mine.query) == (other.table, other.query)
        if not same:
            return []
        return [c for c in other.columns if c not in mine.columns]

    @property
    def feature_columns(self) -> list[str]:
        """Entity columns a model may learn from: all but keys and the event time."""
        skip = {*self.entity.primary_key, self.entity.event_time}
        return [c for c in self.entity.columns if c not in skip]

    def fingerprint(self) -> str:
        """A short hash of the contract's content (not its formatting)."""
        content = self.model_dump(mode="json", by_alias=True)
        # Fields added later: unset, they leave older contracts' fingerprints as they were.
        if content.get("training") is None:
            content.pop("training", None)
        for role in ("entity", "labels"):
            table = content[role]
            if table.get("observed_after_days") is None:
                table.pop("observed_after_days", None)
            for column in table["columns"].values():
                for added in ("stored_as", "source"):
                    if column.get(added) is None:
                        column.pop(added, None)
                for added, default in (("categories", "declared"), ("unseen", "reject")):
                    if column.get(added) == default:
                        column.pop(added, None)
        payload = json.dumps(content, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def contract_problems(
    problem_type: ProblemType | None,
    target: str | None,
    entity: TableView | None,
    labels: TableView | None,
) -> list[Problem]:
    """The rules across the contract's parts: the target and the keys of the two tables.

    A part that is unreadable (None, or a column of unknown type) leaves the rules that need it
    unchecked: its own problem is already reported.
    """
    out: list[Problem] = []
    ent_cols = entity.columns if entity is not None else None
    lab_cols = labels.columns if labels is not None else None
    if target is not None and lab_cols is not None and target not in lab_cols:
        out.append((("target",), f"target {target!r} is not a column of labels"))
    if target is not None and ent_cols is not None and target in ent_cols:
        out.append((("target",), f"target {target!r} must not be an entity column (leakage)"))
    if (
        entity is not None
        and labels is not None
        and entity.key is not None
        and labels.key is not None
    ):
        mismatch = len(entity.key) != len(labels.key)
        if not mismatch and ent_cols is not None and lab_cols is not None:
            ent = [ent_cols.get(k) for k in entity.key]
            lab = [lab_cols.get(k) for k in labels.key]
            if all(c is not None for c in [*ent, *lab]):
                mismatch = [c.type for c in ent] != [c.type for c in lab]  # type: ignore[union-attr]
        if mismatch:
            message = "labels.key must match entity.primary_key in number and types"
            out.append((("labels", "key"), message))
    if problem_type is not None and target is not None and lab_cols is not None:
        column = lab_cols.get(target)
        if column is not None:
            from ml_assets.problems import problem_kind  # the kind says what a target must be

            problem = problem_kind(problem_type).target_problem(column)
            if problem is not None:
                field, message = problem
                out.append((("labels", "columns", target, field), message))
    return out


def document_problems(data: dict[str, Any]) -> list[Problem]:
    """Every problem of a contract's YAML mapping, in one pass: each field's type and form
    (pydantic), then every rule over the parts that are readable."""
    out: list[Problem] = []
    try:
        Contract.model_validate(data, context=SHAPE_ONLY)
    except ValidationError as exc:
        out += pydantic_problems(exc)
    entity = TableView.read(EntityTable, data.get("entity"))
    labels = TableView.read(LabelTable, data.get("labels"))
    for role, view in (("entity", entity), ("labels", labels)):
        if view is None:
            continue
        out += [((role, *loc), m) for loc, m in table_problems(view)]
        for name, col in (view.columns or {}).items():
            if col is not None:
                out += [((role, "columns", name, *loc), m) for loc, m in column_problems(col)]
    partitioning = data.get("partitioning")
    try:
        p = Partitioning.model_validate(partitioning, context=SHAPE_ONLY)
        out += [(("partitioning", *loc), m) for loc, m in partitioning_problems(p)]
    except ValidationError:
        pass  # reported above
    out += contract_problems(
        _readable(ProblemType, data.get("problem_type")),
        _readable(str, data.get("target")),
        entity,
        labels,
    )
    return out


# --- loading with line numbers -----------------------------------------------------------


def _validator_part(part: Any) -> bool:
    # pydantic's loc may name a validator (``function-after[...]``): the YAML has no such level.
    return isinstance(part, str) and part.startswith("function-")


def _line_for(lines: Lines, loc: tuple[Any, ...]) -> int | None:
    return line_for(lines, loc, skip=_validator_part)


def contract_findings(text: str, origin: str = "<string>") -> tuple[Contract | None, list[Finding]]:
    """Parse a contract's YAML text: (the contract, []) or (None, every problem at once).

    Raises :class:`ContractError` only when the text is unreadable as a contract at all (not
    YAML, or not a mapping).
    """
    node, data = load_yaml(text, origin, ContractError)
    if not isinstance(data, dict):
        line = node.start_mark.line + 1 if node is not None else 1
        raise ContractError(
            f"{origin}:{line}: (top level): a contract is a YAML mapping, got {type(data).__name__}"
        )
    lines = line_index(node)
    problems = document_problems(data)
    if not problems:
        return Contract.model_validate(data), []
    findings = [
        Finding(origin, _line_for(lines, loc), ".".join(str(p) for p in loc) or "(top level)", msg)
        for loc, msg in problems
    ]
    findings = list(dict.fromkeys(findings))  # one rule may be reached twice
    findings.sort(key=lambda f: f.line or 0)
    return None, findings


def parse_contract(text: str, origin: str = "<string>") -> Contract:
    """Parse and validate a contract's YAML text; raise ContractError listing every problem,
    each naming its line and field."""
    contract, findings = contract_findings(text, origin)
    if contract is None:
        raise ContractError(
            "invalid contract\n  " + "\n  ".join(map(str, findings)), findings=findings
        )
    return contract


def load_contract(path: str | Path) -> Contract:
    """Load one contract file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError(f"{path}: cannot read the contract: {exc}") from exc
    return parse_contract(text, origin=str(path))


BUNDLED_DIR = Path(__file__).parent


def load_contracts(directory: str | Path | None = None) -> dict[str, Contract]:
    """Load every ``*.yaml`` contract in a folder (the bundled ones by default), by name."""
    folder = Path(directory) if directory else BUNDLED_DIR
    contracts: dict[str, Contract] = {}
    origins: dict[str, Path] = {}
    for path in sorted(folder.glob("*.yaml")):
        contract = load_contract(path)
        if contract.name in contracts:
            node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
            line = _line_for(line_index(node), ("name",))
            raise ContractError(
                f"{path}:{line}: name: dataset name {contract.name!r} is already used by "
                f"{origins[contract.name]}"
            )
        contracts[contract.name] = contract
        origins[contract.name] = path
    if not contracts:
        raise ContractError(f"{folder}: no *.yaml contracts found")
    return contracts
