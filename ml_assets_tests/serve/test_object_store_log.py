"""The BUILT Bento served by ``bentoml serve`` with its prediction log on an object store (moto's
S3 server, the production profile's stand-in) reached through a link the test can cut, as a
serving host reaches the shared store: the rows a real server answers land in the store and the
monitoring reader (``read_served``, on the store directly) returns them; the store cut off gives
503 and ``/readyz`` 503 with every answered row kept, and recovery by itself; a corrupt object is
reported as unreadable, not dropped; a graceful stop leaves nothing unwritten."""

from __future__ import annotations

import datetime as dt
import signal
import uuid
from pathlib import Path

import httpx
import pytest

from ml_assets.serve.prediction_log import HOST, read_served
from ml_assets.testing import Cuttable, MotoServer
from ml_assets_tests.serve import support

pytestmark = [pytest.mark.xdist_group("serve"), pytest.mark.serve]


def test_a_served_bento_logs_to_the_object_store_through_an_outage_without_losing_a_row(
    built, champion, moto: MotoServer, tmp_path: Path
) -> None:
    link = Cuttable(("127.0.0.1", moto.port))
    prefix = f"served-{uuid.uuid4().hex[:8]}"
    env = support.serve_env(
        tmp_path / "home",
        support.server_home(built.bentoml_home, tmp_path / "bentoml"),
        ML_ASSETS_PREDICTION_LOG=f"s3://{moto.bucket}/{prefix}",
        ML_ASSETS_PREDICTION_LOG_FLUSH_SECONDS="0.3",
        **moto.env(f"http://127.0.0.1:{link.port}"),
    )
    store = moto.path(prefix)  # monitoring's view: the store itself, not the server's link
    records = support.feature_records(champion.holdout.head(3), champion.problem.features)
    answered: dict[str, int] = {}
    unreadable: list = []

    def logged() -> dict[str, int]:
        now = dt.datetime.now(dt.UTC)
        day = dt.timedelta(days=1)
        served = read_served("car_loan", now - day, now + day, "timestamp", store)
        unreadable[:] = served.unreadable
        return {rid: n for rid, n in served.rows.group_by("request_id").len().iter_rows()}

    server = support.start_server(built.bento_tag, env, tmp_path / "server.log", workers=1)
    try:
        server.wait_ready()
        (worker,) = support.worker_pids(server)
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:

            def predict() -> httpx.Response:
                resp = http.post("/v1/predict", json={"records": records})
                if resp.status_code == 200:
                    answered[resp.json()["request_id"]] = len(records)
                return resp

            for _ in range(5):
                assert predict().status_code == 200
            support.wait_until(lambda: logged() == answered, 60, what="rows in the store")
            names = [p.name for day in (store / "car_loan").iterdir() for p in day.iterdir()]
            assert names and all(f"-{HOST}-{worker}-" in n for n in names), names

            # the store unreachable: answered until the write fails, then refused and unready
            link.cut()
            refused = support.wait_until(
                lambda: (r := predict()).status_code != 200 and r, 180, what="a refusal"
            )
            assert refused.status_code == 503, refused.text
            assert "prediction log cannot be written" in refused.json()["error"]["message"]
            assert http.get("/readyz").status_code == 503
            assert predict().status_code == 503

            # back: the backlog written, ready again by itself, every answered row there once
            link.restore()
            support.wait_until(lambda: http.get("/readyz").status_code == 200, 120, what="ready")
            support.wait_until(lambda: logged() == answered, 60, what="the backlog in the store")
            assert predict().status_code == 200
            support.wait_until(lambda: logged() == answered, 60, what="new rows in the store")

        # a corrupt object among the segments: reported, the others still read
        today = dt.datetime.now(dt.UTC).date().isoformat()
        junk = store / "car_loan" / f"date={today}" / "part-0-elsewhere-1-000001.parquet"
        junk.write_bytes(b"not parquet")
        assert logged() == answered
        assert [p.name for p, _ in unreadable] == [junk.name]

        assert server.stop(signal.SIGTERM) == 0, server.output()[-3000:]
        assert "NOT written" not in server.output()
        assert logged() == answered
    finally:
        server.stop(signal.SIGKILL)
        link.close()
