"""Hostile and odd inputs against the BUILT Bento served by ``bentoml serve`` (the session's
server, 2 workers): no 5xx, no silent acceptance, messages that say what is wrong. HTTP over
httpx and raw sockets, gRPC over grpcio with raw request bytes (issue 11, "Serving inputs")."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import orjson
import polars as pl
import pytest

from ml_assets.serve import predictor_pb2 as pb
from ml_assets.serve import read_prediction_log
from ml_assets_tests.serve import support

pytestmark = [pytest.mark.xdist_group("serve"), pytest.mark.serve]

JSON = {"content-type": "application/json"}
PREDICT = "/ml_assets.serving.v1.Predictor/Predict"
PREDICT_BY_KEYS = "/ml_assets.serving.v1.Predictor/PredictByKeys"


@pytest.fixture(scope="module")
def http(server: support.ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def channel(server: support.ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


def raw_call(channel: grpc.Channel, method: str, data: bytes) -> grpc.RpcError | None:
    """Call a Predictor method with ``data`` as the request bytes; the error, or None on OK."""
    call = channel.unary_unary(method, response_deserializer=pb.PredictResponse.FromString)
    try:
        call(data, timeout=30)
    except grpc.RpcError as err:
        return err
    return None


@pytest.fixture(scope="module")
def good(champion) -> dict:
    return support.feature_records(champion.holdout.head(1), champion.problem.features)[0]


def error_of(resp: httpx.Response) -> str:
    return resp.json()["error"]["message"]


def test_timestamps_outside_the_served_range_are_422_on_both_protocols(
    http: httpx.Client, channel: grpc.Channel, good: dict
) -> None:
    """Year 9999 at -14:00 and year 1 at +14:00 once overflowed converting to UTC (500 and
    INTERNAL); offsets beyond +-14:00 were accepted."""
    entity = support.entity_records(1)[0]
    cases = [
        ("9999-12-31T23:59:59-14:00", "must be from 1900-01-01 to before 2200-01-01"),
        ("0001-01-01T00:00:00+14:00", "must be from 1900-01-01 to before 2200-01-01"),
        ("2019-06-03T10:00:00+15:00", "UTC offset beyond -14:00..+14:00"),
        ("2019-06-03T10:00:00-23:59", "UTC offset beyond -14:00..+14:00"),
    ]
    for when, text in cases:
        for path, record in (
            ("predict_by_keys", {**entity, "timestamp": when}),
            ("predict", {**good, "id": 7, "timestamp": when}),
        ):
            resp = http.post(f"/v1/{path}", json={"records": [record]})
            assert resp.status_code == 422, (path, when, resp.text)
            assert f"records[0].timestamp: {text}" in error_of(resp), resp.text
            method = PREDICT if path == "predict" else PREDICT_BY_KEYS
            data = pb.PredictRequest(records=support.proto_records([record])).SerializeToString()
            err = raw_call(channel, method, data)
            assert err is not None and err.code() is grpc.StatusCode.INVALID_ARGUMENT, when
            assert f"records[0].timestamp: {text}" in err.details()
    # the edges of the range and of the offsets are served
    for when in ("1900-01-01T14:00:00+14:00", "2199-12-31T10:00:00-13:59"):
        resp = http.post("/v1/predict_by_keys", json={"records": [{**entity, "timestamp": when}]})
        assert resp.status_code == 200, (when, resp.text)


def test_derived_features_are_bounded_by_their_inputs(
    http: httpx.Client, channel: grpc.Channel, good: dict
) -> None:
    """``car_value_per_month`` = car_value [0, 1e6] / loan_length [1, 120]: in [0, 1e6]; a
    value outside is 422 (it was predicted on), and the OpenAPI document says so."""
    for value, text in ((-1e308, "must be >= 0"), (2e6, "must be <= 1000000")):
        record = {**good, "car_value_per_month": value}
        resp = http.post("/v1/predict", json={"records": [record]})
        assert resp.status_code == 422, resp.text
        assert f"records[0].car_value_per_month: {text}" in error_of(resp)
        data = pb.PredictRequest(records=support.proto_records([record])).SerializeToString()
        err = raw_call(channel, PREDICT, data)
        assert err is not None and err.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert f"records[0].car_value_per_month: {text}" in err.details()
    props = http.get("/v1/openapi.json").json()["components"]["schemas"]["FeatureRecord"]
    ratio = props["properties"]["car_value_per_month"]["anyOf"][0]
    assert ratio["minimum"] <= 0 and ratio["maximum"] == pytest.approx(1e6)
    assert http.post("/v1/predict", json={"records": [good]}).status_code == 200


def test_duplicate_json_keys_are_rejected_not_last_wins(http: httpx.Client, good: dict) -> None:
    body = orjson.dumps({"records": [good]}).decode()
    first = body.index('"car_value":')
    cases = {
        # the first of two wins nothing: "abc" was silently replaced by the number
        "car_value": body[:first] + '"car_value":"abc",' + body[first:],
        # white space before the colon and an escaped character take the slow path
        "car_value ": body[:first] + '"car_value" : "abc", ' + body[first:],
        "car_value\\": body[:first] + '"car_value":"a\\"bc",' + body[first:],
        "records": '{"records": [], ' + body[1:],
    }
    for name, text in cases.items():
        resp = http.post("/v1/predict", content=text.encode(), headers=JSON)
        assert resp.status_code == 400, (name, resp.text)
        key = name.rstrip(" \\")
        assert f"{key}: appears twice in one object" in error_of(resp), resp.text
    # pretty-printed and escaped bodies without duplicates are served as before
    pretty = json.dumps({"records": [{**good}]}, indent=2, separators=(",", " : "))
    assert http.post("/v1/predict", content=pretty, headers=JSON).status_code == 200


def test_only_utf8_json_is_accepted_and_the_message_says_so(http: httpx.Client, good: dict) -> None:
    text = json.dumps({"records": [good]})
    cases = [
        (text.encode("utf-16"), JSON, 400, "only UTF-8 JSON is accepted"),
        (text.encode("utf-16-le"), JSON, 400, "only UTF-8 JSON is accepted"),
        (b"\xef\xbb\xbf" + text.encode(), JSON, 400, "byte order mark"),
        (text.replace("{", '{"x": "\xff",', 1).encode("latin-1"), JSON, 400,
         "not valid UTF-8 at byte 7"),
        (text.replace("{", '{"x": "\\ud800",', 1).encode(), JSON, 400,
         "unpaired UTF-16 surrogate"),
        (text.encode(), {"content-type": "application/json; charset=utf-16"}, 415,
         'charset "utf-16" is not accepted'),
        (gzip.compress(text.encode()), {**JSON, "content-encoding": "gzip"}, 415,
         'content-encoding: "gzip" is not accepted'),
    ]  # fmt: skip
    for body, headers, status, message in cases:
        resp = http.post("/v1/predict", content=body, headers=headers)
        assert resp.status_code == status, (message, resp.text)
        assert message in error_of(resp), (message, resp.text)
        assert "surrogates not allowed" not in error_of(resp)
    ok = {"content-type": "application/json; charset=UTF-8", "content-encoding": "identity"}
    assert http.post("/v1/predict", content=text.encode(), headers=ok).status_code == 200


def _entry(key: bytes, value: bytes) -> bytes:
    """A map entry of ``Record.fields`` on the wire (field 1, length-delimited)."""
    body = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(value)) + value
    return b"\x0a" + _varint(len(body)) + body


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _request(*records: bytes) -> bytes:
    return b"".join(b"\x0a" + _varint(len(r)) + r for r in records)


def test_grpc_malformed_messages_and_duplicate_entries_are_invalid_argument(
    channel: grpc.Channel, good: dict
) -> None:
    record = support.proto_records([good])[0].SerializeToString()
    abc = b"\x22\x03abc"  # Value.string_value = "abc"
    good_request = _request(record)
    assert raw_call(channel, PREDICT, good_request) is None
    cases = [
        # "abc" first, then the real value: protobuf's map keeps the last one
        (_request(_entry(b"car_value", abc) + record), "records[0].car_value: given twice"),
        (good_request[:-3], "not a valid ml_assets.serving.v1.PredictRequest message"),
        (b"\xff\xfe garbage \x00\x01", "not a valid ml_assets.serving.v1.PredictRequest"),
        (_request(record + _entry(b"colour", b"\x22\x02\xc3\x28")),
         "records[0].colour: string_value is not valid UTF-8"),
        (_request(record + _entry(b"col\xffour", abc)), "is not valid UTF-8"),
    ]  # fmt: skip
    for data, text in cases:
        for method in (PREDICT, PREDICT_BY_KEYS):
            err = raw_call(channel, method, data)
            assert err is not None, text
            assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, (text, err.details())
            assert text in err.details(), (text, err.details())
            assert "Exception deserializing" not in err.details()


def wait_for_client_rows(home: Path, client_id: str, rows: int) -> pl.DataFrame:
    today = dt.datetime.now(dt.UTC)

    def flushed() -> pl.DataFrame | None:
        frame = read_prediction_log(
            support.DATASET,
            today - dt.timedelta(days=1),
            today + dt.timedelta(days=1),
            root=home / "prediction_log",
        )
        if frame.height and "client_request_id" in frame.columns:
            frame = frame.filter(pl.col("client_request_id") == client_id)
            return frame if frame.height >= rows else None
        return None

    return support.wait_until(flushed, 15, interval=0.2, what=f"rows of {client_id!r}")


def test_request_ids_are_the_servers_and_the_clients_id_is_kept_apart(
    http: httpx.Client, channel: grpc.Channel, good: dict, serve_home: Path
) -> None:
    """The same X-Request-Id on three requests (two HTTP, one gRPC): three distinct server
    ids, the client's in its own log column; a client id over 128 characters is a 400."""
    client_id = f"reused-{uuid.uuid4().hex[:8]}"
    headers = {"x-request-id": client_id}
    server_ids = []
    for _ in range(2):
        resp = http.post("/v1/predict", json={"records": [good, good]}, headers=headers)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["client_request_id"] == client_id
        assert resp.headers["x-request-id"] == body["request_id"] != client_id
        assert resp.headers["x-client-request-id"] == client_id
        server_ids.append(body["request_id"])
    stub_call = channel.unary_unary(PREDICT, response_deserializer=pb.PredictResponse.FromString)
    data = pb.PredictRequest(records=support.proto_records([good, good])).SerializeToString()
    reply, call = stub_call.with_call(data, metadata=(("x-request-id", client_id),), timeout=30)
    server_ids.append(reply.request_id)
    assert dict(call.trailing_metadata())["x-client-request-id"] == client_id
    assert len(set(server_ids)) == 3
    logged = wait_for_client_rows(serve_home, client_id, 6)
    assert logged.height == 6
    assert sorted(set(logged["request_id"].to_list())) == sorted(server_ids)
    assert logged.select("request_id", "row").is_unique().all()

    long_id = "x" * 129
    resp = http.post("/v1/predict", json={"records": [good]}, headers={"x-request-id": long_id})
    assert resp.status_code == 400, resp.text
    assert "x-request-id: 129 characters is more than the limit of 128" in error_of(resp)
    ok = http.post("/v1/predict", json={"records": [good]}, headers={"x-request-id": "y" * 128})
    assert ok.status_code == 200 and ok.json()["client_request_id"] == "y" * 128
    with pytest.raises(grpc.RpcError) as err:
        stub_call(data, metadata=(("x-request-id", long_id),), timeout=30)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "x-request-id: 129 characters" in err.value.details()


