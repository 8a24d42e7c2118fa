"""Feature definitions, declared once per dataset in YAML and checked against its contract.

A features file (``contracts/features/<dataset>.yaml``) lists three kinds of features:

* ``row``: transforms of one entity row (``passthrough``, ``map``, ``ratio``, ``log1p``,
  ``date_part``), each compiled to a polars expression;
* ``aggregates``: trailing time-window aggregates (``count``, ``sum``, ``mean``, ``rate``,
  ``last``) of entity rows or of labels, per a grouping column of the entity table, computed
  strictly from what happened before the row's event time;
* ``request``: parts of the request time (``date_part``), which offline is the event time.

The YAML schema itself (one pydantic model per kind) is :mod:`ml_assets.features.declarations`
and the checks of a file against a contract are :mod:`ml_assets.features.contract_fit`; this
module binds a parsed file to its contract (:class:`FeatureSpec`, what both the offline and the
online path compute from) and loads it. Loading validates the file against the contract: a
feature naming a missing column, or a column of the wrong type, fails with the file, line and
feature name. Nothing here names a dataset's columns; they all come from the contract and the
YAML.

The names of those two modules (:class:`Agg`, :class:`Source`, :class:`Passthrough`, ...,
``NUMERIC``) are imported here too, so ``from ml_assets.features.spec import ...`` keeps
working for all of them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import ValidationError

from ml_assets.contracts.dtypes import VALIDATED_DTYPES
from ml_assets.contracts.model import ColumnType, Contract
from ml_assets.contracts.yaml_lines import Lines, line_for, line_index, load_yaml, pydantic_problems
from ml_assets.features.contract_fit import DATETIMES, GROUPABLE, NUMERIC, check_against_contract
from ml_assets.features.declarations import (
    OP_TAGS,
    Agg,
    Aggregate,
    DatePart,
    DatePartOf,
    FeatureFile,
    Log1p,
    MapValues,
    Passthrough,
    Ratio,
    RequestDatePart,
    RequestFeature,
    RowFeature,
    Source,
)

log = logging.getLogger(__name__)

FEATURES_DIR = Path(__file__).resolve().parent.parent / "contracts" / "features"  # bundled

# Polars types of validated columns (no pandera import: the online path uses them).
COLUMN_DTYPES = VALIDATED_DTYPES


class FeatureSpecError(ValueError):
    """A features file that cannot be used; the message names the file, line and feature."""


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
    def calendar(self) -> list[str]:
        """Features that are a calendar part of the event or request time (``date_part`` with no
        other column): their distribution over any window is set by the calendar, not by the
        data, so drift monitoring leaves them out (they stay model inputs)."""
        rows = [
            f.name
            for f in self.file.row
            if f.op == "date_part" and (f.column is None or f.column == self.event_time)
        ]
        return [*rows, *(f.name for f in self.file.request)]

    @property
    def drift_exempt(self) -> dict[str, str]:
        """Features drift monitoring leaves out, with why (they stay model inputs, monitored
        for missing values). By default:

        * calendar parts (:attr:`calendar`): their distribution is set by the calendar;
        * aggregates of labels (``source: labels``): a partition holds one slowly moving value
          per group, computed from outcomes that arrive late, so against a reference of a few
          months it alerts on every partition (measured on car-loan: a 90-day default rate by
          salary band alerted in 20 of 21 stable weeks); what it tracks, the outcome rate, is
          what realized performance watches.

        A feature's ``drift: true`` or ``drift: false`` overrides the default."""
        calendar = set(self.calendar)
        out: dict[str, str] = {}
        for f in (*self.file.row, *self.file.aggregates, *self.file.request):
            if f.drift is True:
                continue
            if f.drift is False:
                out[f.name] = "drift: false in the features file"
            elif f.name in calendar:
                out[f.name] = "a calendar part of the time"
            elif isinstance(f, Aggregate) and f.source is Source.LABELS:
                out[f.name] = "an aggregate of labels (realized performance watches the outcomes)"
        return out

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


def _line_for(lines: Lines, loc: tuple[Any, ...]) -> int | None:
    # Union tags have no YAML level; mapping keys are text in the YAML.
    return line_for(lines, loc, skip=OP_TAGS.__contains__, as_text=True)


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
    node, data = load_yaml(text, origin, FeatureSpecError)
    if not isinstance(data, dict):
        raise FeatureSpecError(f"{origin}: a features file is a YAML mapping")
    lines = line_index(node)

    def where(loc: tuple[Any, ...]) -> str:
        line = _line_for(lines, loc)
        name = _feature_name(data, loc)
        return f"{origin}:{line}: " + (f"feature {name!r}: " if name else "")

    try:
        parsed = FeatureFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for loc, msg in pydantic_problems(exc):
            field = ".".join(str(p) for p in loc if p not in OP_TAGS) or "(top level)"
            problems.append(f"{where(loc)}{field}: {msg}")
        raise FeatureSpecError("invalid features file\n  " + "\n  ".join(problems)) from exc

    problems = [f"{where(loc)}{msg}" for loc, msg in check_against_contract(parsed, contract)]
    if problems:
        raise FeatureSpecError(
            f"features do not fit contract {contract.name!r} v{contract.version}\n  "
            + "\n  ".join(problems)
        )
    return FeatureSpec(contract=contract, file=parsed, origin=origin)


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


__all__ = [
    "COLUMN_DTYPES",
    "DATETIMES",
    "FEATURES_DIR",
    "GROUPABLE",
    "NUMERIC",
    "Agg",
    "Aggregate",
    "DatePart",
    "DatePartOf",
    "FeatureFile",
    "FeatureSpec",
    "FeatureSpecError",
    "Log1p",
    "MapValues",
    "Passthrough",
    "Ratio",
    "RequestDatePart",
    "RequestFeature",
    "RowFeature",
    "Source",
    "aggregate_dtype",
    "default_feature_file",
    "features_path",
    "load_feature_spec",
    "parse_feature_spec",
]
