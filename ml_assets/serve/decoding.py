"""Request bodies and request errors: what HTTP and gRPC share before any field is checked.

:class:`RequestError` is every problem a request can have, with an HTTP status, a gRPC-friendly
:class:`ErrorCode` and messages naming the field (``records[3].car_value: expected a number,
got "abc"``). :func:`check_content_type`, :func:`too_large`, :func:`decode_json` (orjson; a slow
path keeps NaN and Infinity literals as :class:`NonFinite` so that validation can name their
field), :func:`records_of` and :func:`check_count` take a body apart down to its list of
records; :func:`show` writes a value back as the client sent it, for messages.

Apart from the field rules (:mod:`ml_assets.serve.fields`) and record schemas
(:mod:`ml_assets.serve.validation`): none of this depends on a dataset. No pandas, no pydantic.
"""

from __future__ import annotations

import json
import math
import re
from enum import StrEnum
from typing import Any

import orjson

MAX_ERRORS = 20
JSON_TYPES = ("application/json",)


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "invalid_argument"
    BAD_JSON = "bad_json"
    TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNAVAILABLE = "unavailable"
    BAD_HEADER = "bad_header"
    TIMEOUT = "request_timeout"


HTTP_STATUS = {
    ErrorCode.INVALID_ARGUMENT: 422,
    ErrorCode.BAD_JSON: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.BAD_HEADER: 400,
    ErrorCode.TIMEOUT: 408,
}


class RequestError(Exception):
    """A request that cannot be served as sent; ``problems`` are (field, message) pairs."""

    def __init__(self, code: ErrorCode, problems: list[tuple[str, str]]) -> None:
        self.code = code
        self.problems = problems
        super().__init__(self.message)

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]

    @property
    def message(self) -> str:
        shown = [f"{f}: {m}" if f else m for f, m in self.problems[:MAX_ERRORS]]
        more = len(self.problems) - MAX_ERRORS
        return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code.value,
                "message": self.message,
                "fields": [{"field": f, "message": m} for f, m in self.problems[:MAX_ERRORS]],
            }
        }


def invalid(where: str, message: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_ARGUMENT, [(where, message)])


# --- values in messages ----------------------------------------------------------------------


