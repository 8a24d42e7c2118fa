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


HTTP_STATUS = {
    ErrorCode.INVALID_ARGUMENT: 422,
    ErrorCode.BAD_JSON: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.UNAVAILABLE: 503,
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
    """Only JSON is accepted (not form data, not BentoML's pickle content type)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in JSON_TYPES:
        got = f'"{content_type}"' if content_type else "none"
        raise RequestError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            [("content-type", f"expected application/json, got {got}")],
        )


def too_large(size: int, limit: int) -> RequestError:
    return RequestError(
        ErrorCode.TOO_LARGE, [("body", f"{size} bytes is more than the limit of {limit} bytes")]
    )


def decode_json(body: bytes) -> Any:
    """Parse a JSON body. NaN and Infinity literals (not JSON) are kept as :class:`NonFinite` so
    that validation can name their field; anything else unparsable is a BAD_JSON error."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body, parse_constant=NonFinite)
        except (ValueError, RecursionError):
            raise RequestError(ErrorCode.BAD_JSON, [("body", f"not valid JSON: {exc}")]) from None


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
