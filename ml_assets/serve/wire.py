"""gRPC request bytes to plain records, with the errors protobuf's own parsing hides.

grpcio deserializes a request before the servicer runs: a truncated message, garbage bytes or
invalid UTF-8 in a string field then fails the call with INTERNAL "Exception deserializing
request!", and a ``map<string, Value>`` keeps the last of two entries with the same key. The
service therefore takes the raw bytes (:mod:`ml_assets.serve.grpc_server`) and parses them here
into a *wire view* of ``PredictRequest``: the same bytes, with each record's map read as what
it is on the wire, a repeated (key, value) entry. That keeps every entry, so a key given twice
is an error naming the field; a message that does not parse is an error with a reason
(invalid UTF-8 is told apart by parsing once more with strings as bytes). Every error is a
:class:`~ml_assets.serve.decoding.RequestError`, INVALID_ARGUMENT on the wire.

The view's message types live in their own descriptor pool, built here from the layout of
``bentos/predictor.proto`` (field numbers and types are the wire contract; a test checks that
the view reads what the generated ``PredictRequest`` writes).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from ml_assets.serve.decoding import ErrorCode, RequestError, invalid

_PACKAGE = "ml_assets.serving.v1.wire"


def _view_classes(strings: str) -> Any:
    """The wire view's ``PredictRequest`` class; ``strings`` is the protobuf type of string
    fields (``string``, as served, or ``bytes``, to find invalid UTF-8)."""
    f = descriptor_pb2.FieldDescriptorProto
    text = f.TYPE_STRING if strings == "string" else f.TYPE_BYTES
    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    file = descriptor_pb2.FileDescriptorProto(
        name=f"ml_assets/serve/wire_{strings}.proto", package=_PACKAGE, syntax="proto3"
    )
    value = file.message_type.add(name="Value")
    value.oneof_decl.add(name="kind")
    for name, number, ftype in (
        ("null_value", 1, f.TYPE_INT32),  # an enum on the wire: a varint
        ("number_value", 2, f.TYPE_DOUBLE),
        ("int_value", 3, f.TYPE_INT64),
        ("string_value", 4, text),
        ("bool_value", 5, f.TYPE_BOOL),
    ):
        value.field.add(name=name, number=number, type=ftype, label=opt, oneof_index=0)
    entry = file.message_type.add(name="Entry")
    entry.field.add(name="key", number=1, type=text, label=opt)
    entry.field.add(
        name="value", number=2, type=f.TYPE_MESSAGE, label=opt, type_name=f".{_PACKAGE}.Value"
    )
    record = file.message_type.add(name="Record")
    record.field.add(
        name="fields", number=1, type=f.TYPE_MESSAGE, label=rep, type_name=f".{_PACKAGE}.Entry"
    )
    request = file.message_type.add(name="PredictRequest")
    request.field.add(
        name="records", number=1, type=f.TYPE_MESSAGE, label=rep, type_name=f".{_PACKAGE}.Record"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.PredictRequest"))


WireRequest = _view_classes("string")
_BytesRequest = _view_classes("bytes")


def _value(v: Any, field: str) -> Any:
    """A ``Value``'s content; one with no kind set is an error, not a null: a client that
    forgot to set it would otherwise be answered as if it had sent a missing value (the
    fuzzer found that; ``null_value`` says null)."""
    kind = v.WhichOneof("kind")
    if kind is None:
        raise invalid(field, "a Value with no kind set (send null_value for null)")
    if kind == "null_value":
        return None
    return getattr(v, kind)


def parse_request(data: bytes) -> Any:
    """The wire view of a serialized ``PredictRequest``, or INVALID_ARGUMENT saying why not."""
    try:
        return WireRequest.FromString(data)
    except DecodeError:
        raise RequestError(ErrorCode.INVALID_ARGUMENT, [("", _why_not(data))]) from None


def records_of_request(request: Any) -> list[dict[str, Any]]:
    """The records of a parsed wire view as plain dicts; a key twice in a record is an error."""
    out = []
    for i, r in enumerate(request.records):
        entries = r.fields
        rec = {e.key: _value(e.value, f"records[{i}].{e.key}") for e in entries}
        if len(rec) != len(entries):
            seen: set[str] = set()
            for e in entries:
                if e.key in seen:
                    raise invalid(
                        f"records[{i}].{e.key}", "given twice (two map entries with this key)"
                    )
                seen.add(e.key)
        out.append(rec)
    return out


def _why_not(data: bytes) -> str:
    """Why ``data`` is no ``PredictRequest``: invalid UTF-8 in a named string, or malformed."""
    try:
        raw = _BytesRequest.FromString(data)
    except DecodeError:
        return (
            f"the request ({len(data)} bytes) is not a valid ml_assets.serving.v1.PredictRequest "
            "message (truncated or not protobuf)"
        )
    for i, r in enumerate(raw.records):
        for j, e in enumerate(r.fields):
            key = _utf8(e.key)
            if key is None:
                return f"records[{i}]: the key of field entry {j} is not valid UTF-8"
            if e.value.WhichOneof("kind") == "string_value" and _utf8(e.value.string_value) is None:
                return f"records[{i}].{key}: string_value is not valid UTF-8"
    return "the request is not a valid ml_assets.serving.v1.PredictRequest message"


def _utf8(b: bytes) -> str | None:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return None
