"""``ml-assets contract init``: a draft contract from a table in a database, for review.

Writing a contract from a blank file means looking up every column's type, range and values by
hand. :func:`draft_contract` does the looking up: it reflects the table (SQLAlchemy) and
profiles its rows in SQL (row and null counts, min/max of numbers, distinct values of text), so
the draft holds what the data holds today:

* each column's type from its SQL type (text that all parses as timestamps becomes datetime;
  text with few distinct values becomes a category with those values allowed);
* ``nullable`` where nulls occur; ``min``/``max`` of numbers as observed;
* the primary key (the table's own, else a unique non-null int or text column) and the event
  time (a datetime column without nulls);
* labels: from ``labels`` (keyed by the primary key's name, timed by its datetime column), or,
  without one, from the table itself (the target's column, observed at the event time);
* the target (``target``, else a guess) and the problem type it implies; the partitioning from
  the event time's range.

Every guess carries a ``# REVIEW:`` comment saying what it rests on and what to decide. The
draft is laid out like the bundled contracts and passes ``ml-assets check`` against the table
it came from. Nothing here names a dataset's columns: they all come from the database.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import yaml

from ml_assets.contracts.check import sql_family
from ml_assets.contracts.model import NAME_RE, snake_name

MAX_CATEGORIES = 20
"""Text with at most this many distinct values (and fewer than half the rows) is a category."""
SAMPLE_ROWS = 1000
"""Values sampled from a text or untyped column to tell timestamps and numbers from text."""


class DraftError(ValueError):
    """A table that cannot be drafted into a contract; the message says what to do."""


@dataclass
class Profile:
    """What the database says about one column, and what its rows hold."""

    name: str
    sql_type: str
    family: str | None
    """int, float, bool, text, datetime, date, other; None when the source does not say."""
    db_nullable: bool
    rows: int = 0
    nulls: int = 0
    distinct: int | None = None
    low: Any = None
    high: Any = None
    values: list[Any] | None = None
    """The distinct values, when there are at most MAX_CATEGORIES of them."""
    from_values: bool = False
    """The family was read from sampled values (text that holds timestamps, an untyped column)."""
    source: str | None = None
    """The source's name of the column, when ``name`` is the snake-case name derived from it."""

    @property
    def unique(self) -> bool:
        return self.rows > 0 and self.nulls == 0 and self.distinct == self.rows


@dataclass
class Draft:
    """A drafted contract: its dataset name, the YAML text and a one-line summary."""

    name: str
    text: str
    summary: str
    reviews: int = 0


@dataclass
class _Table:
    name: str
    profiles: dict[str, Profile]
    primary_key: list[str] = field(default_factory=list)


def _contract_names(t: _Table) -> tuple[_Table, list[str]]:
    """The table with each column under its contract name (:func:`snake_name` of the source's,
    the source's kept in ``Profile.source``), and the source columns left out because an
    earlier one already derives their name."""
    import dataclasses

    profiles: dict[str, Profile] = {}
    clashes: list[str] = []
    for src, p in t.profiles.items():
        name = src if NAME_RE.match(src) else snake_name(src)
        if name in profiles:
            clashes.append(src)
            continue
        profiles[name] = p if name == src else dataclasses.replace(p, name=name, source=src)
    key = [k if NAME_RE.match(k) else snake_name(k) for k in t.primary_key]
    return _Table(t.name, profiles, key), clashes


# --- profiling ----------------------------------------------------------------------------


def _parses_as_datetime(values: list[Any]) -> bool:
    if not values:
        return False
    for v in values:
        if not isinstance(v, str):
            return False
        try:
            dt.datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            return False
    return True


def _value_family(values: list[Any]) -> str:
    """The family of sampled values from a column whose SQL type says nothing (or text)."""
    if values and all(isinstance(v, bool) for v in values):
        return "bool"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "float"
    if _parses_as_datetime(values):
        return "datetime"
    return "text"


