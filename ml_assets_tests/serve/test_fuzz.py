"""Property-based fuzzing of both protocols of the BUILT Bento served by ``bentoml serve``.

Hypothesis generates requests from the server's own OpenAPI document (no field is named here, so
this works for any contract): records starting from the document's examples with fields
dropped, added or replaced by boundary values (each range's edges and just beyond, int64's
edges, the categories in another case) or by arbitrary JSON; whole bodies of arbitrary bytes
or text; and the same records as gRPC messages, with every ``Value`` kind including NaN and
infinities, plus arbitrary bytes as the serialized request. The properties, stated by the
schema rather than by the server's code:

* never a 5xx and never a gRPC status other than OK or INVALID_ARGUMENT;
* a request the OpenAPI request schema rejects is never answered with a prediction (no silent
  acceptance), and a request answered with predictions is schema-valid;
* every answer conforms to its declared response schema (``PredictResponse`` or ``Error``),
  with one prediction per record, each finite.

The examples are derandomized (the same cases every run, so CI cannot flake on a new case) and
bounded: ``ML_ASSETS_FUZZ_EXAMPLES`` per property (default 150). ``ML_ASSETS_FUZZ_RANDOM=1``
draws new cases each run and ``ML_ASSETS_FUZZ_REPORT=<file>`` writes the outcome counts there:
BENCHMARKS.md ("Fuzzing") gives a larger random run's counts and its command.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import jsonschema
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_assets.serve import predictor_pb2 as pb
from ml_assets_tests.serve import support

pytestmark = [pytest.mark.xdist_group("serve"), pytest.mark.serve]

EXAMPLES = int(os.environ.get("ML_ASSETS_FUZZ_EXAMPLES", "150"))
REPORT = os.environ.get("ML_ASSETS_FUZZ_REPORT")
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=os.environ.get("ML_ASSETS_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OPERATIONS = {"predict": "PredictRequest", "predict_by_keys": "PredictByKeysRequest"}
METHODS = {
    "predict": "/ml_assets.serving.v1.Predictor/Predict",
    "predict_by_keys": "/ml_assets.serving.v1.Predictor/PredictByKeys",
}
JSON = {"content-type": "application/json"}
INT64 = (-(2**63), 2**63 - 1)
HTTP_CODES = frozenset({200, 400, 413, 415, 422})
"""What a fuzzed request may get: a prediction or a client error (503 would mean the server is
not ready or the online store failed: not a property of the input)."""

COUNTS: Counter[str] = Counter()
"""Outcomes per protocol and operation, written to ``ML_ASSETS_FUZZ_REPORT`` at the end."""


@pytest.fixture(scope="module")
def http(server: support.ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, trust_env=False) as client:
        yield client
    if REPORT:
        Path(REPORT).write_text(json.dumps(dict(sorted(COUNTS.items())), indent=2))


@pytest.fixture(scope="module")
def channel(server: support.ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


@pytest.fixture(scope="module")
def document(http: httpx.Client) -> dict[str, Any]:
    resp = http.get("/v1/openapi.json")
    assert resp.status_code == 200
    return resp.json()


def validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A validator of one component schema, its ``$ref`` resolved within the document."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


def example(document: dict[str, Any], operation: str) -> dict[str, Any]:
    """The document's own example record of an operation (it passes validation)."""
    return document["components"]["schemas"][OPERATIONS[operation]]["examples"][0]["records"][0]


def field_schemas(document: dict[str, Any], operation: str) -> dict[str, dict[str, Any]]:
    """Each field's JSON schema, as the record schema of the operation declares it."""
    request = document["components"]["schemas"][OPERATIONS[operation]]
    ref = request["properties"]["records"]["items"]["$ref"].rsplit("/", 1)[-1]
    return document["components"]["schemas"][ref]["properties"]


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return schema.get("anyOf") or schema.get("oneOf") or [schema]


def boundary_values(schema: dict[str, Any]) -> list[Any]:
    """Values at and just beyond a field's declared edges: where validators break."""
    out: list[Any] = [None, "", True, 0, -0.0, INT64[0], INT64[1], INT64[0] - 1, INT64[1] + 1]
    for branch in _branches(schema):
        for value in branch.get("enum", []):
            out.append(value)
            if isinstance(value, str):
                out += [value.upper(), value.lower(), f" {value}", value + "\u0301"]
        for edge in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if edge in branch:
                v = branch[edge]
                out += [v, v - 1, v + 1, math.nextafter(v, -math.inf), math.nextafter(v, math.inf)]
                if float(v).is_integer():
                    out.append(int(v))
        if branch.get("format") in ("date-time", "date"):
            out += [
                "2024-01-01T12:00:00Z",
                "2024-02-30T00:00:00Z",
                "1899-12-31T23:59:59Z",
                "2200-01-01T00:00:00Z",
                "9999-12-31T23:59:59-14:00",
                "2024-01-01T00:00:00+14:01",
                "2024-01-01",
                "not a time",
            ]
    return out


