"""The online store's client: a dataset's aggregates for a batch of group keys, in one query.

:class:`OnlineClient` is what the inference service holds: one reused connection, the SQL text
per batch shape, and the store's registry (which features a dataset has, their types and
defaults) read once and re-read after a failed query. It needs no contract and no Dagster: the
registry written by :func:`~ml_assets.features.online_store.write_snapshot` says it all.
:class:`OnlineLookup` is the one method the online feature path needs from a store.
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

from ml_assets.features.online_store import META_TABLE, meta_table, quote_name

log = logging.getLogger(__name__)

_DTYPES: dict[str, pl.DataType] = {
    "Int64": pl.Int64(),
    "Float64": pl.Float64(),
    "Boolean": pl.Boolean(),
    "String": pl.String(),
}


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
            meta = meta_table(sa.MetaData())
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
        meta = meta_table(sa.MetaData())
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
            t = quote_name(view.table)
            cols = ", ".join(
                f"{t}.{quote_name(c)}" for c in ["group_column", "group_value", *view.names]
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