def _profile_table(conn: sa.Connection, name: str) -> _Table:
    schema, _, bare = name.rpartition(".")
    inspector = sa.inspect(conn)
    if not inspector.has_table(bare, schema=schema or None):
        there = sorted(inspector.get_table_names(schema=schema or None))
        raise DraftError(
            f"table {name!r} is not in the database (it has: {', '.join(there) or 'no tables'})"
        )
    reflected = inspector.get_columns(bare, schema=schema or None)
    pk = inspector.get_pk_constraint(bare, schema=schema or None).get("constrained_columns") or []
    src = sa.table(bare, *[sa.column(c["name"]) for c in reflected], schema=schema or None)
    profiles = {
        c["name"]: Profile(c["name"], str(c["type"]), sql_family(c["type"]), bool(c["nullable"]))
        for c in reflected
    }

    # Sample the columns whose SQL type leaves their content open (text, untyped).
    for p in profiles.values():
        if p.family in (None, "text", "other"):
            col = src.c[p.name]
            sample = (
                conn.execute(sa.select(col).where(col.is_not(None)).limit(SAMPLE_ROWS))
                .scalars()
                .all()
            )
            if p.family is None or (p.family == "text" and _parses_as_datetime(list(sample))):
                p.family = _value_family(list(sample)) if sample else "text"
                p.from_values = True

    # One scan: rows, nulls, min/max of numbers and times, distinct counts of the rest.
    exprs: list[Any] = [sa.func.count().label("rows")]
    for i, p in enumerate(profiles.values()):
        col = src.c[p.name]
        exprs.append(sa.func.count(col).label(f"n{i}"))
        if p.family in ("int", "float", "datetime", "date"):
            exprs += [sa.func.min(col).label(f"lo{i}"), sa.func.max(col).label(f"hi{i}")]
        if p.family in ("int", "text", "bool"):
            exprs.append(sa.func.count(sa.distinct(col)).label(f"d{i}"))
    row = conn.execute(sa.select(*exprs).select_from(src)).one()._mapping
    for i, p in enumerate(profiles.values()):
        p.rows = row["rows"]
        p.nulls = row["rows"] - row[f"n{i}"]
        p.low, p.high = row.get(f"lo{i}"), row.get(f"hi{i}")
        p.distinct = row.get(f"d{i}")
        few = p.distinct is not None and p.distinct <= MAX_CATEGORIES
        if p.family in ("text", "int", "bool") and few:
            col = src.c[p.name]
            p.values = (
                conn.execute(sa.select(col).where(col.is_not(None)).distinct().order_by(col))
                .scalars()
                .all()
            )
    table = _Table(name, profiles, list(pk))
    return table


# --- guesses ------------------------------------------------------------------------------


def _is_category(p: Profile) -> bool:
    non_null = p.rows - p.nulls
    return (
        p.family == "text"
        and p.values is not None
        and 0 < len(p.values) <= MAX_CATEGORIES
        and len(p.values) * 2 <= non_null
    )


MAX_LEARNED = 5000
"""Text with more distinct values than :data:`MAX_CATEGORIES`, up to this many and each seen
about 20 times on average, is a category whose values are learned (``categories: learned``)."""


def _is_learned_category(p: Profile) -> bool:
    non_null = p.rows - p.nulls
    return (
        p.family == "text"
        and p.distinct is not None
        and MAX_CATEGORIES < p.distinct <= MAX_LEARNED
        and p.distinct * 20 <= non_null
    )


def _contract_type(p: Profile) -> str:
    if p.family == "text":
        return "category" if _is_category(p) or _is_learned_category(p) else "string"
    return {
        "int": "int",
        "float": "float",
        "bool": "bool",
        "datetime": "datetime",
        "date": "date",
    }.get(p.family or "", "string")


