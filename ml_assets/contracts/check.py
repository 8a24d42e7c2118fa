"""``ml-assets check``: a contract, its features file and its live source, every problem at once.

A dataset is onboarded by writing two YAML files and pointing them at a database; each of the
three can be wrong in its own way, and fixing one problem only to be shown the next is slow. So
:func:`check` reads everything it can and reports every problem in one pass:

* the contract: each field's type and form, then every rule across fields over the parts that
  are readable (:func:`ml_assets.contracts.model.contract_findings`);
* its features file (by default the one the platform would load: ``$ML_ASSETS_FEATURES``, else
  ``features/<name>.yaml`` beside the contract): each declaration, then whether each readable
  declaration fits the contract (:func:`ml_assets.features.contract_fit.check_against_contract`);
* the source, when it is reachable (SQLAlchemy reflection): every table and column the contract
  names exists, each column's SQL type can hold the contract's type, and the tables have rows
  in the partitioning's time range. An unreachable source is a note, not a problem: the files
  are still checked.

Each problem is a :class:`~ml_assets.contracts.model.Finding`: file, line, field path and what
to change. :attr:`Report.exit_code` is 0 (no problem), 1 (problems) or 2 (a file is unreadable:
missing, not YAML, not a mapping). Passing a features file where the contract is expected checks
it with its contract (found by the features file's ``dataset``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError

from ml_assets.contracts.model import (
    ColumnType,
    Contract,
    ContractError,
    Finding,
    StoredAs,
    Table,
    contract_findings,
)
from ml_assets.contracts.yaml_lines import (
    Lines,
    line_for,
    line_index,
    load_yaml,
    pydantic_problems,
)
from ml_assets.ingest.sql import time_bind_type, window_params

MAX_LISTED = 12
"""How many names a message lists (a source's tables, a table's columns) before ``...``."""


@dataclass
class Report:
    """What :func:`check` found: problems (each to fix), notes (to know) and unreadable files."""

    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    ok_lines: list[str] = field(default_factory=list)
    """One line per file or source found fine."""
    contract: Contract | None = None

    @property
    def exit_code(self) -> int:
        if self.unreadable:
            return 2
        return 1 if self.findings else 0

    def lines(self) -> list[str]:
        """The report as printed: ok lines, notes, then every problem."""
        out = list(self.ok_lines)
        out += [f"note: {n}" for n in self.notes]
        out += self.unreadable
        if self.findings:
            n = len(self.findings)
            out.append(f"{n} problem{'s' if n != 1 else ''}:")
            out += [f"  {f}" for f in self.findings]
        return out


# --- the files ----------------------------------------------------------------------------


def _read(path: Path, what: str, report: Report) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        report.unreadable.append(f"{path}: cannot read the {what}: {exc}")
        return None


def _features_file_dataset(text: str) -> str | None:
    """The ``dataset`` of a features file's text (None if it does not look like one)."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if isinstance(data, dict) and "dataset" in data and "name" not in data:
        return str(data["dataset"])
    return None


def _contract_of_features(path: Path, dataset: str) -> Path | None:
    """Where the contract of a features file is: beside its folder, else the contracts folder."""
    from ml_assets import settings

    for folder in (path.resolve().parent.parent, settings.current().contracts_path):
        candidate = Path(folder) / f"{dataset}.yaml"
        if candidate.exists():
            return candidate
    return None


def default_features_path(contract_path: Path, name: str) -> Path:
    """The features file the platform loads for a contract: ``$ML_ASSETS_FEATURES/<name>.yaml``
    when that is set, else ``features/<name>.yaml`` beside the contract."""
    from ml_assets import settings

    configured = settings.current().features_dir
    folder = configured if configured is not None else contract_path.parent / "features"
    return Path(folder) / f"{name}.yaml"


