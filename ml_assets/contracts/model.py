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
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ml_assets.contracts.yaml_lines import Lines, line_for, line_index, load_yaml, pydantic_problems

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class ContractError(ValueError):
    """A contract file that cannot be used; the message names the file, line and field."""


class FieldError(ValueError):
    """A rule broken by a field below the model that checks it; ``loc`` is relative to it.

    A model validator's error is reported at the model itself; this lets a cross-field check
    point at the field (and so the line) that is actually wrong.
    """

    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


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
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


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

    @model_validator(mode="after")
    def _rules_fit_type(self) -> Column:
        numeric = self.type in (ColumnType.INT, ColumnType.FLOAT)
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"min/max apply to int and float columns, not {self.type.value}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.type is ColumnType.CATEGORY and not self.allowed:
            raise ValueError("a category column needs its allowed values")
        if self.allowed is not None:
            if len(self.allowed) == 0:
                raise ValueError("allowed must list at least one value")
            if self.type in (ColumnType.DATETIME, ColumnType.DATE, ColumnType.FLOAT):
                raise ValueError(f"allowed does not apply to {self.type.value} columns")
            want = {ColumnType.INT: int, ColumnType.BOOL: bool}.get(self.type, str)
            bad = [
                v
                for v in self.allowed
                if not isinstance(v, want) or (want is int and isinstance(v, bool))
            ]
            if bad:
                raise ValueError(f"allowed values {bad!r} are not of type {self.type.value}")
            if len(set(self.allowed)) != len(self.allowed):
                raise ValueError("allowed values repeat")
        return self


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
    def _end_after_start(self) -> Partitioning:
        if self.end is not None and self.end <= self.start:
            raise FieldError(("end",), "end must be after start")
        return self


class Table(_Strict):
    """A source table (or query) with a time column that places each row in a partition."""

    table: str | None = None
    query: str | None = Field(
        default=None,
        description="SELECT whose rows make up the table; the platform wraps it to filter by time.",
    )
    columns: dict[str, Column]

    @model_validator(mode="after")
    def _table_or_query(self) -> Table:
        if (self.table is None) == (self.query is None):
            where = ("query",) if self.query is not None else ()
            raise FieldError(where, "give exactly one of 'table' or 'query'")
        if self.table is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", self.table):
            raise FieldError(("table",), f"table name {self.table!r} is not a plain SQL identifier")
        for name in self.columns:
            if not NAME_RE.match(name):
                raise FieldError(
                    ("columns", name), f"column name {name!r} must be lower snake_case"
                )
        return self

    @property
    def time_column(self) -> str:
        raise NotImplementedError

    @property
    def key(self) -> list[str]:
        raise NotImplementedError

    def _check_named(self, names: list[str], what: str, field: str) -> None:
        for i, n in enumerate(names):
            if n not in self.columns:
                raise FieldError((field, i), f"{what} {n!r} is not one of the declared columns")

    def _check_time(self, field: str) -> None:
        name = self.time_column
        if name not in self.columns:
            raise FieldError((field,), f"time column {name!r} is not one of the declared columns")
        if self.columns[name].type is not ColumnType.DATETIME:
            raise FieldError(
                ("columns", name, "type"), f"time column {name!r} must have type datetime"
            )
        if self.columns[name].nullable:
            raise FieldError(
                ("columns", name, "nullable"), f"time column {name!r} cannot be nullable"
            )


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

    @model_validator(mode="after")
    def _names_exist(self) -> EntityTable:
        if not self.primary_key:
            raise FieldError(("primary_key",), "primary_key must name at least one column")
        self._check_named(self.primary_key, "primary key column", "primary_key")
        for k in self.primary_key:
            if self.columns[k].nullable:
                raise FieldError(
                    ("columns", k, "nullable"), f"primary key column {k!r} cannot be nullable"
                )
        self._check_time("event_time")
        return self


class LabelTable(Table):
    """Late-arriving labels: keyed like the entity, stamped with when the label was observed."""

    key_columns: list[str] = Field(alias="key")
    observed_at: str

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def time_column(self) -> str:
        return self.observed_at

    @property
    def key(self) -> list[str]:
        return self.key_columns

    @model_validator(mode="after")
    def _names_exist(self) -> LabelTable:
        self._check_named(self.key_columns, "key column", "key")
        self._check_time("observed_at")
        return self


class Demo(_Strict):
    """How the bundled demo data (shipped in the nannyml package) maps onto the tables."""

    loader: str
    quality_loader: str | None = None
    rename: dict[str, str] = {}
    label_delay_days: tuple[float, float] = (1.0, 30.0)


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
    quarantine_threshold: float = Field(default=0.05, ge=0, le=1)

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
    def _cross_checks(self) -> Contract:
        if self.target not in self.labels.columns:
            raise FieldError(("target",), f"target {self.target!r} is not a column of labels")
        if self.target in self.entity.columns:
            raise FieldError(
                ("target",), f"target {self.target!r} must not be an entity column (leakage)"
            )
        ent_keys = [self.entity.columns[k].type for k in self.entity.primary_key]
        lab_keys = [self.labels.columns[k].type for k in self.labels.key_columns]
        if len(self.labels.key_columns) != len(self.entity.primary_key) or ent_keys != lab_keys:
            raise FieldError(
                ("labels", "key"), "labels.key must match entity.primary_key in number and types"
            )
        from ml_assets.problems import problem_kind  # the kind says what a target must be

        target = self.labels.columns[self.target]
        problem = problem_kind(self.problem_type).target_problem(target)
        if problem is not None:
            field, message = problem
            raise FieldError(("labels", "columns", self.target, field), message)
        return self

    @property
    def tables(self) -> dict[str, Table]:
        """The source tables by role: ``entity`` and ``labels``."""
        return {"entity": self.entity, "labels": self.labels}

    @property
    def feature_columns(self) -> list[str]:
        """Entity columns a model may learn from: all but keys and the event time."""
        skip = {*self.entity.primary_key, self.entity.event_time}
        return [c for c in self.entity.columns if c not in skip]

    def fingerprint(self) -> str:
        """A short hash of the contract's content (not its formatting)."""
        payload = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --- loading with line numbers -----------------------------------------------------------


def _validator_part(part: Any) -> bool:
    # pydantic's loc may name a validator (``function-after[...]``): the YAML has no such level.
    return isinstance(part, str) and part.startswith("function-")


def _line_for(lines: Lines, loc: tuple[Any, ...]) -> int | None:
    return line_for(lines, loc, skip=_validator_part)


def parse_contract(text: str, origin: str = "<string>") -> Contract:
    """Parse and validate a contract's YAML text; raise ContractError naming line and field."""
    node, data = load_yaml(text, origin, ContractError)
    if not isinstance(data, dict):
        line = node.start_mark.line + 1 if node is not None else 1
        raise ContractError(
            f"{origin}:{line}: (top level): a contract is a YAML mapping, got {type(data).__name__}"
        )
    lines = line_index(node)
    try:
        return Contract.model_validate(data)
    except ValidationError as exc:
        problems = []
        for loc, msg in pydantic_problems(exc, located=FieldError):
            field = ".".join(str(p) for p in loc) or "(top level)"
            problems.append(f"{origin}:{_line_for(lines, loc)}: {field}: {msg}")
        raise ContractError("invalid contract\n  " + "\n  ".join(problems)) from exc


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