def _primary_key(t: _Table) -> tuple[str, str]:
    """(column, why) of the entity's primary key."""
    if len(t.primary_key) == 1 and t.primary_key[0] in t.profiles:
        p = t.profiles[t.primary_key[0]]
        if p.family in ("int", "text") and p.nulls == 0:
            return p.name, f"the table's primary key ({p.sql_type})"
    for p in t.profiles.values():
        if p.family in ("int", "text") and p.unique:
            return (
                p.name,
                f"the first unique non-null {p.family} column ({p.rows:,} distinct values)",
            )
    raise DraftError(
        f"table {t.name!r} has no unique non-null int or text column to key its rows by: "
        "add one (a row id), or draft from a query that has one"
    )


YEARS = (1800, 2200)
"""Integers in this range, without nulls, can be a table's time as a year (``stored_as``)."""


def _stored_unit(p: Profile) -> str | None:
    """``year`` or ``year_month`` when an integer column without nulls holds only years (or
    only yyyymm values), else None."""
    if p.family != "int" or p.nulls or p.rows == 0:
        return None
    lo, hi = _number(p.low), _number(p.high)
    if lo is None or hi is None:
        return None
    if YEARS[0] <= lo <= hi <= YEARS[1]:
        return "year"
    if YEARS[0] * 100 + 1 <= lo <= hi <= YEARS[1] * 100 + 12 and all(
        1 <= int(v) % 100 <= 12 for v in (p.values or [lo, hi])
    ):
        return "year_month"
    return None


def _time_column(t: _Table, skip: set[str], what: str) -> tuple[str, str, str | None]:
    """(column, why, stored_as) of a table's time column: a datetime column without nulls,
    else an integer column that holds years or yyyymm values (``stored_as``)."""
    times = [p for p in t.profiles.values() if p.family == "datetime" and p.name not in skip]
    clean = [p for p in times if p.nulls == 0 and p.rows > 0]
    if not clean:
        stored = [
            (p, unit)
            for p in t.profiles.values()
            if p.name not in skip and (unit := _stored_unit(p)) is not None
        ]
        if stored:
            p, unit = stored[0]
            return (
                p.name,
                f"no datetime column; {p.name} holds integers {p.low} .. {p.high}, read as a "
                f"{unit.replace('_', '-')} (stored_as: {unit})",
                unit,
            )
        raise DraftError(
            f"table {t.name!r} has no datetime column without nulls to use as its {what}: "
            "every row needs the time it happened (an integer year or yyyymm column also does)"
        )
    others = [p.name for p in clean[1:]]
    why = f"the first datetime column without nulls ({clean[0].low} .. {clean[0].high})"
    if others:
        why += f"; also candidates: {', '.join(others)}"
    return clean[0].name, why, None