def test_405_says_allow_and_the_schema_declares_the_int64_bound(http: httpx.Client) -> None:
    resp = http.get("/v1/predict")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "POST"
    assert http.post("/v1/model").headers["allow"] == "GET"
    record = http.get("/v1/openapi.json").json()["components"]["schemas"]["FeatureRecord"]
    key = record["properties"]["id"]
    assert (key["minimum"], key["maximum"]) == (0, 2**63 - 1)
    entity = support.entity_records(1)[0]
    over = http.post("/v1/predict_by_keys", json={"records": [{**entity, "id": 2**63}]})
    assert over.status_code == 422, over.text


def _bentoml_series(http: httpx.Client) -> list[str]:
    return [
        line
        for line in http.get("/metrics").text.splitlines()
        if line.startswith("bentoml_") and not line.startswith("#")
    ]


def test_unknown_paths_share_one_metric_label(http: httpx.Client) -> None:
    """Distinct unknown paths (a scanner's) no longer add series: one ``unmatched`` label."""
    for i in range(5):  # warm the labels every path below shares
        http.get(f"/warm-{i}")
    before = _bentoml_series(http)
    tag = uuid.uuid4().hex[:8]
    for i in range(200):
        resp = http.get(f"/probe-{tag}-{i}/x")
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "not_found"
    assert http.post(f"/v1/nope-{tag}", json={}).status_code == 404
    after = _bentoml_series(http)
    text = "\n".join(after)
    assert tag not in text
    assert 'endpoint="unmatched"' in text
    assert len(after) <= len(before) + 10  # a status label or two, never one per path