def check(
    contract_path: str | Path,
    features_path: str | Path | None = None,
    url: str | None = None,
    *,
    source: bool = True,
) -> Report:
    """Check a contract, its features file and (``source``) its live source; see the module."""
    report = Report()
    path = Path(contract_path)
    text = _read(path, "contract", report)
    if text is None:
        return report
    dataset = _features_file_dataset(text)
    if dataset is not None:
        found = _contract_of_features(path, dataset)
        if found is None:
            report.unreadable.append(
                f"{path}: is a features file (dataset {dataset!r}) and no contract "
                f"{dataset}.yaml was found beside its folder; check it with its contract: "
                f"ml-assets check CONTRACT --features {path}"
            )
            return report
        report.notes.append(f"{path} is a features file: checking it with its contract {found}")
        features_path, path = path, found
        text = _read(path, "contract", report)
        if text is None:
            return report

    try:
        contract, findings = contract_findings(text, origin=str(path))
    except ContractError as exc:  # not YAML, or not a mapping
        report.unreadable.append(str(exc))
        return report
    report.findings += findings
    report.contract = contract
    if contract is not None:
        report.ok_lines.append(
            f"{path}: ok ({contract.name} v{contract.version}, {contract.problem_type.value}, "
            f"fingerprint {contract.fingerprint()})"
        )

    # The features file: given, else the one the platform would load.
    name = contract.name if contract is not None else _declared_name(text, path)
    given = features_path is not None
    fpath = Path(features_path) if given else default_features_path(path, name)
    if fpath.exists() or given:
        ftext = _read(fpath, "features file", report)
        if ftext is not None:
            _check_features(ftext, str(fpath), contract, report)
    else:
        report.notes.append(
            f"no features file at {fpath}: the contract's feature columns are passed through"
        )

    if source and contract is not None:
        check_source(contract, str(path), text, url, report)
    return report


def _declared_name(text: str, path: Path) -> str:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        return data["name"]
    return path.stem


def _check_features(text: str, origin: str, contract: Contract | None, report: Report) -> None:
    """Every problem of a features file: its declarations, then their fit with the contract."""
    from ml_assets.features.contract_fit import check_against_contract
    from ml_assets.features.declarations import (
        OP_TAGS,
        Aggregate,
        FeatureFile,
        RequestFeature,
        RowFeature,
    )
    from ml_assets.features.spec import FeatureSpecError, parse_feature_spec

    try:
        node, data = load_yaml(text, origin, FeatureSpecError)
    except FeatureSpecError as exc:
        report.unreadable.append(str(exc))
        return
    if not isinstance(data, dict):
        report.unreadable.append(
            f"{origin}: a features file is a YAML mapping, got {type(data).__name__}"
        )
        return
    lines = line_index(node)

    def finding(loc: tuple[Any, ...], message: str) -> Finding:
        where = line_for(lines, loc, skip=OP_TAGS.__contains__, as_text=True)
        path = ".".join(str(p) for p in loc if p not in OP_TAGS) or "(top level)"
        name = _feature_name(data, loc)
        return Finding(origin, where, path, f"feature {name!r}: {message}" if name else message)

    found: list[Finding] = []
    try:
        FeatureFile.model_validate(data)
    except ValidationError as exc:
        found += [finding(loc, msg) for loc, msg in pydantic_problems(exc)]

    if contract is None:
        report.notes.append(
            f"{origin}: not checked against the contract until the contract is valid"
        )
    else:
        # Each readable declaration against the contract, at its own index in the file.
        adapters = {
            "row": TypeAdapter(RowFeature),
            "aggregates": TypeAdapter(Aggregate),
            "request": TypeAdapter(RequestFeature),
        }
        kept: dict[str, list[Any]] = {s: [] for s in adapters}
        index: dict[str, list[int]] = {s: [] for s in adapters}
        for section, adapter in adapters.items():
            items = data.get(section)
            for i, item in enumerate(items if isinstance(items, list) else []):
                try:
                    kept[section].append(adapter.validate_python(item))
                    index[section].append(i)
                except ValidationError:
                    pass
        top: dict[str, Any] = {}
        for key, annotation in (("dataset", str), ("timezone", str | None)):
            try:
                top[key] = TypeAdapter(annotation).validate_python(data.get(key))
            except ValidationError:
                top[key] = contract.name if key == "dataset" else None  # reported above
        readable = FeatureFile.model_construct(**top, **kept)
        for loc, msg in check_against_contract(readable, contract):
            if len(loc) >= 2 and loc[0] in index and isinstance(loc[1], int):
                loc = (loc[0], index[loc[0]][loc[1]], *loc[2:])
            found.append(finding(loc, msg))
        if not found:
            try:  # the loader itself, so check and load can never disagree
                spec = parse_feature_spec(text, contract, origin=origin)
            except FeatureSpecError as exc:
                found += [Finding(origin, None, "(features)", str(exc))]
            else:
                report.ok_lines.append(f"{origin}: ok ({len(spec.names)} features)")
    found.sort(key=lambda f: f.line or 0)
    report.findings += found