def _stored_datetime(v: Any, unit: str | None) -> Any:
    """A stored year or yyyymm as the datetime it stands for (other values as they are)."""
    if unit == "year":
        return dt.datetime(int(v), 1, 1)
    if unit == "year_month":
        return dt.datetime(int(v) // 100, int(v) % 100, 1)
    return v


def _target_fits(p: Profile) -> bool:
    if p.rows - p.nulls == 0:
        return False
    if p.family in ("bool", "float"):
        return True
    if p.family == "int":
        return True
    return p.family == "text" and p.values is not None and len(p.values) >= 2


def _problem(p: Profile) -> tuple[str, str]:
    """(problem type, why) for a target column."""
    n = len(p.values) if p.values is not None else None
    if p.family == "bool" or (n == 2 and p.family in ("int", "text")):
        return "binary", "its two values"
    if p.family in ("int", "text") and n is not None and n <= MAX_CATEGORIES:
        return "multiclass", f"its {n} values"
    return "regression", "a number with many values"


# --- YAML ---------------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _scalar(v: Any) -> str:
    """A value as a YAML flow scalar that reads back as the same value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    s = str(v)
    if _PLAIN.match(s):
        try:
            if yaml.safe_load(f"[{s}]") == [s]:
                return s
        except yaml.YAMLError:
            pass
    return json.dumps(s, ensure_ascii=False)


def _number(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _column_line(
    name: str,
    p: Profile,
    ctype: str,
    *,
    key: bool = False,
    allowed_ints: bool = False,
    stored_as: str | None = None,
) -> tuple[str, str]:
    """(YAML line of a column, what its REVIEW comment says)."""
    parts = [f"type: {ctype}", f"nullable: {'true' if p.nulls else 'false'}"]
    notes: list[str] = [f"{p.sql_type} in the source"]
    if p.source is not None:
        parts.append(f"source: {_scalar(p.source)}")
    if stored_as is not None:
        parts.append(f"stored_as: {stored_as}")
        notes.append(f"decoded from the stored {stored_as.replace('_', '-')} at ingestion")
    if p.nulls:
        notes.append(f"{p.nulls:,} nulls in {p.rows:,} rows")
    elif p.db_nullable and not key:
        notes.append("no nulls seen, though the source allows them")
    if ctype == "float" or (ctype == "int" and not allowed_ints):
        lo, hi = _number(p.low), _number(p.high)
        if lo is not None:
            parts.append(f"min: {_scalar(lo if ctype == 'float' else int(lo))}")
        if hi is not None and not key:
            parts.append(f"max: {_scalar(hi if ctype == 'float' else int(hi))}")
        if lo is not None:
            notes.append("min/max as observed: widen them to what future rows may hold")
    allowed = None
    if ctype == "category" and _is_learned_category(p):
        parts.append("categories: learned")
        notes.append(
            f"{p.distinct:,} distinct values: too many to list, so learned from the training "
            "data (the champion serves those); list them in allowed to fix the set instead"
        )
    elif ctype == "category" or (ctype == "int" and allowed_ints):
        allowed = p.values or []
        notes.append(f"allowed: the {len(allowed)} values seen; add any others it may take")
    if ctype == "string" and p.family == "text" and p.distinct is not None:
        notes.append(f"{p.distinct:,} distinct values: text, not a category")
    if p.from_values:
        notes.append(f"{ctype} read from the values: the source does not type them")
    if allowed is not None:
        parts.append("allowed: [" + ", ".join(_scalar(v) for v in allowed) + "]")
    return f"{name}: {{{', '.join(parts)}}}", "; ".join(notes)


def _dataset_name(table: str) -> str:
    bare = table.rpartition(".")[2]
    name = re.sub(r"[^a-z0-9_]+", "_", bare.lower()).strip("_") or "dataset"
    return name if name[0].isalpha() else f"d_{name}"


def _as_datetime(v: Any) -> dt.datetime:
    if isinstance(v, dt.datetime):
        return (
            v.replace(tzinfo=None)
            if v.tzinfo is None
            else v.astimezone(dt.UTC).replace(tzinfo=None)
        )
    if isinstance(v, dt.date):
        return dt.datetime.combine(v, dt.time())
    parsed = dt.datetime.fromisoformat(str(v).strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is None else parsed.astimezone(dt.UTC).replace(tzinfo=None)


def _partitioning(low: Any, high: Any, yearly: bool = False) -> tuple[str, dt.date, dt.date]:
    """(granularity, start, end) covering [low, high]: daily up to two months, weekly up to
    three years, else monthly (``yearly``: years, for a time stored as a year); ``end`` is the
    first partition boundary after ``high``."""
    lo, hi = _as_datetime(low), _as_datetime(high)
    if yearly:
        return "yearly", dt.date(lo.year, 1, 1), dt.date(hi.year + 1, 1, 1)
    span = hi - lo
    if span <= dt.timedelta(days=62):
        start = lo.date()
        return "daily", start, hi.date() + dt.timedelta(days=1)
    if span <= dt.timedelta(days=3 * 365):
        start = lo.date()
        weeks = (hi.date() - start).days // 7 + 1
        return "weekly", start, start + dt.timedelta(weeks=weeks)
    start = lo.date().replace(day=1)
    nxt = hi.date().replace(day=1)
    end = (
        nxt.replace(year=nxt.year + 1, month=1)
        if nxt.month == 12
        else nxt.replace(month=nxt.month + 1)
    )
    return "monthly", start, end


def draft_contract(
    url: str,
    table: str,
    *,
    labels: str | None = None,
    name: str | None = None,
    target: str | None = None,
) -> Draft:
    """Draft a contract from ``table`` (and the ``labels`` table) at ``url``; see the module."""
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise DraftError(f"--url {url!r} is not a usable SQLAlchemy URL: {exc}") from exc
    shown = engine.url.render_as_string(hide_password=True)
    if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (
        None,
        "",
        ":memory:",
    ):
        from pathlib import Path

        if not Path(engine.url.database).exists():
            raise DraftError(f"{shown}: no such SQLite file")
    try:
        with engine.connect() as conn:
            entity = _profile_table(conn, table)
            label_table = _profile_table(conn, labels) if labels else None
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DraftError(f"cannot read {shown}: {reason}") from exc
    finally:
        engine.dispose()
    if not entity.profiles or next(iter(entity.profiles.values())).rows == 0:
        raise DraftError(f"table {table!r} has no rows to draft a contract from")
    return _write(entity, label_table, name or _dataset_name(table), target, shown)


def _write(
    entity: _Table, labels: _Table | None, name: str, target: str | None, shown: str
) -> Draft:
    if not NAME_RE.match(name):
        raise DraftError(f"--name {name!r} must be lower snake_case")
    reviews = 0
    entity, bad_names = _contract_names(entity)
    if labels is not None:
        labels, _ = _contract_names(labels)
    pk, pk_why = _primary_key(entity)
    time, time_why, time_unit = _time_column(entity, {pk}, "event time")
    observed_unit: str | None = None

    # The target and where labels come from.
    if labels is not None:
        lab_key = pk if pk in labels.profiles else None
        if lab_key is None:
            raise DraftError(
                f"labels table {labels.name!r} has no column {pk!r} (the entity's primary key): "
                "the labels must carry the key of the row they label"
            )
        observed, observed_why, observed_unit = _time_column(labels, {lab_key}, "observed-at time")
        pool = [p for p in labels.profiles.values() if p.name not in (lab_key, observed)]
    else:
        lab_key, observed, observed_why = pk, time, "labels are in the table itself"
        observed_unit = time_unit
        pool = [p for p in entity.profiles.values() if p.name not in (pk, time)]
    pool = [p for p in pool if NAME_RE.match(p.name)]
    if target is not None:
        found = [p for p in pool if p.name == target]
        if not found:
            where = labels.name if labels else entity.name
            raise DraftError(
                f"--target {target!r} is not a value column of {where!r} "
                f"(its columns: {', '.join(p.name for p in pool)})"
            )
        tprof, target_why = found[0], "chosen with --target"
    else:
        fits = [p for p in pool if _target_fits(p)]
        if not fits:
            raise DraftError("no column can be the target: pass --target COLUMN")
        # With labels in their own table the first value column; in the entity table the last.
        tprof = fits[0] if labels is not None else fits[-1]
        others = [p.name for p in fits if p is not tprof]
        target_why = "a guess" + (f"; the other candidates: {', '.join(others)}" if others else "")
    problem, problem_why = _problem(tprof)
    target_type = "category" if tprof.family == "text" else _contract_type(tprof)

    # Cover the labels' observation times too: a label observed after the end is never read.
    low = _stored_datetime(entity.profiles[time].low, time_unit)
    high = _stored_datetime(entity.profiles[time].high, time_unit)
    if labels is not None and labels.profiles[observed].high is not None:
        seen = _stored_datetime(labels.profiles[observed].high, observed_unit)
        high = max(_as_datetime(high), _as_datetime(seen))
    granularity, start, end = _partitioning(low, high, yearly=time_unit == "year")

    out: list[str] = []

    def review(text: str, indent: int = 0) -> None:
        nonlocal reviews
        reviews += 1
        out.append(" " * indent + f"# REVIEW: {text}")

    out += [
        f"# {name}: drafted by `ml-assets contract init` from {entity.name}"
        + (f" and {labels.name}" if labels else "")
        + f" at {shown}.",
        "# Every guess is marked REVIEW: decide it, then delete the mark; `ml-assets check` this",
        "# file against the source before running the pipeline.",
        f"name: {name}",
        "version: 0.1.0",
    ]
    review("who answers for this data (an email address makes them the Dagster asset owner)")
    out.append("owner: data-owner@example.com")
    review("say what one row is and what is predicted")
    out.append(f"description: {_scalar(f'Drafted from {entity.name}.')}")
    review(f"{problem} from the target's values ({problem_why})")
    out.append(f"problem_type: {problem}")
    review(
        f"the column to predict ({target_why}); to predict another, re-run "
        "`ml-assets contract init` with --target COLUMN"
    )
    out.append(f"target: {tprof.name}")
    out += ["source:", "  url_env: ML_ASSETS_SOURCE_URL"]
    out.append("partitioning:")
    review(
        f"{granularity} partitions over the range of the event times"
        + (" and of the labels' observation times" if labels is not None else "")
        + "; end is where ingestion stops (remove it to follow new data)",
        2,
    )
    out += [
        f"  granularity: {granularity}",
        f'  start: "{start.isoformat()}"',
        f'  end: "{end.isoformat()}"',
    ]
    review("naive source times are read in this timezone", 2)
    out.append("  timezone: UTC")

    out.append("entity:")
    out.append(f"  table: {entity.name}")
    review(f"{pk}: {pk_why}", 2)
    out.append(f"  primary_key: [{pk}]")
    review(f"{time}: {time_why}", 2)
    out.append(f"  event_time: {time}")
    out.append("  columns:")
    for clash in bad_names:
        review(
            f"source column {clash!r} left out: its contract name {snake_name(clash)!r} is "
            "another column's; declare it under a name of its own with source: " + clash,
            4,
        )
    for col, p in entity.profiles.items():
        if p.source is not None:
            review(f"{col}: the contract's name of source column {p.source!r}", 4)
        if labels is None and col == tprof.name:
            continue  # the target is a label, not an input
        if p.family == "other":
            review(f"column {col!r} left out: its type {p.sql_type} has no contract type", 4)
            continue
        ctype = "datetime" if col == time else _contract_type(p)
        line, note = _column_line(
            col, p, ctype, key=col == pk, stored_as=time_unit if col == time else None
        )
        review(note, 4)
        out.append(f"    {line}")

    lab_src = labels if labels is not None else entity
    out.append("labels:")
    if labels is None:
        review(
            "the labels are in the entity table, each known at its event time; if each is known "
            "a fixed time later, add observed_after_days: N; if later by a time of its own, "
            "point observed_at at that column (or at a table that says when each was observed)",
            2,
        )
    out.append(f"  table: {lab_src.name}")
    out.append(f"  key: [{lab_key}]")
    if labels is not None:
        review(f"{observed}: {observed_why}", 2)
    out.append(f"  observed_at: {observed}")
    out.append("  columns:")
    key_type = _contract_type(entity.profiles[pk])
    line, note = _column_line(lab_key, lab_src.profiles[lab_key], key_type, key=True)
    out.append(f"    {line}")
    line, note = _column_line(
        observed, lab_src.profiles[observed], "datetime", stored_as=observed_unit
    )
    out.append(f"    {line}")
    classify = problem != "regression"
    line, note = _column_line(
        tprof.name, tprof, target_type, allowed_ints=classify and target_type == "int"
    )
    review(f"the target: {note}", 4)
    out.append(f"    {line}")
    if labels is not None:
        rest = [c for c in labels.profiles if c not in (lab_key, observed, tprof.name)]
        if rest:
            out.append(f"    # not declared (not needed for {tprof.name}): {', '.join(rest)}")
    text = "\n".join(out) + "\n"
    n_cols = len(entity.profiles) - (labels is None)
    summary = (
        f"{name}, {problem} on {tprof.name}, {n_cols} entity columns, {granularity} partitions "
        f"{start} .. {end}, {reviews} REVIEW marks"
    )
    return Draft(name=name, text=text, summary=summary, reviews=reviews)
