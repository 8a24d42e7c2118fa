"""Shared fixtures: real databases only."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
POSTGRES_FIXTURES = frozenset({"pg_url", "fresh_pg_url"})
UI_TESTS = Path(__file__).parent / "ui"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``postgres`` every test that uses a PostgreSQL fixture (directly or through another
    fixture), and ``ui`` every test under ``ui/``, so new tests are marked without thinking.

    A fixture that asks for ``pg_url`` at run time (``request.getfixturevalue``) is invisible
    here: mark its parameter instead (``pytest.param(..., marks=pytest.mark.postgres)``).
    """
    for item in items:
        if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
        if UI_TESTS in item.path.parents:
            item.add_marker(pytest.mark.ui)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test session, dropped at the end.

    The server is ``ML_ASSETS_TEST_PG_URL`` (default: local ``test`` database, trust auth).
    An unreachable server fails the tests that need it: it is never skipped.
    """
    admin_url = sa.make_url(os.environ.get("ML_ASSETS_TEST_PG_URL", DEFAULT_PG_URL))
    name = f"mlassets_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        raise RuntimeError(
            f"PostgreSQL at {admin_url.render_as_string(hide_password=True)} is unreachable; "
            "start it or set ML_ASSETS_TEST_PG_URL"
        ) from exc
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def contracts():
    from ml_assets.contracts import load_contracts

    return load_contracts()


@pytest.fixture(scope="session")
def car_loan_sqlite(tmp_path_factory: pytest.TempPathFactory, contracts) -> str:
    """A SQLite source seeded once with the car-loan demo tables. Tests must not write to it."""
    from ml_assets.ingest.demo import seed_demo

    path = tmp_path_factory.mktemp("car_loan_source") / "source.sqlite"
    url = f"sqlite:///{path}"
    seed_demo(url, contracts["car_loan"])
    return url


@pytest.fixture
def fresh_pg_url(pg_url: str) -> Iterator[str]:
    """A database of its own, for a tool that keeps its own schema migrations (Dagster's and
    MLflow's both use an ``alembic_version`` table, so they cannot share one database)."""
    url = sa.make_url(pg_url)
    name = f"{url.database}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