def _feature_name(data: Any, loc: tuple[Any, ...]) -> str | None:
    if len(loc) >= 2 and isinstance(data, dict) and isinstance(loc[1], int):
        items = data.get(loc[0])
        if isinstance(items, list) and loc[1] < len(items) and isinstance(items[loc[1]], dict):
            name = items[loc[1]].get("name")
            return str(name) if name is not None else None
    return None


# --- the live source ----------------------------------------------------------------------

# Which SQL type families can hold each contract type: "ok", or a note (works, with a caveat).
# Anything else is a problem.
_FITS: dict[ColumnType, dict[str, str]] = {
    ColumnType.INT: {"int": "ok", "bool": "ok"},
    ColumnType.FLOAT: {"int": "ok", "float": "ok"},
    ColumnType.BOOL: {"bool": "ok", "int": "ok"},
    ColumnType.STRING: {"text": "ok", "int": "text", "float": "text", "bool": "text"},
    ColumnType.CATEGORY: {"text": "ok", "int": "text", "float": "text", "bool": "text"},
    ColumnType.DATETIME: {"datetime": "ok", "date": "ok", "text": "parsed"},
    ColumnType.DATE: {"date": "ok", "datetime": "ok", "text": "parsed"},
}
_STORED_FITS: dict[StoredAs, dict[str, str]] = {
    StoredAs.DATE: {"date": "ok", "datetime": "ok", "text": "parsed"},
    StoredAs.YEAR: {"int": "ok", "float": "parsed", "text": "parsed"},
    StoredAs.YEAR_MONTH: {"int": "ok", "float": "parsed", "text": "parsed"},
}
"""The same for a datetime column ``stored_as`` a date, year or yyyymm."""
_DECLARE: dict[str, str] = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "text": "string or category",
    "datetime": "datetime",
    "date": "date",
}


def sql_family(t: sa.types.TypeEngine) -> str | None:
    """The family of a reflected SQL type: int, float, bool, text, datetime, date, other; None
    when SQLAlchemy does not know the type (an untyped SQLite column, say)."""
    if isinstance(t, sa.types.NullType):
        return None
    if isinstance(t, sa.Boolean):
        return "bool"
    if isinstance(t, sa.Integer):
        return "int"
    if isinstance(t, sa.Float):
        return "float"
    if isinstance(t, sa.Numeric):
        return "int" if t.scale == 0 else "float"
    if isinstance(t, sa.DateTime):
        return "datetime"
    if isinstance(t, sa.Date):
        return "date"
    if isinstance(t, sa.String):
        return "text"
    return "other"


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (", ..." if len(names) > MAX_LISTED else "")


