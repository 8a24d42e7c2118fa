"""Graceful shutdown loses no prediction: SIGTERM (or SIGINT) while HTTP and gRPC clients are sending, then
every 2xx/OK response is in the prediction log, and nothing else is.

This server runs the service SOURCE file (``bentoml serve service:PredictionService`` in
``bentos/``) with the champion from the BentoML model store; the other tests serve the built
Bento.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
from pathlib import Path

import grpc
import httpx
import polars as pl
import pytest

from ml_assets.serve import predictor_pb2 as pb
from ml_assets.serve import predictor_pb2_grpc as pb_grpc
from ml_assets.serve import read_prediction_log
from ml_assets_tests.serve import support

pytestmark = [pytest.mark.xdist_group("serve"), pytest.mark.serve]


class Tally:
    """Request ids and row counts of the successful responses, from every client thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok: dict[str, int] = {}
        self.failed = 0

    def success(self, request_id: str, rows: int) -> None:
        with self.lock:
            self.ok[request_id] = rows

    def failure(self) -> None:
        with self.lock:
            self.failed += 1


def http_client(url: str, records: list, stop: threading.Event, tally: Tally, tag: str) -> None:
    i = 0
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        while not stop.is_set():
            i += 1
            batch = records[: 1 + i % 7]
            try:
                resp = client.post(
                    "/v1/predict", json={"records": batch}, headers={"x-request-id": f"{tag}-{i}"}
                )
            except httpx.HTTPError:
                tally.failure()
                stop.wait(0.01)  # pacing: do not spin on a refusing server; wakes on stop
                continue
            if resp.status_code == 200:
                tally.success(resp.json()["request_id"], len(batch))
            else:
                tally.failure()


def grpc_client(target: str, records: list, stop: threading.Event, tally: Tally, tag: str) -> None:
    i = 0
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.PredictorStub(channel)
        while not stop.is_set():
            i += 1
            batch = records[: 1 + i % 5]
            try:
                resp = stub.Predict(
                    pb.PredictRequest(records=support.proto_records(batch)),
                    metadata=(("x-request-id", f"{tag}-{i}"),),
                    timeout=30,
                )
            except grpc.RpcError:
                tally.failure()
                stop.wait(0.01)  # pacing: do not spin on a refusing server; wakes on stop
                continue
            tally.success(resp.request_id, len(resp.predictions))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_shutdown_under_load_logs_every_answered_prediction(
    sig: signal.Signals, built, champion, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = support.serve_env(
        home,
        support.server_home(built.bentoml_home, tmp_path / "bentoml"),
        ML_ASSETS_SERVE_DATASET="car_loan",
        ML_ASSETS_SERVE_MODEL=built.model_tag,
        ML_ASSETS_PREDICTION_LOG_FLUSH_SECONDS="5",  # most rows still queued at SIGTERM
    )
    server = support.start_server(
        "service:PredictionService", env, tmp_path / "server.log", cwd=support.BENTOS, workers=2
    )
    try:
        server.wait_ready()
        info = httpx.get(f"{server.url}/v1/model", trust_env=False).json()
        assert info["bentoml_model"] == built.model_tag
        records = support.feature_records(champion.holdout.head(10), champion.problem.features)
        stop = threading.Event()
        tally = Tally()
        threads = [
            threading.Thread(target=http_client, args=(server.url, records, stop, tally, f"h{k}"))
            for k in range(3)
        ] + [
            threading.Thread(
                target=grpc_client, args=(server.grpc_target, records, stop, tally, f"g{k}")
            )
            for k in range(2)
        ]
        for t in threads:
            t.start()
        # signal once the clients are well under way (not after a fixed time): with the writer
        # flushing every 5 s, most of these rows are still queued when the signal arrives
        try:
            support.wait_until(lambda: len(tally.ok) > 50, 60, what=lambda: server.output()[-2000:])
        except TimeoutError:
            stop.set()  # let the client threads end before the test fails
            raise
        served_before = len(tally.ok)
        code = server.stop(sig)  # clients keep sending while it shuts down
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        server.stop(signal.SIGKILL)
    assert served_before > 20, server.output()[-2000:]
    assert code == 0, server.output()[-3000:]
    now = dt.datetime.now(dt.UTC)
    logged = read_prediction_log(
        "car_loan",
        now - dt.timedelta(days=1),
        now + dt.timedelta(days=1),
        root=home / "prediction_log",
    )
    per_request = logged.group_by("request_id").agg(pl.len().alias("rows"))
    assert dict(per_request.iter_rows()) == tally.ok
    assert logged.height == sum(tally.ok.values())
    assert set(logged["protocol"].unique()) == {"http", "grpc"}
    assert "Completed cleanup hook: shutdown" in server.output()
