"""Shared fixtures: real databases only."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from ml_assets_tests.demo_home import DEMO_TIMEOUT

if TYPE_CHECKING:
    from ml_assets.testing import MotoServer
    from ml_assets_tests.demo_home import Demo

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
POSTGRES_FIXTURES = frozenset({"pg_url", "fresh_pg_url"})
UI_TESTS = Path(__file__).parent / "ui"
DEMO_FIXTURE = "car_loan_demo"
DEMO_GROUP = "demo"
TEST_TIMEOUT = 900
"""pyproject.toml's pytest-timeout, per test (setup, call and teardown)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``postgres`` every test that uses a PostgreSQL fixture (directly or through another
    fixture), and ``ui`` every test under ``ui/``, so new tests are marked without thinking.

    A fixture that asks for ``pg_url`` at run time (``request.getfixturevalue``) is invisible
    here: mark its parameter instead (``pytest.param(..., marks=pytest.mark.postgres)``).

    A test using ``car_loan_demo`` without ``pytest.mark.xdist_group("demo")`` is an error:
    under ``--dist loadgroup`` it could land on the other worker and run the 7-minute demo a
    second time (the mark is written, not added here, because xdist reads it in a hook of its
    own whose order relative to this one is not promised). Each such test gets the demo's time
    on top of its own timeout: whichever runs first builds the demo in its setup.
    """
    unmarked = []
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if POSTGRES_FIXTURES & names:
            item.add_marker(pytest.mark.postgres)
        if UI_TESTS in item.path.parents:
            item.add_marker(pytest.mark.ui)
        groups = {m.args[0] if m.args else None for m in item.iter_markers("xdist_group")}
        if DEMO_FIXTURE in names:
            if DEMO_GROUP not in groups:
                unmarked.append(item.nodeid)
            # pytest-timeout counts fixture setup: the test that builds the shared demo runs
            # the demo first (its own subprocess timeout, DEMO_TIMEOUT), then itself
            item.add_marker(pytest.mark.timeout(DEMO_TIMEOUT + TEST_TIMEOUT))
    if unmarked:
        raise pytest.UsageError(
            f"these tests use {DEMO_FIXTURE} but are not marked "
            f'pytest.mark.xdist_group("{DEMO_GROUP}"): {", ".join(unmarked)}'
        )


class _GroupSuffix:
    """Make ``--dist loadgroup`` group again under pytest 9.2 (pytest-xdist#1386).

    xdist tells its scheduler a test's group by appending ``@<group>`` to the test's node id in
    the worker's collection hook, through the attribute ``_nodeid``; since pytest 9.2 the node
    id is derived from a structured ``_id`` and that write is lost, so every group is silently
    spread over the workers (measured: the four tests of one group ran on both workers, and
    the session's demo was built twice). This runs after xdist's hook and, only where the
    suffix is missing, writes it the way pytest 9.2 keeps it. A fixed xdist (PR #1388) leaves
    nothing for it to do.
    """

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        if not getattr(config.option, "loadgroup", False):  # set in xdist workers only
            return
        from _pytest.nodeid import NodeId

        for item in items:
            names = {
                str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                for m in item.iter_markers("xdist_group")
            }
            if not names or "@" in item.nodeid.rsplit("]", 1)[-1]:
                continue
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(sorted(names))}")  # type: ignore[attr-defined]
        strays = [
            i.nodeid
            for i in items
            if DEMO_FIXTURE in getattr(i, "fixturenames", ()) and "@" not in i.nodeid
        ]
        if strays:  # the demo would run once per worker: say so instead of paying for it
            raise pytest.UsageError(f"loadgroup did not group {', '.join(strays)}")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_GroupSuffix(), "ml_assets_group_suffix")


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


@pytest.fixture(scope="session")
def car_loan_demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """``ml-assets demo car_loan`` (the full replay), run once per session and shared by every
    test that reads its output or its home (``ml_assets_tests.demo_home``). Tests may add runs
    to its Dagster instance but must not re-run the pipeline or training in its home.

    ``ML_ASSETS_TEST_DEMO_HOME=DIR`` keeps the demo in ``DIR`` and reuses it in later sessions
    (for iterating on these tests locally; CI leaves it unset and runs the demo every time)."""
    from ml_assets_tests.demo_home import run_demo

    kept = os.environ.get("ML_ASSETS_TEST_DEMO_HOME")
    if kept:
        return run_demo(Path(kept).resolve(), reuse=True)
    return run_demo(tmp_path_factory.mktemp("car_loan_demo"))


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's S3 server on a loopback port with a bucket of its own (the production profile's
    object-store stand-in), for the session; tests use prefixes of their own in the bucket."""
    from ml_assets.testing import start_moto

    folder = tmp_path_factory.mktemp("moto")
    server = start_moto(f"mla-test-{uuid.uuid4().hex[:8]}", folder / "moto.log")
    try:
        yield server
    finally:
        server.stop()


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