def _engine(url: str) -> sa.Engine:
    """An engine that fails fast when the server is down (a check must not hang)."""
    parsed = sa.make_url(url)
    args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        args["connect_args"] = {"connect_timeout": 5}
    return sa.create_engine(parsed, **args)


def source_url(contract: Contract, url: str | None = None) -> str:
    """The URL ``check`` reads: ``url``, else the contract's source as the pipeline resolves it."""
    if url:
        return url
    from ml_assets import settings

    return settings.current().source_url_for(contract.source.url_env, contract.source.url)


def check_source(
    contract: Contract, origin: str, text: str, url: str | None, report: Report
) -> None:
    """The contract against its live source (see the module); adds to ``report``."""
    import yaml

    first = len(report.notes)
    lines = line_index(yaml.compose(text, Loader=yaml.SafeLoader))
    url = source_url(contract, url)
    try:
        shown = sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError as exc:
        report.notes.append(f"source not checked: {url!r} is not a SQLAlchemy URL ({exc})")
        return
    parsed = sa.make_url(url)
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if file not in (None, "", ":memory:") and not Path(file).exists():
        # connecting would create an empty file
        report.notes.append(f"source not checked: {shown}: no such SQLite file")
        return
    try:
        engine = _engine(url)
        with engine.connect() as conn:
            for role, table in contract.tables.items():
                _check_table(conn, contract, role, table, origin, lines, report)
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        report.notes.append(f"source not checked: {shown} is unreachable ({reason})")
        return
    finally:
        if "engine" in locals():
            engine.dispose()
    report.notes.insert(first, f"source {shown}: checked")


def _find(lines: Lines, origin: str, loc: tuple[Any, ...], message: str) -> Finding:
    return Finding(origin, line_for(lines, loc), ".".join(map(str, loc)), message)


def _period(contract: Contract) -> tuple[dt.datetime, dt.datetime]:
    """The partitioning's [start, end) as naive UTC, the way sources hold times."""
    p = contract.partitioning
    tz = ZoneInfo(p.timezone)

    def utc(day: dt.date) -> dt.datetime:
        local = dt.datetime.combine(day, dt.time(), tzinfo=tz)
        return local.astimezone(dt.UTC).replace(tzinfo=None)

    end = utc(p.end) if p.end else dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return utc(p.start), end


