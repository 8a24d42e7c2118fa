"""The shared decoding path in-process: gRPC's wire view against the generated messages, the
JSON body rules, time bounds and derived-feature bounds (the served behaviour is tested on the
real server in test_server_inputs.py)."""

from __future__ import annotations

import math

import pytest

from ml_assets.contracts.model import Column, ColumnType
from ml_assets.serve import predictor_pb2 as pb
from ml_assets.serve.decoding import RequestError, decode_json
from ml_assets.serve.fields import FieldRule, Kind, coerce
from ml_assets.serve.validation import ratio_bounds
from ml_assets.serve.wire import parse_request, records_of_request
from ml_assets_tests.serve import support


def test_the_wire_view_reads_what_the_generated_request_writes() -> None:
    records = [
        {"a": 1.5, "b": "text é", "c": None, "d": -(2**63), "e": True, "f": 0, "g": ""},
        {"a": math.inf},
        {},
    ]
    data = pb.PredictRequest(records=support.proto_records(records)).SerializeToString()
    assert records_of_request(parse_request(data)) == records


def _err(body: bytes) -> str:
    with pytest.raises(RequestError) as err:
        decode_json(body)
    return err.value.message


def test_json_bodies_duplicates_and_encodings() -> None:
    assert (
        _err(b'{"records":[{"x":"abc","x":1}]}')
        == "x: appears twice in one object: send each key once"
    )
    assert _err(b'{"records":[{"x" : 1, "x":1}]}').startswith("x: appears twice")
    assert _err(b'{"records":[{"x":"\\"","x":1}]}').startswith("x: appears twice")
    assert "byte order mark" in _err(b'\xef\xbb\xbf{"records":[]}')
    assert "UTF-16" in _err('{"records":[]}'.encode("utf-16-be"))
    assert "not valid UTF-8 at byte 7" in _err(b'{"x": "\xc3\x28"}')
    assert "unpaired UTF-16 surrogate" in _err(b'{"x": "\\udc00"}')
    assert decode_json(b'{"x": "\\ud83d\\ude00", "y": {"x": 1}}') == {"x": "😀", "y": {"x": 1}}
    assert decode_json(b'{"x" : "a\\"b"}') == {"x": 'a"b'}


def test_datetimes_are_bounded_before_converting() -> None:
    rule = FieldRule("t", Kind.DATETIME)
    for bad in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2200-01-01T00:00:00Z"):
        with pytest.raises(ValueError, match="must be from 1900-01-01 to before 2200-01-01"):
            coerce(rule, bad)
    with pytest.raises(ValueError, match="UTC offset beyond"):
        coerce(rule, "2019-01-01T00:00:00+14:01")
    assert coerce(rule, "1899-12-31T23:00:00-01:00").isoformat() == "1900-01-01T00:00:00+00:00"
    with pytest.raises(ValueError, match="must be from"):
        coerce(FieldRule("d", Kind.DATE), "1066-10-14")


def _col(kind: ColumnType, lo: float | None, hi: float | None) -> Column:
    return Column(type=kind, nullable=False, min=lo, max=hi)


def test_ratio_bounds_follow_from_the_contract_ranges() -> None:
    f, i = ColumnType.FLOAT, ColumnType.INT
    lo, hi = ratio_bounds(_col(f, 0, 1e6), _col(f, 1, 120))
    assert lo <= 0 <= lo + 1e-9 and hi == pytest.approx(1e6)
    # a float denominator reaching 0 leaves the top open; an int one is at least 1 away
    assert ratio_bounds(_col(f, 0, 2e6), _col(f, 0, 60))[1] is None
    assert ratio_bounds(_col(i, 0, 100), _col(i, 0, None))[1] == pytest.approx(100)
    assert ratio_bounds(_col(f, -5, 5), _col(f, -2, 3)) == (None, None)
    lo, hi = ratio_bounds(_col(f, 2, 4), _col(f, -4, -1))
    assert (lo, hi) == (pytest.approx(-4), pytest.approx(-0.5))
