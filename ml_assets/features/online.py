"""The online store and the online feature path: no Dagster here, so the service imports it cheaply.

The store is one SQL table per dataset (``online_<dataset>``), keyed by (group column, group
value as text), holding the latest value of every group-keyed aggregate with its ``as_of`` time,
plus a small registry table (``ml_assets_online_meta``) saying which features a dataset has,
their types and defaults, and the dataset's ``as_of``. :func:`write_snapshot` upserts a
snapshot (``INSERT ... ON CONFLICT DO UPDATE``, SQLite and PostgreSQL) in one transaction.

:class:`OnlineClient` fetches the aggregates for a batch of keys in one query over one reused
connection. :func:`online_features` is the serving path: request records -> the same row
transforms as offline + store lookups + request-time features.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import polars as pl
import sqlalchemy as sa

from ml_assets.features.compute import group_text, to_utc, transform_rows
from ml_assets.features.spec import COLUMN_DTYPES, Agg, FeatureSpec

log = logging.getLogger(__name__)

META_TABLE = "ml_assets_online_meta"
_DTYPES: dict[str, pl.DataType] = {
    "Int64": pl.Int64(),
    "Float64": pl.Float64(),
    "Boolean": pl.Boolean(),
    "String": pl.String(),
}
_SQL: dict[str, Any] = {
    "Int64": sa.BigInteger,
    "Float64": lambda: sa.Float(precision=53),
    "Boolean": sa.Boolean,
    "String": sa.Text,
}


def table_name(dataset: str) -> str:
    return f"online_{dataset}"


def _meta_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        META_TABLE,
        metadata,
        sa.Column("dataset", sa.String(128), primary_key=True),
        sa.Column("table_name", sa.String(160), nullable=False),
        sa.Column("features", sa.Text, nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=False), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=False), nullable=False),
    )


def store_columns(spec: FeatureSpec) -> list[dict[str, Any]]:
    """What the registry records per aggregate: name, group column, type, default if absent."""
    dtypes = spec.dtypes()
    out = []
    for a in spec.aggregates:
        dtype = str(dtypes[a.name].base_type().__name__)
        out.append(
            {
                "name": a.name,
                "group_by": a.group_by,
                "agg": a.agg.value,
                "dtype": dtype,
                # A group never seen has had no events: counts and sums are zero.
                "default": 0 if a.agg in (Agg.COUNT, Agg.SUM) else None,
            }
        )
    return out


def _features_table(dataset: str, columns: list[dict[str, Any]], metadata: sa.MetaData) -> sa.Table:
    name = table_name(dataset)
    return sa.Table(
        name,
        metadata,
        sa.Column("group_column", sa.String(128), primary_key=True),
        sa.Column("group_value", sa.String(512), primary_key=True),
        *[sa.Column(c["name"], _SQL[c["dtype"]](), nullable=True) for c in columns],
        sa.Column("as_of", sa.DateTime(timezone=False), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=False), nullable=False),
    )


def _upsert(conn: sa.Connection, table: sa.Table, keys: list[str], rows: list[dict]) -> None:
    if not rows:
        return
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # pragma: no cover - the two supported backends
        raise NotImplementedError(f"the online store supports SQLite and PostgreSQL, not {name}")
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
    )
    conn.execute(stmt, rows)


def _naive_utc(value: dt.datetime) -> dt.datetime:
    return to_utc(value).replace(tzinfo=None)


def write_snapshot(
    engine: sa.Engine,
    spec: FeatureSpec,
    snapshot: pl.DataFrame,
    as_of: dt.datetime,
    batch_rows: int = 10_000,
) -> dict[str, Any]:
    """Upsert a snapshot (from :func:`~ml_assets.features.compute.aggregate_snapshot`).

    One transaction: the rows (in batches of ``batch_rows`` statements' worth) and the
    registry row, so readers see the old snapshot or the new one, never a mix. A table whose
    columns no longer match the features is rebuilt. Returns rows written and the table name.
    """
    columns = store_columns(spec)
    metadata = sa.MetaData()
    table = _features_table(spec.dataset, columns, metadata)
    meta = _meta_table(metadata)
    now = _naive_utc(dt.datetime.now(dt.UTC))
    stamp = _naive_utc(as_of)
    frame = snapshot.select("group_column", "group_value", *[c["name"] for c in columns])
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        if inspector.has_table(table.name):
            have = {c["name"] for c in inspector.get_columns(table.name)}
            if have != {c.name for c in table.columns}:
                table.drop(conn)
        metadata.create_all(conn)
        for start in range(0, frame.height, batch_rows):
            rows = frame.slice(start, batch_rows).to_dicts()
            for r in rows:
                r["as_of"] = stamp
                r["updated_at"] = now
            _upsert(conn, table, ["group_column", "group_value"], rows)
        _upsert(
            conn,
            meta,
            ["dataset"],
            [
                {
                    "dataset": spec.dataset,
                    "table_name": table.name,
                    "features": json.dumps(columns),
                    "as_of": stamp,
                    "updated_at": now,
                }
            ],
        )
    if engine.dialect.name == "postgresql":
        # Fresh statistics, or the planner may scan the whole group column for a lookup.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"ANALYZE {_quote(table.name)}")
    return {"rows": frame.height, "table": table.name}


def known_groups(engine: sa.Engine, dataset: str) -> dict[str, list[str]]:
    """Group values already in a dataset's store table, by group column."""
    name = table_name(dataset)
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(name):
            return {}
        t = sa.table(name, sa.column("group_column"), sa.column("group_value"))
        out: dict[str, list[str]] = {}
        for g, v in conn.execute(sa.select(t.c.group_column, t.c.group_value)):
            out.setdefault(g, []).append(v)
        return out


def read_table(engine: sa.Engine, dataset: str) -> pl.DataFrame:
    """A dataset's whole store table (for checks and tests), sorted by key."""
    with engine.connect() as conn:
        t = sa.Table(table_name(dataset), sa.MetaData(), autoload_with=conn)
        rows = conn.execute(sa.select(t).order_by(t.c.group_column, t.c.group_value)).all()
        return pl.DataFrame([dict(r._mapping) for r in rows], infer_schema_length=None)


# --- the client ------------------------------------------------------------------------------


class OnlineLookup(Protocol):
    """What the online path needs from a store: aggregates for a batch of group keys."""

    def get(self, dataset: str, keys: Sequence[Any]) -> pl.DataFrame: ...


class _View:
    """A dataset's registry entry, compiled for lookups."""

    def __init__(self, dataset: str, table: str, features: list[dict[str, Any]]) -> None:
        self.dataset = dataset
        self.table = table
        self.features = features
        self.names = [f["name"] for f in features]
        self.groups = list(dict.fromkeys(f["group_by"] for f in features))
        self.by_group = {
            g: [i for i, f in enumerate(features) if f["group_by"] == g] for g in self.groups
        }
        self.schema = {f["name"]: _DTYPES[f["dtype"]] for f in features}
        self.sql: dict[tuple[int, ...], str] = {}


def _key_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class OnlineClient:
    """Reads a dataset's aggregates for a batch of group keys in one query.

    Keeps one DBAPI connection (autocommit, so every read sees the latest snapshot) and the SQL
    text per batch shape, which SQLite's statement cache and psycopg's prepared statements
    reuse. Thread-safe (one lock around the connection). No Dagster, no contract needed: the
    store's registry says what each dataset has.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        self._conn: Any = None
        self._lock = threading.Lock()
        self._views: dict[str, _View] = {}
        self._qmark = self.engine.dialect.paramstyle == "qmark"
        self._prepare = self.engine.dialect.name == "postgresql"
        dbapi = self.engine.dialect.loaded_dbapi
        self._dbapi_errors: tuple[type[Exception], ...] = (
            dbapi.OperationalError,
            dbapi.InterfaceError,
            dbapi.ProgrammingError,
        )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self.engine.dispose()

    def __enter__(self) -> OnlineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> None:
        """Forget the cached registry (after a store's features changed)."""
        self._views.clear()

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.engine.raw_connection()
        return self._conn

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        with self._lock:
            cur = self._connection().cursor()
            try:
                if self._prepare:
                    cur.execute(sql, params, prepare=True)
                else:
                    cur.execute(sql, params)
                return cur.fetchall()
            finally:
                cur.close()

    def _reset(self) -> None:
        """Drop the connection and the cached registry (after a failed query)."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.invalidate()
                except Exception:  # a broken connection may fail to close too
                    log.debug("closing a broken online-store connection failed", exc_info=True)
                self._conn = None
        self._views.clear()

    def _view(self, dataset: str) -> _View:
        view = self._views.get(dataset)
        if view is None:
            meta = _meta_table(sa.MetaData())
            stmt = sa.select(meta.c.table_name, meta.c.features).where(meta.c.dataset == dataset)
            with self.engine.connect() as conn:
                if not sa.inspect(conn).has_table(META_TABLE):
                    raise LookupError(f"the online store at {self._safe_url} holds no features yet")
                row = conn.execute(stmt).first()
            if row is None:
                raise LookupError(f"the online store has no features of dataset {dataset!r}")
            view = _View(dataset, row.table_name, json.loads(row.features))
            self._views[dataset] = view
        return view

    @property
    def _safe_url(self) -> str:
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def as_of(self, dataset: str) -> dt.datetime | None:
        """The time the dataset's stored aggregates are as of (UTC), None if never written."""
        meta = _meta_table(sa.MetaData())
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(META_TABLE):
                return None
            value = conn.execute(
                sa.select(meta.c.as_of).where(meta.c.dataset == dataset)
            ).scalar_one_or_none()
        return value.replace(tzinfo=dt.UTC) if value is not None else None

    def features(self, dataset: str) -> list[str]:
        """The aggregate features the store holds for a dataset."""
        return list(self._view(dataset).names)

    def get_dicts(self, dataset: str, keys: Sequence[Any]) -> list[dict[str, Any]]:
        """One dict of aggregates per key, in order (see :meth:`get`)."""
        view = self._view(dataset)
        wanted = self._normalize(view, keys)
        try:
            found = self._fetch(view, wanted)
        except self._dbapi_errors:
            # A dropped connection or a store rebuilt with other features: reconnect, re-read
            # the registry and try once more.
            log.warning("online store query failed; reconnecting", exc_info=True)
            self._reset()
            view = self._view(dataset)
            found = self._fetch(view, self._normalize(view, keys))
        out = []
        for key in wanted:
            row: dict[str, Any] = {}
            for g in view.groups:
                value = key.get(g)
                hit = found.get((g, value)) if value is not None else None
                for i in view.by_group[g]:
                    f = view.features[i]
                    if value is None:
                        row[f["name"]] = None
                    elif hit is None:
                        row[f["name"]] = f["default"]
                    else:
                        row[f["name"]] = hit[i]
            out.append(row)
        return out

    def get(self, dataset: str, keys: Sequence[Any]) -> pl.DataFrame:
        """Aggregates for a batch of keys, one row per key in order, in ONE query.

        ``keys`` are values of the dataset's group column (when it has exactly one), or
        mappings from group column to value (a request record will do). A group the store has
        never seen gets count and sum 0 and null otherwise; a null group value gets nulls.
        """
        rows = self.get_dicts(dataset, keys)
        view = self._view(dataset)  # after the lookup: it may have re-read the registry
        frame = pl.DataFrame(
            {n: [r[n] for r in rows] for n in view.names},
            schema={n: (pl.Int64 if t == pl.Boolean else t) for n, t in view.schema.items()},
        )
        bools = [n for n, t in view.schema.items() if t == pl.Boolean]
        return frame.with_columns(pl.col(b).cast(pl.Boolean) for b in bools) if bools else frame

    def _normalize(self, view: _View, keys: Sequence[Any]) -> list[dict[str, str | None]]:
        out = []
        for key in keys:
            if isinstance(key, Mapping):
                out.append({g: _key_text(key.get(g)) for g in view.groups})
            elif len(view.groups) == 1:
                out.append({view.groups[0]: _key_text(key)})
            else:
                raise ValueError(
                    f"{view.dataset} aggregates group by {view.groups}: pass keys as mappings"
                )
        return out

    def _fetch(self, view: _View, wanted: list[dict[str, str | None]]) -> dict[tuple, tuple]:
        per_group: dict[str, dict[str, None]] = {g: {} for g in view.groups}  # ordered sets
        for key in wanted:
            for g in view.groups:
                v = key.get(g)
                if v is not None:
                    per_group[g][v] = None
        # PostgreSQL: one array parameter per group column, so every batch size shares one
        # prepared statement. SQLite: one placeholder per value (its statement cache keys on
        # the SQL text, one entry per batch shape).
        shape = tuple(
            (bool(per_group[g]) if self._prepare else len(per_group[g])) for g in view.groups
        )
        if not any(shape):
            return {}
        sql = view.sql.get(shape)
        if sql is None:
            mark = "?" if self._qmark else "%s"
            # Qualified names: SQLite reads an unknown bare "name" as a string literal, which
            # would hide a table rebuilt with other features instead of failing the query.
            t = _quote(view.table)
            cols = ", ".join(
                f"{t}.{_quote(c)}" for c in ["group_column", "group_value", *view.names]
            )
            values = (
                (lambda n: f"= ANY({mark})")
                if self._prepare
                else (lambda n: f"IN ({', '.join([mark] * n)})")
            )
            where = " OR ".join(
                f"(group_column = {mark} AND group_value {values(n)})" for n in shape if n
            )
            sql = f"SELECT {cols} FROM {t} WHERE {where}"
            view.sql[shape] = sql
        params: list[Any] = []
        for g in view.groups:
            if per_group[g]:
                params += [g, list(per_group[g])] if self._prepare else [g, *per_group[g]]
        return {(r[0], r[1]): r[2:] for r in self._execute(sql, params)}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- the online path -------------------------------------------------------------------------


def request_frame(
    spec: FeatureSpec,
    records: Sequence[Mapping[str, Any]] | pl.DataFrame,
    request_time: dt.datetime | None = None,
) -> pl.DataFrame:
    """Request records typed like validated entity rows, the event time set to the request time.

    The request time is ``request_time`` when given, else each record's event-time field, else
    now. Columns the features need must be present; key columns are kept when given.
    """
    frame = (
        records
        if isinstance(records, pl.DataFrame)
        else pl.DataFrame(list(records), infer_schema_length=None)
    )
    ent = spec.contract.entity
    need = spec.request_inputs()
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise ValueError(f"{spec.dataset}: request records lack {missing} that features need")
    cols: list[pl.Expr] = []
    for c in [*spec.key, *need]:
        if c not in frame.columns or c == spec.event_time:
            continue
        cols.append(_typed(frame, c, COLUMN_DTYPES[ent.columns[c].type]))
    if request_time is not None:
        when = pl.lit(to_utc(request_time), COLUMN_DTYPES[ent.columns[spec.event_time].type])
    elif spec.event_time in frame.columns:
        when = _typed(frame, spec.event_time, pl.Datetime("us", "UTC"))
    else:
        when = pl.lit(dt.datetime.now(dt.UTC), pl.Datetime("us", "UTC"))
    return frame.select(*cols, when.alias(spec.event_time))


def _typed(frame: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Expr:
    col, have = pl.col(name), frame.schema[name]
    if isinstance(dtype, pl.Datetime):
        if have == pl.String:
            col = col.str.to_datetime(time_unit="us", time_zone="UTC")
        elif isinstance(have, pl.Datetime) and have.time_zone is None:
            col = col.dt.replace_time_zone("UTC")
        elif isinstance(have, pl.Datetime):
            col = col.dt.convert_time_zone("UTC")
        return col.dt.cast_time_unit("us").alias(name)
    if have == pl.Null:
        return pl.lit(None, dtype).alias(name)
    return col.cast(dtype, strict=True).alias(name)


def lookup_aggregates(spec: FeatureSpec, frame: pl.DataFrame, store: OnlineLookup) -> pl.DataFrame:
    """The aggregates of each request row from the store, one query for the batch."""
    groups = spec.group_columns
    keys = frame.select([group_text(frame.get_column(g)).alias(g) for g in groups]).to_dicts()
    got = store.get(spec.dataset, keys)
    dtypes = spec.dtypes()
    return got.select([pl.col(a.name).cast(dtypes[a.name]) for a in spec.aggregates])


def online_features(
    spec: FeatureSpec,
    records: Sequence[Mapping[str, Any]] | pl.DataFrame,
    store: OnlineLookup | None,
    request_time: dt.datetime | None = None,
) -> pl.DataFrame:
    """Features of a batch of serving requests: what the model sees online.

    The same row transforms as offline (:func:`~ml_assets.features.compute.transform_rows`) on
    the records typed like validated rows with the event time set to the request time, the
    aggregates from the online store (as of its last snapshot), and the request-time features.
    Returns key columns (when the records carry them), the event (request) time and every
    feature in the order of the offline feature table.
    """
    frame = request_frame(spec, records, request_time)
    parts = [frame.select([k for k in spec.key if k in frame.columns] + [spec.event_time])]
    parts.append(transform_rows(spec, frame))
    if spec.aggregates:
        if store is None:
            raise ValueError(f"{spec.dataset} has aggregate features: an online store is needed")
        parts.append(lookup_aggregates(spec, frame, store))
    out = pl.concat(parts, how="horizontal")
    return out.select([c for c in out.columns if c not in spec.names] + spec.names)


__all__ = [
    "OnlineClient",
    "OnlineLookup",
    "known_groups",
    "lookup_aggregates",
    "online_features",
    "read_table",
    "request_frame",
    "store_columns",
    "table_name",
    "write_snapshot",
]