@st.composite
def records(draw: st.DrawFn, document: dict[str, Any], operation: str) -> dict[str, Any]:
    """One record: the example with none, one or a few fields dropped or replaced (by a value at
    a declared edge or by any JSON), optional fields added, maybe an unknown key. Few changes
    per record, so that each one is judged on its own rather than hidden behind the first."""
    base = example(document, operation)
    fields = field_schemas(document, operation)
    record = dict(base)
    names = sorted(set(base) | set(fields))
    changes = draw(st.sampled_from([0, 0, 0, 1, 1, 1, 1, 2, 2, 3]))
    for name in draw(st.lists(st.sampled_from(names), max_size=changes, unique=True)):
        action = draw(st.sampled_from(["drop", "edge", "edge", "edge", "any"]))
        if action == "drop":
            record.pop(name, None)
        elif action == "edge":
            record[name] = draw(st.sampled_from(boundary_values(fields.get(name, {}))))
        else:
            record[name] = draw(JSON_VALUES)
    if draw(st.integers(0, 9)) == 0:
        record[draw(st.text(min_size=1, max_size=8))] = draw(JSON_SCALARS)
    return record


@st.composite
def bodies(draw: st.DrawFn, document: dict[str, Any], operation: str) -> Any:
    """A request body: mostly ``{"records": [...]}``, sometimes any JSON at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    body: dict[str, Any] = {
        "records": draw(st.lists(records(document, operation), min_size=0, max_size=3))
    }
    if draw(st.integers(0, 19)) == 0:
        body[draw(st.text(max_size=6))] = draw(JSON_SCALARS)
    return body


def check_http_answer(
    resp: httpx.Response, body: Any, valid: bool, document: dict[str, Any], tally: str
) -> None:
    """The properties of one HTTP answer (see the module docstring)."""
    COUNTS[f"{tally} {resp.status_code}"] += 1
    assert resp.status_code in HTTP_CODES, (resp.status_code, resp.text[:500], body)
    if resp.status_code == 200:
        assert valid, f"predicted on a request the schema rejects: {body!r}"
        answer = resp.json()
        validator(document, "PredictResponse").validate(answer)
        assert len(answer["predictions"]) == len(body["records"])
        for prediction in answer["predictions"]:
            for value in prediction.values():
                if isinstance(value, float):
                    assert math.isfinite(value), answer
    else:
        assert not (valid and resp.status_code in (400, 415)), (resp.text, body)
        validator(document, "Error").validate(resp.json())
        assert resp.json()["error"]["message"].strip(), resp.text


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_fuzzed_json_records_get_a_prediction_only_when_schema_valid(
    http: httpx.Client, document: dict[str, Any], operation: str
) -> None:
    check = validator(document, OPERATIONS[operation])

    @FUZZ
    @given(body=bodies(document, operation))
    def run(body: Any) -> None:
        resp = http.post(f"/v1/{operation}", content=json.dumps(body).encode(), headers=JSON)
        check_http_answer(resp, body, check.is_valid(body), document, f"http {operation}")

    run()


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_fuzzed_raw_bodies_are_client_errors(
    http: httpx.Client, document: dict[str, Any], operation: str
) -> None:
    """Arbitrary bytes and text (JSON or not) as the body: never a 5xx, never a prediction
    unless the bytes happen to be a schema-valid UTF-8 JSON request."""
    check = validator(document, OPERATIONS[operation])

    @FUZZ
    @given(data=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
    def run(data: bytes) -> None:
        resp = http.post(f"/v1/{operation}", content=data, headers=JSON)
        try:
            body, valid = json.loads(data), None
        except ValueError:
            body, valid = None, False
        if valid is None:
            valid = check.is_valid(body)
        check_http_answer(resp, body, valid, document, f"http-raw {operation}")

    run()


def to_json(value: pb.Value) -> tuple[Any, bool]:
    """A gRPC ``Value`` as the JSON value it stands for; False when JSON has none (NaN, inf,
    or no kind set)."""
    kind = value.WhichOneof("kind")
    if kind is None:
        return None, False
    if kind == "null_value":
        return None, True
    got = getattr(value, kind)
    if kind == "number_value" and not math.isfinite(got):
        return got, False
    return got, True


def json_valid(request: pb.PredictRequest, check: jsonschema.Draft202012Validator) -> bool:
    """Whether a request message, as the JSON request it stands for, is schema-valid."""
    rows = []
    for message in request.records:
        row = {}
        for name, value in message.fields.items():
            row[name], ok = to_json(value)
            if not ok:
                return False
        rows.append(row)
    return check.is_valid({"records": rows})


PROTO_VALUES = st.one_of(
    st.just(("null_value", 0)),
    st.floats().map(lambda v: ("number_value", v)),
    st.integers(*INT64).map(lambda v: ("int_value", v)),
    st.text(max_size=12).map(lambda v: ("string_value", v)),
    st.booleans().map(lambda v: ("bool_value", v)),
    st.just(("unset", None)),
)


def wire_scalar(value: Any) -> Any:
    """A JSON scalar as a gRPC client can send it: integers beyond int64 as doubles."""
    plain_int = isinstance(value, int) and not isinstance(value, bool)
    return float(value) if plain_int and not INT64[0] <= value <= INT64[1] else value


@st.composite
def proto_requests(
    draw: st.DrawFn, document: dict[str, Any], operation: str
) -> tuple[pb.PredictRequest, bool]:
    """A request message and whether its records, as JSON, are schema-valid."""
    check = validator(document, OPERATIONS[operation])
    rows = draw(st.lists(records(document, operation), min_size=0, max_size=3))
    # the wire has no lists, maps or integers beyond int64: those become what a client would
    # send instead (nothing, or a double)
    rows = [
        {k: wire_scalar(v) for k, v in r.items() if not isinstance(v, list | dict)} for r in rows
    ]
    messages = support.proto_records(rows)
    for message in messages:
        for name in list(message.fields):
            if draw(st.integers(0, 3 * len(message.fields))) == 0:
                kind, value = draw(PROTO_VALUES)
                if kind == "unset":
                    message.fields[name].Clear()
                else:
                    setattr(message.fields[name], kind, value)
    request = pb.PredictRequest(records=messages)
    return request, json_valid(request, check)


def check_grpc_answer(call: Any, data: bytes, valid: bool, records: int | None, tally: str) -> None:
    """The properties of one gRPC answer: OK only for a valid request, else INVALID_ARGUMENT
    with a reason."""
    try:
        answer = call(data, timeout=30)
    except grpc.RpcError as err:
        COUNTS[f"{tally} {err.code().name}"] += 1
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details(), data)
        assert err.details().strip()
        return
    COUNTS[f"{tally} OK"] += 1
    assert valid, f"predicted on a request the schema rejects: {pb.PredictRequest.FromString(data)}"
    assert records is not None and len(answer.predictions) == records
    for prediction in answer.predictions:
        assert math.isfinite(prediction.probability) and math.isfinite(prediction.value)


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_fuzzed_grpc_messages_are_ok_only_when_valid(
    channel: grpc.Channel, document: dict[str, Any], operation: str
) -> None:
    call = channel.unary_unary(
        METHODS[operation], response_deserializer=pb.PredictResponse.FromString
    )

    @FUZZ
    @given(case=proto_requests(document, operation))
    def run(case: tuple[pb.PredictRequest, bool]) -> None:
        request, valid = case
        data = request.SerializeToString()
        check_grpc_answer(call, data, valid, len(request.records), f"grpc {operation}")

    run()


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_fuzzed_grpc_bytes_are_invalid_argument(
    channel: grpc.Channel, document: dict[str, Any], operation: str
) -> None:
    """Arbitrary bytes as the serialized request: a message that happens to parse is judged
    like any other; anything else is INVALID_ARGUMENT."""
    call = channel.unary_unary(
        METHODS[operation], response_deserializer=pb.PredictResponse.FromString
    )
    check = validator(document, OPERATIONS[operation])

    @FUZZ
    @given(data=st.binary(max_size=300))
    def run(data: bytes) -> None:
        try:
            request = pb.PredictRequest.FromString(data)
        except DecodeError:  # not a PredictRequest at all
            check_grpc_answer(call, data, False, None, f"grpc-raw {operation}")
            return
        valid = json_valid(request, check)
        check_grpc_answer(call, data, valid, len(request.records), f"grpc-raw {operation}")

    run()