class NonFinite:
    """A NaN or Infinity literal found by the slow JSON path, kept to name its field."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def __repr__(self) -> str:
        return self.literal


def show(value: Any, limit: int = 60) -> str:
    """A value as the client wrote it (JSON), shortened."""
    if isinstance(value, NonFinite):
        return value.literal
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    try:
        text = orjson.dumps(value, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- bodies ----------------------------------------------------------------------------------


def check_content_type(content_type: str | None) -> None:
    """Only JSON is accepted (not form data, not BentoML's pickle content type), and only as
    UTF-8: a ``charset`` parameter, when given, must say so."""
    media, _, params = (content_type or "").partition(";")
    media = media.strip().lower()
    if media not in JSON_TYPES:
        got = f'"{content_type}"' if content_type else "none"
        raise RequestError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            [("content-type", f"expected application/json, got {got}")],
        )
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            raise RequestError(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                [("content-type", f'charset "{value.strip()}" is not accepted: send UTF-8 JSON')],
            )


def check_content_encoding(encoding: str | None) -> None:
    """Bodies are taken as sent: a compressed one (``Content-Encoding: gzip``, ...) is refused
    with 415 rather than misread as JSON (and never inflated without bound)."""
    if encoding is None:
        return
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    if any(c != "identity" for c in codings):
        raise RequestError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            [
                (
                    "content-encoding",
                    f'"{encoding}" is not accepted: send the body uncompressed (identity)',
                )
            ],
        )


def too_large(size: int, limit: int) -> RequestError:
    return RequestError(
        ErrorCode.TOO_LARGE, [("body", f"{size} bytes is more than the limit of {limit} bytes")]
    )


def decode_json(body: bytes) -> Any:
    """Parse a JSON body: UTF-8 only (RFC 8259 section 8.1), no byte order mark, no object
    with a key twice. NaN and Infinity literals (not JSON) are kept as :class:`NonFinite` so
    that validation can name their field; anything else is a BAD_JSON error saying what and
    where (the byte offset of invalid UTF-8, the duplicated key and its object).

    The fast path is orjson plus a duplicate-key screen that costs a few byte scans
    (:func:`_surely_unique_keys`); a body the screen cannot clear is parsed once more by the
    standard library with a hook that sees every key.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _decode_slow(body, exc)
    if _surely_unique_keys(body, value):
        return value
    _decode_slow(body, None)  # raises on a duplicate key
    return value


def _bad(message: str) -> RequestError:
    return RequestError(ErrorCode.BAD_JSON, [("body", message)])


_UTF8 = "only UTF-8 JSON is accepted (RFC 8259)"


def _decode_slow(body: bytes, orjson_error: Exception | None) -> Any:
    """The standard library's parse of ``body`` as strict UTF-8 text, naming every problem."""
    if body.startswith(b"\xef\xbb\xbf"):
        raise _bad(f"starts with a UTF-8 byte order mark: {_UTF8}, without a BOM")
    if body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body[:4]:
        raise _bad(f"looks like UTF-16 or UTF-32: {_UTF8}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(
            f"not valid UTF-8 at byte {exc.start} ({body[exc.start : exc.start + 1]!r}): {_UTF8}"
        ) from None
    try:
        value = json.loads(text, parse_constant=NonFinite, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as dup:
        raise RequestError(
            ErrorCode.BAD_JSON, [(dup.key, "appears twice in one object: send each key once")]
        ) from None
    except (ValueError, RecursionError) as exc:
        reason = orjson_error if orjson_error is not None else exc
        raise _bad(f"not valid JSON: {reason}") from None
    if orjson_error is not None:
        _check_unicode(value)
    return value


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return out


_SPACE_BEFORE_COLON = re.compile(rb'"\s+:')


def _surely_unique_keys(body: bytes, value: Any) -> bool:
    """True when ``body`` (already parsed by orjson into ``value``) certainly has no object
    with a key twice; False when it may (then the slow path looks).

    Without a backslash every ``"`` in the body delimits a string, so ``":`` ends exactly the
    keys written without white space before their colon. When there is no ``" :`` either,
    the count of ``":`` is the number of keys in the text; it equals the keys of the parsed
    request object and its records only when no key was dropped (a duplicate) and nothing
    deeper has keys (a nested object, which validation rejects anyway).
    """
    if type(value) is not dict or b"\\" in body or _SPACE_BEFORE_COLON.search(body):
        return False
    keys = len(value)
    records = value.get("records")
    if type(records) is list:
        keys += sum(len(r) for r in records if type(r) is dict)
    return body.count(b'":') == keys


def _check_unicode(value: Any) -> None:
    """Reject strings with an unpaired surrogate escape (``"\\ud800"``): valid JSON syntax,
    but not Unicode text, and nothing downstream can encode it."""
    try:
        orjson.dumps(value, default=lambda _: None)
    except orjson.JSONEncodeError:
        raise _bad(
            'a string holds an unpaired UTF-16 surrogate escape (e.g. "\\ud800"): not valid '
            "Unicode text"
        ) from None


def records_of(payload: Any, max_records: int) -> list[Any]:
    """The ``records`` list of a request object: present, a non-empty list, not too long."""
    if type(payload) is not dict:
        raise invalid("body", f'expected a JSON object with "records", got {show(payload)}')
    if len(payload) != 1 or "records" not in payload:
        unknown = [k for k in payload if k != "records"]
        if unknown:
            raise invalid(str(unknown[0]), 'unknown field (a request has only "records")')
        raise invalid("records", "missing")
    records = payload["records"]
    if type(records) is not list:
        raise invalid("records", f"expected a list of records, got {show(records)}")
    check_count(len(records), max_records)
    return records


def check_count(n: int, max_records: int) -> None:
    if n == 0:
        raise invalid("records", "empty batch: send at least one record")
    if n > max_records:
        raise RequestError(
            ErrorCode.TOO_LARGE,
            [("records", f"{n} records is more than the limit of {max_records} per request")],
        )