def _check_table(
    conn: sa.Connection,
    contract: Contract,
    role: str,
    table: Table,
    origin: str,
    lines: Lines,
    report: Report,
) -> None:
    found = report.findings
    where = table.table or "query"
    types: dict[str, sa.types.TypeEngine | None]
    if table.table is not None:
        schema, _, name = table.table.rpartition(".")
        inspector = sa.inspect(conn)
        if not inspector.has_table(name, schema=schema or None):
            there = sorted(inspector.get_table_names(schema=schema or None))
            found.append(
                _find(
                    lines,
                    origin,
                    (role, "table"),
                    f"table {table.table!r} is not in the source (it has: {_listed(there) or 'no tables'})",
                )
            )
            return
        types = {c["name"]: c["type"] for c in inspector.get_columns(name, schema=schema or None)}
    else:
        probe = sa.text(f"SELECT * FROM ({table.query}) AS contract_query WHERE 1 = 0")
        try:
            types = dict.fromkeys(conn.execute(probe).keys())
        except sa.exc.DBAPIError as exc:
            conn.rollback()
            reason = str(exc.orig).strip().splitlines()[0]
            found.append(_find(lines, origin, (role, "query"), f"the query fails: {reason}"))
            return

    present: dict[str, str] = {}
    located = table.source_columns(types)
    ambiguous = table.ambiguous_columns(types)
    for col_name, col in table.columns.items():
        actual = located.get(col_name)
        if actual is None:
            if col_name in ambiguous:
                what = (
                    f"column {col_name!r} could be any of {_listed(ambiguous[col_name])} in "
                    f"{where}: say which with source: <name>"
                )
            elif col.source is not None:
                what = (
                    f"column {col_name!r} reads source column {col.source!r}, which is not in "
                    f"{where} (its columns: {_listed(list(types))}); fix its source or remove it"
                )
            else:
                what = (
                    f"column {col_name!r} is not in {where} (its columns: "
                    f"{_listed(list(types))}); rename it to the source's name (or declare "
                    "source: <name>) or remove it"
                )
            found.append(_find(lines, origin, (role, "columns", col_name), what))
            continue
        if actual != col_name and col.source is None:
            report.notes.append(f"{where}.{actual} is read as {col_name}")
        present[col_name] = actual
        sql_type = types[actual]
        family = sql_family(sql_type) if sql_type is not None else None
        if family is None:
            if sql_type is not None:
                report.notes.append(
                    f"{where}.{actual}: the source does not say its type; not checked"
                )
            continue
        fits = _STORED_FITS[col.stored_as] if col.stored_as is not None else _FITS[col.type]
        fit = fits.get(family)
        if fit is None:
            declare = f"declare type {_DECLARE.get(family, 'to match')}"
            if col.type is ColumnType.DATETIME and family in ("int", "date"):
                unit = "year (or year_month for yyyymm)" if family == "int" else "date"
                declare += f", or keep datetime with stored_as: {unit}"
            held = col.type.value + (f" stored as {col.stored_as.value}" if col.stored_as else "")
            found.append(
                _find(
                    lines,
                    origin,
                    (role, "columns", col_name, "type"),
                    f"source column {where}.{actual} is {sql_type}, which does not hold "
                    f"{held} values; {declare} or change the source",
                )
            )
        elif fit == "parsed":
            report.notes.append(
                f"{where}.{actual} is {sql_type}: {col.type.value} values are parsed from its "
                "text; rows that do not parse are quarantined"
            )
    extra = [n for n in types if n not in present.values()]
    if extra:
        report.notes.append(
            f"{where}: source columns not in the contract (dropped on ingest): {_listed(extra)}"
        )

    time_col = table.time_column
    if time_col not in present:
        return  # reported above
    _check_rows(conn, contract, role, table, present, origin, lines, report)


def _check_rows(
    conn: sa.Connection,
    contract: Contract,
    role: str,
    table: Table,
    present: dict[str, str],
    origin: str,
    lines: Lines,
    report: Report,
) -> None:
    """Row count and time range, overall and within the partitioning."""
    where = table.table or "query"
    if table.table is not None:
        schema, _, name = table.table.rpartition(".")
        src: Any = sa.table(name, schema=schema or None)
    else:
        src = sa.text(f"({table.query}) AS contract_query")
    t = sa.column(sa.sql.quoted_name(present[table.time_column], quote=True))
    total, low, high = conn.execute(
        sa.select(sa.func.count(), sa.func.min(t), sa.func.max(t)).select_from(src)
    ).one()
    start, end = _period(contract)
    bound = time_bind_type(table)
    inside = conn.execute(
        sa.select(sa.func.count())
        .select_from(src)
        .where(t >= sa.bindparam("start", type_=bound), t < sa.bindparam("end", type_=bound)),
        window_params(table, start, end, contract.partitioning.timezone),
    ).scalar_one()
    span = f"{start:%Y-%m-%d} .. {end:%Y-%m-%d}"
    if total == 0:
        report.findings.append(
            _find(
                lines, origin, (role, "table" if table.table else "query"), f"{where} has no rows"
            )
        )
        return
    report.notes.append(
        f"{role} {where}: {total:,} rows, {table.time_column} {low} .. {high}; "
        f"{inside:,} in the partitioning [{span})"
    )
    if inside == 0:
        report.findings.append(
            _find(
                lines,
                origin,
                ("partitioning",),
                f"none of the {total:,} rows of {where} has {table.time_column} in "
                f"[{span}) (they span {low} .. {high}): change partitioning.start / end",
            )
        )
