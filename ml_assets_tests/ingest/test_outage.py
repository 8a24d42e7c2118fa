"""A source database that is down when ingestion starts: the raw assets wait it out (retries
with doubling waits while the database does not answer) instead of failing the run, and an
error that is not an outage (a missing table) fails at once, without a retry.

The outage is real: PostgreSQL is reached through a TCP relay on loopback that is not listening
for the first seconds of the run (connections refused), then relays every byte.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import dagster as dg
import pytest
import sqlalchemy as sa

from ml_assets.dataset import Dataset
from ml_assets.ingest.assets import SqlSource
from ml_assets.storage import LAKE_IO, Lake, LakeIOManager
from ml_assets_tests import census
from ml_assets_tests.pipeline import ingest_assets, range_tags

pytestmark = pytest.mark.slow


class Relay:
    """Loopback TCP relay to ``target``; refuses connections until :meth:`open` is called."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server: socket.socket | None = None
        self._stop = threading.Event()

    def open(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        server.settimeout(0.2)
        self._server = server
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()


def _ingest(url: str, tmp_path, contract) -> tuple[dg.ExecuteInProcessResult, list[str]]:
    """Raw and validated entity over every partition as one run; the run and the retry
    warnings in its log."""
    lake = Lake(base_path=str(tmp_path / "lake"))
    resources = {
        "lake": lake,
        LAKE_IO: LakeIOManager(lake=lake),
        "source": SqlSource(url=url, outage_backoff_seconds=0.5),
    }
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        ingest_assets(contract, ("entity",)),
        resources=resources,
        tags=range_tags("2015-01-01", "2024-01-01"),
        raise_on_error=False,
        instance=instance,
    )
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    return result, [m for m in messages if "the source is down" in m]


def test_an_outage_at_the_start_is_waited_out(fresh_pg_url: str, tmp_path) -> None:
    census.seed(fresh_pg_url)
    url = sa.make_url(fresh_pg_url)
    relay = Relay((url.host or "127.0.0.1", url.port or 5432))
    timer = threading.Timer(2.0, relay.open)  # down for the first two seconds
    timer.start()
    try:
        through = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        result, down = _ingest(through, tmp_path, census.contract())
    finally:
        timer.cancel()
        relay.close()
    assert result.success
    lake = Lake(base_path=str(tmp_path / "lake"))
    raw = dg.AssetKey(["census", "raw_entity"])
    keys: list[str] = Dataset.build(census.contract()).partitions.keys()
    rows = sum(lake.scan(raw, [k]).collect().height for k in keys)
    assert rows == census.PEOPLE * len(census.YEARS)  # every partition, once
    assert down, "no retry was logged"
    assert "census_people 2015-01-01: the source is down" in down[0] and "retry 1 of 4" in down[0]


def test_an_error_that_is_not_an_outage_fails_at_once(fresh_pg_url: str, tmp_path) -> None:
    census.seed(fresh_pg_url)
    missing = census.CONTRACT.replace("table: census_people", "table: census_nobody")
    from ml_assets.contracts import parse_contract

    result, down = _ingest(fresh_pg_url, tmp_path, parse_contract(missing, "census.yaml"))
    assert not result.success
    assert down == []  # the database answers: a missing table is not waited for


def test_a_range_run_that_fails_part_way_changes_no_partition(fresh_pg_url: str, tmp_path) -> None:
    """A run over ten yearly partitions whose read fails at the sixth (PostgreSQL raises
    "division by zero" only for the 2020 rows of this query) leaves the five partitions it had
    already read as they were: the lake still agrees with the catalog, which records no
    materialization for a failed run. No temporary file is left."""
    from ml_assets.contracts import parse_contract

    census.seed(fresh_pg_url)
    first, _ = _ingest(fresh_pg_url, tmp_path, census.contract())
    assert first.success
    lake = Lake(base_path=str(tmp_path / "lake"))
    raw = dg.AssetKey(["census", "raw_entity"])
    keys: list[str] = Dataset.build(census.contract()).partitions.keys()
    before = {k: lake.path(raw, k).read_bytes() for k in keys}
    query = '"SELECT *, 1 / (year - 2020) AS boom FROM census_people"'
    boom = census.CONTRACT.replace("  table: census_people\n", f"  query: {query}\n")
    failed, _ = _ingest(fresh_pg_url, tmp_path, parse_contract(boom, "census.yaml"))
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.is_step_failure]
    assert "division by zero" in str(failure.step_failure_data.error)
    assert {k: lake.path(raw, k).read_bytes() for k in keys} == before
    folder = tmp_path / "lake" / "census" / "raw_entity"
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
