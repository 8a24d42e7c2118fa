"""Does a features file fit its dataset's contract? The checks behind the loader's messages.

:mod:`ml_assets.features.declarations` checks each declaration on its own; only the contract
says whether the columns a feature names exist, in which table, with which type, allowed values
and role (key, event time, target). :func:`check_against_contract` answers with (YAML path,
message) pairs, which :func:`ml_assets.features.spec.parse_feature_spec` turns into
``file:line: feature 'x': why`` lines. Kept apart from the loader: the rules of what each kind
of feature may read are one list, read in one place.
"""

from __future__ import annotations

from typing import Any

from ml_assets.contracts.model import ColumnType, Contract
from ml_assets.features import declarations as decl
from ml_assets.features.declarations import Agg, FeatureFile, Source

NUMERIC = (ColumnType.INT, ColumnType.FLOAT)
GROUPABLE = (ColumnType.INT, ColumnType.BOOL, ColumnType.STRING, ColumnType.CATEGORY)
DATETIMES = (ColumnType.DATETIME, ColumnType.DATE)


def check_against_contract(f: FeatureFile, c: Contract) -> list[tuple[tuple, str]]:
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
        if isinstance(feat, decl.Passthrough):
            fits = entity_col((*loc, "column"), feat.column, non_time, "passthrough")
            if fits and feat.column in ent.primary_key:
                out.append(((*loc, "column"), f"column {feat.column!r} is the primary key"))
        elif isinstance(feat, decl.MapValues):
            kinds = (ColumnType.CATEGORY, ColumnType.STRING, ColumnType.INT, ColumnType.BOOL)
            if entity_col((*loc, "column"), feat.column, kinds, "map"):
                out += _check_mapping(loc, feat, ent.columns[feat.column])
        elif isinstance(feat, decl.Ratio):
            entity_col((*loc, "numerator"), feat.numerator, NUMERIC, "ratio")
            entity_col((*loc, "denominator"), feat.denominator, NUMERIC, "ratio")
        elif isinstance(feat, decl.Log1p):
            entity_col((*loc, "column"), feat.column, NUMERIC, "log1p")
        elif isinstance(feat, decl.DatePartOf) and feat.column is not None:
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


def _check_mapping(loc: tuple, feat: decl.MapValues, col: Any) -> list[tuple[tuple, str]]:
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
