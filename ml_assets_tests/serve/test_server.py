"""The BUILT Bento served by ``bentoml serve <tag>`` (2 workers), called over real HTTP (httpx)
and real gRPC (the generated stub): parity with batch scoring, predict by keys against the
seeded online store, health, metrics, reflection, bad inputs, OpenAPI, the prediction log."""

from __future__ import annotations

import datetime as dt
import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import polars as pl
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ml_assets.features import OnlineClient, compute_features
from ml_assets.features.compute import entity_events, label_events
from ml_assets.features.spec import Source
from ml_assets.serve import predictor_pb2 as pb
from ml_assets.serve import predictor_pb2_grpc as pb_grpc
from ml_assets.serve import read_prediction_log
from ml_assets.train.core import score_frame
from ml_assets_tests.serve import support
from ml_assets_tests.serve.conftest import MAX_BODY_BYTES, MAX_RECORDS

pytestmark = [pytest.mark.xdist_group("serve"), pytest.mark.serve]


@pytest.fixture(scope="module")
def http(server: support.ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def channel(server: support.ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.PredictorStub:
    return pb_grpc.PredictorStub(channel)


def post(http: httpx.Client, path: str, records: list, **kw) -> httpx.Response:
    return http.post(f"/v1/{path}", json={"records": records}, **kw)


def grpc_predictions(resp: pb.PredictResponse) -> tuple[list, list[float]]:
    labels = [support.proto_label(p.label) for p in resp.predictions]
    return labels, [p.probability for p in resp.predictions]


def test_serves_the_built_bentos_model(
    http: httpx.Client, stub: pb_grpc.PredictorStub, built, champion
) -> None:
    info = http.get("/v1/model").json()
    assert info["model_version"] == champion.version
    assert info["bentoml_model"] == built.model_tag
    assert info["labels"]["mlflow_run_id"] == champion.run_id
    assert info["features"] == champion.problem.features
    grpc_info = stub.ModelInfo(pb.ModelInfoRequest())
    assert grpc_info.model_version == champion.version
    assert grpc_info.bentoml_model == built.model_tag
    assert list(grpc_info.features) == champion.problem.features


def test_http_and_grpc_equal_batch_scoring(
    http: httpx.Client, stub: pb_grpc.PredictorStub, champion
) -> None:
    rows = champion.holdout.head(300)
    expected = score_frame(champion.model, rows, champion.problem, champion.version)
    records = support.feature_records(rows, champion.problem.features)
    http_labels, http_probs, grpc_labels, grpc_probs = [], [], [], []
    for start in range(0, len(records), 100):
        batch = records[start : start + 100]
        resp = post(http, "predict", batch)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["model_version"] == champion.version
        assert resp.headers["x-request-id"] == body["request_id"]
        http_labels += [p["label"] for p in body["predictions"]]
        http_probs += [p["probability"] for p in body["predictions"]]
        labels, probs = grpc_predictions(
            stub.Predict(pb.PredictRequest(records=support.proto_records(batch)))
        )
        grpc_labels += labels
        grpc_probs += probs
    want = expected["probability"].to_numpy()
    np.testing.assert_allclose(http_probs, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grpc_probs, want, rtol=1e-12, atol=1e-15)
    assert http_labels == grpc_labels == expected["prediction"].to_list()
    # one record at a time gives the same as in a batch
    one = post(http, "predict", records[:1]).json()["predictions"][0]
    assert one["probability"] == pytest.approx(want[0], rel=1e-12)


def offline_features_at(entity_rows: pl.DataFrame, when: dt.datetime) -> pl.DataFrame:
    """The offline feature code on rows restamped to ``when``: what the feature table would
    hold for an application at that time."""
    _, spec = support.car_loan()
    entity, labels = support.demo_tables()
    events = {
        Source.ENTITY: entity_events(spec, entity),
        Source.LABELS: label_events(spec, labels, entity),
    }
    return compute_features(spec, entity_rows.with_columns(pl.lit(when).alias("timestamp")), events)


def test_predict_by_keys_matches_offline_features(
    http: httpx.Client, stub: pb_grpc.PredictorStub, champion, online_url: str
) -> None:
    """Entity records at the store's as-of time: row and request features computed by the
    feature code, aggregates from the online store; predictions equal batch scoring of the
    offline feature rows of the same applications."""
    entity, _ = support.demo_tables()
    rows = entity.filter(pl.col("timestamp") >= support.AS_OF).head(150)
    offline = offline_features_at(rows, support.AS_OF)
    expected = score_frame(champion.model, offline, champion.problem, champion.version)
    records = rows.drop("timestamp").to_dicts()
    for r in records:
        r["timestamp"] = support.AS_OF.isoformat()
    resp = post(http, "predict_by_keys", records)
    assert resp.status_code == 200, resp.text
    preds = resp.json()["predictions"]
    want = expected["probability"].to_numpy()
    np.testing.assert_allclose([p["probability"] for p in preds], want, rtol=1e-12)
    assert [p["label"] for p in preds] == expected["prediction"].to_list()
    assert [p["key"]["id"] for p in preds] == rows["id"].to_list()
    g = stub.PredictByKeys(pb.PredictRequest(records=support.proto_records(records)))
    labels, probs = grpc_predictions(g)
    np.testing.assert_allclose(probs, want, rtol=1e-12)
    assert labels == expected["prediction"].to_list()
    assert [p.key["id"].int_value for p in g.predictions] == rows["id"].to_list()
    # and the serving path in-process (online_features + the store) agrees as well
    from ml_assets.features import online_features

    _, spec = support.car_loan()
    with OnlineClient(online_url) as store:
        online = online_features(spec, records, store)
    again = score_frame(champion.model, online, champion.problem, champion.version)
    np.testing.assert_allclose(again["probability"].to_numpy(), want, rtol=1e-12)


def test_predict_by_keys_event_time_defaults_to_request_time(
    http: httpx.Client, serve_home: Path
) -> None:
    records = support.entity_records(3, with_time=False)
    for r in records:
        r.pop("id")
    before = dt.datetime.now(dt.UTC)
    resp = post(http, "predict_by_keys", records, headers={"x-request-id": "now-test"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["client_request_id"] == "now-test"
    assert all("key" not in p for p in resp.json()["predictions"])
    logged = wait_for_log(serve_home, "now-test", 3)
    assert logged["request_id"].unique().to_list() == [resp.json()["request_id"]]
    times = logged["timestamp"].to_list()
    assert all(before <= t <= dt.datetime.now(dt.UTC) for t in times)
    assert logged["id"].null_count() == 3
    assert logged["endpoint"].unique().to_list() == ["predict_by_keys"]


def wait_for_log(home: Path, client_id: str, rows: int, timeout: float = 10) -> pl.DataFrame:
    """The logged rows of the request the client sent with ``X-Request-Id: client_id`` once
    the server's writer has flushed them (it flushes every
    ``ML_ASSETS_PREDICTION_LOG_FLUSH_SECONDS``; a running server offers no flush hook)."""
    today = dt.datetime.now(dt.UTC)

    def flushed() -> pl.DataFrame | None:
        frame = read_prediction_log(
            support.DATASET,
            today - dt.timedelta(days=1),
            today + dt.timedelta(days=1),
            root=home / "prediction_log",
        )
        if frame.height:
            frame = frame.filter(pl.col("client_request_id") == client_id)
        return frame if frame.height >= rows else None

    return support.wait_until(
        flushed, timeout, interval=0.2, what=f"{rows} logged rows of request {client_id!r}"
    )


def test_every_prediction_is_logged_with_inputs_and_outputs(
    http: httpx.Client, stub: pb_grpc.PredictorStub, champion, serve_home: Path
) -> None:
    rows = champion.holdout.head(5)
    records = support.feature_records(rows, champion.problem.features)
    resp = post(http, "predict", records, headers={"x-request-id": "log-http"})
    assert resp.status_code == 200
    stub.Predict(
        pb.PredictRequest(records=support.proto_records(records)),
        metadata=(("x-request-id", "log-grpc"),),
    )
    for rid, protocol in (("log-http", "http"), ("log-grpc", "grpc")):
        logged = wait_for_log(serve_home, rid, 5)
        assert logged.height == 5
        assert logged["protocol"].unique().to_list() == [protocol]
        assert logged["model_version"].unique().to_list() == [champion.version]
        assert logged["row"].to_list() == [0, 1, 2, 3, 4]
        assert logged["car_value"].to_list() == rows["car_value"].to_list()
        assert (
            logged["repaid_loan_on_prev_car"].to_list() == rows["repaid_loan_on_prev_car"].to_list()
        )
        got = [p["probability"] for p in resp.json()["predictions"]]
        np.testing.assert_allclose(logged["probability"].to_numpy(), got, rtol=1e-12)
        assert (logged["latency_ms"] > 0).all()


def test_health(http: httpx.Client, channel: grpc.Channel) -> None:
    assert http.get("/livez").status_code == 200
    assert http.get("/readyz").status_code == 200
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "ml_assets.serving.v1.Predictor"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert {"ml_assets.serving.v1.Predictor", "grpc.health.v1.Health"} <= services
    fd = db.FindFileContainingSymbol("ml_assets.serving.v1.Predictor")
    assert fd.name == "ml_assets/serve/predictor.proto"
    assert [m.name for m in fd.service[0].method] == ["Predict", "PredictByKeys", "ModelInfo"]


def feature_record(champion) -> dict:
    return support.feature_records(champion.holdout.head(1), champion.problem.features)[0]


def bad_http_cases(champion) -> list[tuple[str, dict, int, str]]:
    """(endpoint, request kwargs, status, text the message must contain)."""
    good = feature_record(champion)
    entity = support.entity_records(1)[0]

    def records(*changes: tuple[str, object], base: dict | None = None, n: int = 4) -> list:
        out = [dict(base or good) for _ in range(n)]
        for field, value in changes:
            if value is KeyError:
                del out[-1][field]
            else:
                out[-1][field] = value
        return out

    def body(recs: list) -> dict:
        return {"json": {"records": recs}}

    nan_body = json.dumps({"records": [good]}).replace(
        f'"car_value": {json.dumps(good["car_value"])}', '"car_value": NaN'
    )
    inf_body = json.dumps({"records": [good]}).replace(
        f'"loan_length": {json.dumps(good["loan_length"])}', '"loan_length": -Infinity'
    )
    json_ct = {"content-type": "application/json"}
    return [
        ("predict", body(records(("car_value", "abc"))), 422,
         'records[3].car_value: expected a number, got "abc"'),
        ("predict", body(records(("colour", "red"))), 422, "records[3].colour: unknown field"),
        ("predict", body(records(("loan_length", KeyError))), 422,
         "records[3].loan_length: missing"),
        ("predict", body(records(("repaid_loan_on_prev_car", "yes"))), 422,
         'records[3].repaid_loan_on_prev_car: expected true or false, got "yes"'),
        ("predict", body(records(("car_value", None))), 422, "records[3].car_value: must not be null"),
        ("predict", body(records(("car_value", -1.0))), 422, "records[3].car_value: must be >= 0"),
        ("predict", body(records(("salary_rank", 9))), 422, "records[3].salary_rank: expected one of"),
        ("predict", {"content": nan_body, "headers": json_ct}, 422,
         "records[0].car_value: expected a finite number, got NaN"),
        ("predict", {"content": inf_body, "headers": json_ct}, 422,
         "records[0].loan_length: expected a finite number, got -Infinity"),
        ("predict", body([]), 422, "records: empty batch"),
        ("predict", {"json": {"records": [good], "extra": 1}}, 422, "extra: unknown field"),
        ("predict", {"json": {"rows": [good]}}, 422, "rows: unknown field"),
        ("predict", {"json": [good]}, 422, 'body: expected a JSON object with "records"'),
        ("predict", {"content": b'{"records": [', "headers": json_ct}, 400, "body: not valid JSON"),
        ("predict", {"content": pickle.dumps({"records": [good]}),
                     "headers": {"content-type": "application/vnd.bentoml+pickle"}}, 415,
         'content-type: expected application/json, got "application/vnd.bentoml+pickle"'),
        ("predict", {"content": b"records=1",
                     "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415,
         "content-type: expected application/json"),
        ("predict", {"content": json.dumps({"records": [good]})}, 415,
         "content-type: expected application/json, got none"),
        ("predict_by_keys", body(records(("salary_range", "100K+"), base=entity)), 422,
         'records[3].salary_range: expected one of ["0 - 20K €"'),
        ("predict_by_keys", body(records(("timestamp", "yesterday"), base=entity)), 422,
         'records[3].timestamp: expected an ISO 8601 datetime string'),
        ("predict_by_keys", body(records(("size_of_downpayment", KeyError), base=entity)), 422,
         "records[3].size_of_downpayment: missing"),
        ("predict_by_keys", body(records(("id", -3), base=entity)), 422, "records[3].id: must be >= 0"),
        ("predict_by_keys", body(records(("car_value_per_month", 1.0), base=entity)), 422,
         "records[3].car_value_per_month: unknown field"),
    ]  # fmt: skip


def test_bad_http_inputs_get_4xx_naming_the_field(http: httpx.Client, champion) -> None:
    for endpoint, kwargs, status, text in bad_http_cases(champion):
        resp = http.post(f"/v1/{endpoint}", **kwargs)
        assert resp.status_code == status, (endpoint, text, resp.text)
        error = resp.json()["error"]
        assert text in error["message"], (text, error)
        assert resp.json()["request_id"] == resp.headers["x-request-id"]


def test_routing_and_size_limits(http: httpx.Client, champion) -> None:
    good = feature_record(champion)
    assert http.get("/v1/predict").status_code == 405
    assert http.get("/v1/nope").status_code == 404
    too_many = post(http, "predict", [{"x": 1}] * (MAX_RECORDS + 1))
    assert too_many.status_code == 413
    assert (
        "records: 1001 records is more than the limit of 1000"
        in too_many.json()["error"]["message"]
    )
    big = json.dumps({"records": [good] * 900, "pad": "x" * MAX_BODY_BYTES})
    huge = http.post("/v1/predict", content=big, headers={"content-type": "application/json"})
    assert huge.status_code == 413
    assert huge.json()["error"]["message"].startswith("body: ")
    # the connection is still usable afterwards
    assert post(http, "predict", [good]).status_code == 200


def test_bad_grpc_inputs_get_invalid_argument_naming_the_field(
    stub: pb_grpc.PredictorStub, champion
) -> None:
    good = feature_record(champion)
    entity = support.entity_records(1)[0]
    cases = [
        (stub.Predict, [good, {**good, "car_value": "abc"}], grpc.StatusCode.INVALID_ARGUMENT,
         'records[1].car_value: expected a number, got "abc"'),
        (stub.Predict, [{**good, "car_value": float("nan")}], grpc.StatusCode.INVALID_ARGUMENT,
         "records[0].car_value: expected a finite number, got NaN"),
        (stub.Predict, [{**good, "loan_length": float("inf")}], grpc.StatusCode.INVALID_ARGUMENT,
         "records[0].loan_length: expected a finite number, got Infinity"),
        (stub.Predict, [{**good, "colour": 1}], grpc.StatusCode.INVALID_ARGUMENT,
         "records[0].colour: unknown field"),
        (stub.Predict, [{k: v for k, v in good.items() if k != "car_value"}],
         grpc.StatusCode.INVALID_ARGUMENT, "records[0].car_value: missing"),
        (stub.Predict, [], grpc.StatusCode.INVALID_ARGUMENT, "records: empty batch"),
        (stub.Predict, [{"x": 1}] * (MAX_RECORDS + 1), grpc.StatusCode.RESOURCE_EXHAUSTED,
         "records: 1001 records is more than the limit"),
        (stub.PredictByKeys, [{**entity, "salary_range": "100K+"}], grpc.StatusCode.INVALID_ARGUMENT,
         "records[0].salary_range: expected one of"),
    ]  # fmt: skip
    for method, records, code, text in cases:
        with pytest.raises(grpc.RpcError) as err:
            method(pb.PredictRequest(records=support.proto_records(records)))
        assert err.value.code() is code, (text, err.value.details())
        assert text in err.value.details()
    # a message over the size limit never reaches the servicer
    big = pb.PredictRequest(records=support.proto_records([{**good, "pad": "x" * MAX_BODY_BYTES}]))
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(big)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def scrape(http: httpx.Client) -> dict[str, float]:
    """Our series from /metrics (summed over the workers by BentoML's multiprocess registry)."""
    out: dict[str, float] = {}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("ml_assets_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_count_requests_latency_and_predictions(
    http: httpx.Client, stub: pb_grpc.PredictorStub, champion
) -> None:
    resp = http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    before = scrape(http)
    records = support.feature_records(champion.holdout.head(10), champion.problem.features)
    for _ in range(3):
        assert post(http, "predict", records).status_code == 200
    stub.Predict(pb.PredictRequest(records=support.proto_records(records)))
    assert post(http, "predict", [{"x": 1}]).status_code == 422
    after = scrape(http)
    ok = 'ml_assets_requests_total{dataset="car_loan",endpoint="predict",protocol="http",status="200"}'
    bad = 'ml_assets_requests_total{dataset="car_loan",endpoint="predict",protocol="http",status="422"}'
    grpc_ok = 'ml_assets_requests_total{dataset="car_loan",endpoint="predict",protocol="grpc",status="OK"}'
    rows = 'ml_assets_predicted_rows_total{dataset="car_loan",endpoint="predict",protocol="http"}'
    assert after[ok] - before.get(ok, 0) == 3
    assert after[bad] - before.get(bad, 0) == 1
    assert after[grpc_ok] - before.get(grpc_ok, 0) == 1
    assert after[rows] - before.get(rows, 0) == 30
    latency = [k for k in after if k.startswith("ml_assets_request_duration_seconds_bucket")]
    assert any('le="0.005"' in k and 'status="200"' in k for k in latency)
    score = (
        f'ml_assets_prediction_score_count{{dataset="car_loan",model_version="{champion.version}"}}'
    )
    assert after[score] - before.get(score, 0) == 40
    labels = [k for k in after if k.startswith("ml_assets_predicted_label_total")]
    assert labels and all(f'model_version="{champion.version}"' in k for k in labels)
    # never a 5xx, on either protocol, over the whole session so far
    statuses = [k for k in after if k.startswith("ml_assets_requests_total")]
    assert not [k for k in statuses if 'status="5' in k or 'status="INTERNAL"' in k]


def test_openapi_describes_the_contract_and_its_example_works(
    http: httpx.Client, built, champion
) -> None:
    doc = http.get("/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert {"/v1/predict", "/v1/predict_by_keys"} <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    features = schemas["FeatureRecord"]
    assert features["required"] == champion.problem.features
    assert features["additionalProperties"] is False
    car_value = features["properties"]["car_value"]
    assert (car_value["type"], car_value["minimum"], car_value["maximum"]) == ("number", 0, 1e6)
    salary = schemas["EntityRecord"]["properties"]["salary_range"]["anyOf"][0]
    assert salary["enum"][0] == "0 - 20K €"
    # the documented examples are accepted by the service
    for path, name in (("predict", "PredictRequest"), ("predict_by_keys", "PredictByKeysRequest")):
        example = schemas[name]["examples"][0]
        resp = http.post(f"/v1/{path}", json=example)
        assert resp.status_code == 200, (path, resp.text)
    # the Bento carries the same description
    shipped = json.loads((Path(built.metadata["bento_path"]) / "src" / "openapi.json").read_text())
    assert shipped["components"] == doc["components"]


def test_feature_records_with_key_and_event_time_are_logged_with_them_on_both_protocols(
    http: httpx.Client, stub: pb_grpc.PredictorStub, champion, serve_home: Path
) -> None:
    """A feature row may say which application and event it is for (the contract's key and
    event time, optional, never model inputs): both protocols log them and echo the key; the
    OpenAPI document lists them as optional fields; bad ones are named errors."""
    rows = champion.holdout.head(3)
    plain = support.feature_records(rows, champion.problem.features)
    given = [
        {**plain[0], "id": 9001, "timestamp": "2019-06-03T10:00:00Z"},
        {**plain[1], "id": 9002, "timestamp": "2019-06-03T12:30:00+02:00"},
        plain[2],
    ]
    want_ids = [9001, 9002, None]
    utc = dt.UTC
    want_times = [
        dt.datetime(2019, 6, 3, 10, tzinfo=utc),
        dt.datetime(2019, 6, 3, 10, 30, tzinfo=utc),
        None,
    ]
    resp = post(http, "predict", given, headers={"x-request-id": "ids-http"})
    assert resp.status_code == 200, resp.text
    assert [p.get("key") for p in resp.json()["predictions"]] == [{"id": 9001}, {"id": 9002}, None]
    g = stub.Predict(
        pb.PredictRequest(records=support.proto_records(given)),
        metadata=(("x-request-id", "ids-grpc"),),
    )
    assert [{k: support.proto_label(v) for k, v in p.key.items()} for p in g.predictions] == [
        {"id": 9001}, {"id": 9002}, {}
    ]  # fmt: skip
    plain_probs = [p["probability"] for p in post(http, "predict", plain).json()["predictions"]]
    for rid, protocol in (("ids-http", "http"), ("ids-grpc", "grpc")):
        logged = wait_for_log(serve_home, rid, 3).sort("row")
        assert logged["protocol"].unique().to_list() == [protocol]
        assert logged["id"].to_list() == want_ids
        assert logged["timestamp"].to_list() == want_times
        assert logged["car_value"].to_list() == rows["car_value"].to_list()
        # never model inputs: the same rows score the same without them
        np.testing.assert_allclose(logged["probability"].to_numpy(), plain_probs, rtol=1e-12)

    for proto, call in (("http", None), ("grpc", stub.Predict)):
        bad = [{**plain[0], "id": "abc"}, {**plain[0], "timestamp": "yesterday"}]
        if call is None:
            r = post(http, "predict", bad)
            assert r.status_code == 422, r.text
            message = r.json()["error"]["message"]
        else:
            with pytest.raises(grpc.RpcError) as err:
                call(pb.PredictRequest(records=support.proto_records(bad)))
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            message = err.value.details()
        assert 'records[0].id: expected an integer, got "abc"' in message, proto
        assert "records[1].timestamp: expected an ISO 8601 datetime string" in message, proto

    record = http.get("/v1/openapi.json").json()["components"]["schemas"]["FeatureRecord"]
    assert record["properties"]["id"]["type"] == "integer"
    assert record["properties"]["timestamp"]["format"] == "date-time"
    assert not {"id", "timestamp"} & set(record["required"])
