"""Faults and exposure of the BUILT Bento served by ``bentoml serve`` (issue 11, "Faults" and
"Offline and exposure by default"): where it listens when told nothing, the bearer token, a
prediction log on a disk that fills up (a real tmpfs), a worker and the supervisor killed with
SIGKILL (real signals, pids from the process tree)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psutil
import pytest

from ml_assets.serve import predictor_pb2 as pb
from ml_assets.serve import predictor_pb2_grpc as pb_grpc
from ml_assets.serve import read_prediction_log
from ml_assets.serve.supervision import EXIT_UNWRITTEN
from ml_assets_tests.serve import support

pytestmark = [pytest.mark.xdist_group("serve"), pytest.mark.serve]

TOKEN = "s3cret-serving-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
FLUSH_SECONDS = "0.3"


def needs_root() -> None:
    if os.geteuid() != 0:  # pragma: no cover - the test machines run as root
        pytest.fail("mounting a tmpfs for the full-disk case needs root")


def logged(root: Path) -> dict[str, int]:
    """Rows per request id in the prediction log under ``root``."""
    now = dt.datetime.now(dt.UTC)
    frame = read_prediction_log(
        "car_loan", now - dt.timedelta(days=1), now + dt.timedelta(days=1), root=root
    )
    return {rid: n for rid, n in frame.group_by("request_id").len().iter_rows()}


def running(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs (a zombie no container init has reaped yet does not)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


class Guarded:
    """A server started with no bind address, a bearer token and its log on a small tmpfs."""

    def __init__(self, server: support.ServerProcess, disk: Path, log_root: Path) -> None:
        self.server = server
        self.disk = disk
        self.log_root = log_root


@pytest.fixture(scope="module")
def guarded(built, online_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    needs_root()
    base = tmp_path_factory.mktemp("guarded")
    with support.tmpfs(base / "disk", size="1m") as disk:
        log_root = disk / "prediction_log"
        env = support.serve_env(
            base / "home",
            support.server_home(built.bentoml_home, base / "bentoml"),
            ML_ASSETS_ONLINE_URL=online_url,
            ML_ASSETS_PREDICTION_LOG=str(log_root),
            ML_ASSETS_PREDICTION_LOG_FLUSH_SECONDS=FLUSH_SECONDS,
            ML_ASSETS_PREDICTION_LOG_MAX_QUEUED_ROWS="5000",
            ML_ASSETS_SERVE_TOKEN=TOKEN,
        )
        server = support.start_server(built.bento_tag, env, base / "server.log", loopback=False)
        try:
            server.wait_ready()
            yield Guarded(server, disk, log_root)
        finally:
            server.stop(signal.SIGKILL)


def test_http_and_grpc_listen_on_loopback_unless_told_otherwise(guarded: Guarded) -> None:
    """Given no address, HTTP listened on 0.0.0.0 (while BentoML's log said localhost) and
    gRPC on every IPv4 and IPv6 interface."""
    server = guarded.server
    assert support.listening_addresses(server, server.http_port) == {"127.0.0.1"}
    assert support.listening_addresses(server, server.grpc_port) == {"127.0.0.1"}
    out = server.output()
    assert f"http://127.0.0.1:{server.http_port}" in out, out[-3000:]
    assert f"gRPC server listening on 127.0.0.1:{server.grpc_port}" in out


def test_bearer_token_on_the_api_health_and_metrics_open(guarded: Guarded, champion) -> None:
    server = guarded.server
    records = support.feature_records(champion.holdout.head(2), champion.problem.features)
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            for method, path in (("POST", "/v1/predict"), ("GET", "/v1/model")):
                resp = http.request(method, path, json={"records": records}, headers=headers)
                assert resp.status_code == 401, (path, headers, resp.text)
                assert resp.headers["www-authenticate"].startswith("Bearer")
                assert resp.json()["error"]["code"] == "unauthenticated"
        assert http.post("/v1/predict", json={"records": records}, headers=AUTH).status_code == 200
        assert http.get("/v1/model", headers=AUTH).json()["dataset"] == "car_loan"
        for path in ("/livez", "/readyz", "/metrics"):  # probes and scrapes need no token
            assert http.get(path).status_code == 200, path
    request = pb.PredictRequest(records=support.proto_records(records))
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.PredictorStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, metadata=(("authorization", "Bearer nope"),), timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = stub.Predict(request, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=30)
        assert len(ok.predictions) == 2
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=30
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def predict_until_refused(
    http: httpx.Client, records: list, answered: dict[str, int], limit: int = 2000
) -> httpx.Response:
    """Send predictions one after another until one is refused; the answered ones go to
    ``answered`` (request id -> rows)."""
    for _ in range(limit):
        resp = http.post("/v1/predict", json={"records": records}, headers=AUTH)
        if resp.status_code != 200:
            return resp
        answered[resp.json()["request_id"]] = len(records)
    raise AssertionError(f"{limit} predictions answered on a full disk")


def test_full_disk_refuses_with_503_keeps_every_answered_row_and_exits_with_an_error(
    guarded: Guarded, champion
) -> None:
    """On a full disk the server kept answering 200 and /readyz 200, the queue grew without
    bound, each failed write left a 0-byte temp file, and a graceful stop dropped the whole
    backlog with exit status 0. Runs last on this server: it stops it."""
    server, root = guarded.server, guarded.log_root
    records = support.feature_records(champion.holdout.head(5), champion.problem.features)
    answered: dict[str, int] = {}
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
        resp = http.post("/v1/predict", json={"records": records}, headers=AUTH)
        answered[resp.json()["request_id"]] = len(records)
        support.wait_until(lambda: set(answered) <= set(logged(root)), 30, what="first rows")
        answered = logged(root)  # with the earlier tests' rows (written before, in order)

        filler = support.fill(guarded.disk)
        refused = predict_until_refused(http, records, answered)
        assert refused.status_code == 503, refused.text
        assert "prediction log" in refused.text
        assert http.get("/readyz").status_code == 503
        with grpc.insecure_channel(server.grpc_target) as channel:
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.PredictorStub(channel).Predict(
                    pb.PredictRequest(records=support.proto_records(records)),
                    metadata=(("authorization", f"Bearer {TOKEN}"),),
                    timeout=30,
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "prediction log" in (err.value.details() or "")
        assert temp_files(root) == []

        # space again: the backlog is written, readiness and predictions come back by themselves
        filler.unlink()
        support.wait_until(lambda: http.get("/readyz").status_code == 200, 60, what="ready")
        support.wait_until(lambda: logged(root) == answered, 30, what="backlog written")
        resp = http.post("/v1/predict", json={"records": records}, headers=AUTH)
        assert resp.status_code == 200
        answered[resp.json()["request_id"]] = len(records)
        support.wait_until(lambda: logged(root) == answered, 30, what="new rows written")

        # full again, then a graceful stop with answered rows that cannot be written
        support.fill(guarded.disk)
        written = dict(answered)
        refused = predict_until_refused(http, records, answered)
        assert refused.status_code == 503
    backlog = sum(answered.values()) - sum(written.values())
    assert backlog > 0
    code = server.stop(signal.SIGTERM)
    out = server.output()
    assert code == EXIT_UNWRITTEN, out[-3000:]
    assert (
        f"closed with {backlog} answered rows of {len(answered) - len(written)} requests NOT" in out
    )
    assert f"{backlog} answered prediction rows were not written" in out
    assert logged(root) == written
    assert temp_files(root) == []


def test_killed_worker_and_killed_supervisor(built, champion, tmp_path: Path) -> None:
    """A worker killed by SIGKILL loses at most the rows answered in its last flush interval
    (``ML_ASSETS_PREDICTION_LOG_FLUSH_SECONDS``) and is replaced; a supervisor killed by
    SIGKILL used to leave its workers serving on both ports, unsupervised, so a restart failed
    with "Address already in use": now they stop (gracefully: their rows are written) and a
    new server starts on the same ports."""
    home = tmp_path / "home"
    bentoml_home = support.server_home(built.bentoml_home, tmp_path / "bentoml")
    env = support.serve_env(
        home, bentoml_home, ML_ASSETS_PREDICTION_LOG_FLUSH_SECONDS=FLUSH_SECONDS
    )
    root = home / "prediction_log"
    records = support.feature_records(champion.holdout.head(3), champion.problem.features)
    server = support.start_server(built.bento_tag, env, tmp_path / "server.log", workers=2)
    restarted = None
    try:
        server.wait_ready()
        workers = support.worker_pids(server)
        assert len(workers) == 2, workers
        answered: dict[str, int] = {}
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
            for _ in range(40):
                resp = http.post("/v1/predict", json={"records": records})
                answered[resp.json()["request_id"]] = len(records)
            # within the flush interval every answered row is on disk ...
            support.wait_until(lambda: logged(root) == answered, 30, what="rows written")
            killed = psutil.Process(workers[0])
            os.kill(workers[0], signal.SIGKILL)
            killed.wait(30)
            # ... and stays there, readable; the supervisor starts a new worker
            assert logged(root) == answered
            support.wait_until(
                lambda: len(support.worker_pids(server)) == 2, 60, what="worker replaced"
            )
            server.wait_ready()
            for _ in range(20):
                resp = http.post("/v1/predict", json={"records": records})
                assert resp.status_code == 200
                answered[resp.json()["request_id"]] = len(records)
        workers = support.worker_pids(server)
        assert len(workers) == 2, workers
        procs = [psutil.Process(pid) for pid in workers]
        server.proc.send_signal(signal.SIGKILL)  # the supervisor only
        server.proc.wait(30)
        support.wait_until(
            lambda: not any(running(p) for p in procs),
            60,
            what=lambda: f"orphaned workers {[p.pid for p in procs if running(p)]} still run",
        )
        # the orphaned workers stopped gracefully: every answered row was written
        assert logged(root) == answered
        restarted = support.start_server(
            built.bento_tag,
            env,
            tmp_path / "restarted.log",
            http_port=server.http_port,
            grpc_port=server.grpc_port,
            workers=2,
        )
        restarted.wait_ready()
        assert "Address already in use" not in restarted.output()
    finally:
        for proc in (server, restarted):
            if proc is not None:
                proc.stop(signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):  # orphans of a failed run
                    os.killpg(proc.proc.pid, signal.SIGKILL)


def test_a_changed_model_file_refuses_to_start(built, champion, tmp_path: Path) -> None:
    """The champion's model file was served unverified: now its sha256 is recorded with the
    registered version, carried by the Bento and checked at start."""
    import json
    import shutil

    name, version = built.bento_tag.split(":")
    config = json.loads(
        (built.bentoml_home / "bentos" / name / version / "src" / "bento_config.json").read_text()
    )
    recorded = champion.tracking.version_tags("car_loan", champion.version)["model.sha256"]
    assert config["model_sha256"] == recorded
    home = tmp_path / "bentoml"
    home.mkdir()
    (home / "bentos").symlink_to((built.bentoml_home / "bentos").resolve())
    shutil.copytree(built.bentoml_home / "models", home / "models", symlinks=False)
    model_name, model_version = built.model_tag.split(":")
    model_file = home / "models" / model_name / model_version / "model.cbm"
    with model_file.open("ab") as f:
        f.write(b"\0")  # one byte more: another file
    env = support.serve_env(tmp_path / "home", home)
    server = support.start_server(built.bento_tag, env, tmp_path / "server.log")
    try:
        code = server.proc.wait(120)
    finally:
        server.stop(signal.SIGKILL)
    out = server.output()
    assert code != 0, out[-3000:]
    assert "not the " + recorded + " recorded with car_loan model version" in out, out[-3000:]


def test_beyond_max_concurrency_requests_are_shed_with_503_and_it_recovers(
    built, champion, tmp_path: Path
) -> None:
    """Over the concurrency limit BentoML answered 429 ``{"error": "Too many requests"}``, a
    status and body outside the API's declared errors (found by ``bench/bench_load.py``): the
    limit is now ours, a 503 in the API's error schema with ``Retry-After``, before the body is
    read; requests in progress are unaffected and it serves again as soon as they end."""
    import json
    import socket

    env = support.serve_env(
        tmp_path / "home",
        support.server_home(built.bentoml_home, tmp_path / "bentoml"),
        ML_ASSETS_SERVE_MAX_CONCURRENCY="2",
    )
    server = support.start_server(built.bento_tag, env, tmp_path / "server.log", workers=1)
    records = support.feature_records(champion.holdout.head(1), champion.problem.features)
    body = json.dumps({"records": records}).encode()
    held: list[socket.socket] = []
    try:
        server.wait_ready()
        # two requests in progress: their heads sent, their bodies not yet
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=30)
            sock.sendall(
                b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body[:5]
            )
            held.append(sock)
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:

            def third() -> httpx.Response | None:
                resp = http.post("/v1/predict", json={"records": records})
                return resp if resp.status_code == 503 else None

            # (until both heads have reached the worker)
            shed = support.wait_until(third, 5, what="a third request shed")
            assert shed.headers["retry-after"] == "1"
            error = shed.json()["error"]
            assert error["code"] == "unavailable" and "overloaded" in error["message"], shed.text
            assert "at most 2 (max_concurrency)" in error["message"]
            assert http.get("/readyz").status_code == 200  # shedding is not unreadiness
            # the requests in progress complete normally
            for sock in held:
                sock.sendall(body[5:])
                answer = sock.recv(65536).decode()
                assert answer.startswith("HTTP/1.1 200"), answer[:300]
            resp = http.post("/v1/predict", json={"records": records})
            assert resp.status_code == 200, resp.text
            metrics = http.get("/metrics").text
            assert 'status="503"' in metrics and 'status="429"' not in metrics
    finally:
        for sock in held:
            sock.close()
        server.stop()