def test_the_root_page_loads_nothing_from_anywhere(http: httpx.Client) -> None:
    resp = http.get("/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.headers["content-security-policy"].startswith("default-src 'none'")
    html = resp.text
    assert "googletagmanager" not in html and "<script" not in html and "<iframe" not in html
    assert "://" not in html and "src=" not in html  # no absolute URL, nothing embedded
    assert 'href="v1/openapi.json"' in html
    for path in ("/static_content/swagger-ui.css", "/docs.json"):
        assert http.get(path).status_code == 404, path


def _raw(server: support.ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=60)
    return sock


def test_a_body_trickled_slowly_is_cut_off_with_408(server: support.ServerProcess) -> None:
    """Headers, then 10 of 100 promised body bytes, then nothing: the server answers 408 and
    closes the connection instead of waiting indefinitely (the limit is 10 s)."""
    sock = _raw(server)
    try:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"records"'
        )
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"not received within 10 s" in data


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_stalled_request_heads_are_closed_with_408(
    server: support.ServerProcess, http: httpx.Client
) -> None:
    """50 connections that never finish their request head (one sends nothing at all) are
    answered 408 and closed after the 10 s head timeout; the service answers meanwhile."""
    socks = [_raw(server) for _ in range(50)]
    try:
        for i, sock in enumerate(socks[1:]):
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-Slow-" + str(i).encode())
        assert http.get("/v1/model").status_code == 200
        replies = [_read_all(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert all(r.startswith(b"HTTP/1.1 408") for r in replies), {r[:40] for r in replies}
    assert b"request head not received in time" in replies[0]


def test_a_grpc_value_with_no_kind_is_invalid_not_null(channel: grpc.Channel, good: dict) -> None:
    """An unset ``Value`` was read as null, so a nullable field was silently predicted on as
    missing (found by test_fuzz.py); ``null_value`` still means null."""
    name = next(iter(good))
    for method in (PREDICT, PREDICT_BY_KEYS):
        record = support.proto_records([good])[0]
        record.fields[name].Clear()
        err = raw_call(channel, method, pb.PredictRequest(records=[record]).SerializeToString())
        assert err is not None and err.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert f"records[0].{name}: a Value with no kind set" in err.details(), err.details()
