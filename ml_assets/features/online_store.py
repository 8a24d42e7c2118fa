"""The online store's table layout and its writer: the tables the online client reads.

The store is one SQL table per dataset (``online_<dataset>``), keyed by (group column, group
value as text), holding the latest value of every group-keyed aggregate with its ``as_of`` time,
plus a small registry table (``ml_assets_online_meta``) saying which features a dataset has,
their types and defaults, and the dataset's ``as_of``. :func:`write_snapshot` upserts a
snapshot (``INSERT ... ON CONFLICT DO UPDATE``, SQLite and PostgreSQL) in one transaction.

The write side (run by the Dagster asset) apart from the read side (run by the service): the
two share only the table layout, defined here. No Dagster here.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import polars as pl
import sqlalchemy as sa

from ml_assets.features.spec import Agg, FeatureSpec
from ml_assets.features.windows import to_utc

META_TABLE = "ml_assets_online_meta"
_SQL: dict[str, Any] = {
    "Int64": sa.BigInteger,
    "Float64": lambda: sa.Float(precision=53),
    "Boolean": sa.Boolean,
    "String": sa.Text,
}


def table_name(dataset: str) -> str:
    return f"online_{dataset}"


def meta_table(metadata: sa.MetaData) -> sa.Table:
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
    meta = meta_table(metadata)
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
            conn.exec_driver_sql(f"ANALYZE {quote_name(table.name)}")
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


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
