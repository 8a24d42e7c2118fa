"""The HTTP hot path: a bare ASGI app, mounted into the BentoML service at ``/v1``.

Why not ``@bentoml.api``: measured on this machine, BentoML's per-request machinery (pydantic
IO descriptors, its request/response objects, context, tracing spans, access log) costs more
than validating and scoring a record. A raw ASGI callable reads the body, checks it against the
contract-generated schema and scores it with nothing else in between. BentoML still owns the
process: ``bentoml serve`` starts it, and ``/livez``, ``/readyz`` and ``/metrics`` are BentoML's.

Routes (relative to the mount):

* ``POST /predict``: ``{"records": [feature rows]}``, a row optionally with the entity key and
  event time (logged, echoed, never scored: :func:`~ml_assets.serve.validation.id_schema`);
* ``POST /predict_by_keys``: ``{"records": [entity records]}``;
* ``GET /model``: what is served; ``GET /openapi.json``: the OpenAPI description.

Errors are JSON ``{"error": {"code", "message", "fields"}, "request_id"}`` with a 4xx status
(400 bad JSON, a key twice, not UTF-8, or a bad ``X-Request-Id``; 401 with ``WWW-Authenticate``
without the bearer token when one is configured (:mod:`ml_assets.serve.auth`); 405 with
``Allow``; 404; 408
body not received within the time limit; 413 too large; 415 not JSON, not UTF-8 or
compressed; 422 invalid records) or 503 while not ready, while the prediction log cannot take
more (:class:`~ml_assets.serve.prediction_log.PredictionLog`), or when the worker already has
``max_in_flight`` prediction requests in progress (shed at once with ``Retry-After: 1``, the
body unread: uvicorn discards it or closes the connection); an unexpected exception is a logged
500 that never leaks a traceback.

``request_id`` (body and ``X-Request-Id`` response header) is the server's own, unique per
request, and is the prediction log's ``request_id``; a client's ``X-Request-Id`` (at most 128
printable ASCII characters) is echoed as ``client_request_id`` / ``X-Client-Request-Id`` and
logged in the ``client_request_id`` column.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from ml_assets.serve.auth import CHALLENGE
from ml_assets.serve.decoding import (
    ErrorCode,
    RequestError,
    check_content_encoding,
    check_content_type,
    decode_json,
    records_of,
    too_large,
)
from ml_assets.serve.runtime import (
    PREDICT,
    PREDICT_BY_KEYS,
    ServingRuntime,
    client_request_id,
    new_request_id,
)

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


class HttpApp:
    """ASGI app serving a :class:`ServingRuntime` that may appear later (the service's init).

    ``runtime`` is a callable returning the runtime or None while it is not loaded yet.
    """

    def __init__(
        self,
        runtime: Callable[[], ServingRuntime | None],
        *,
        max_body_bytes: int,
        openapi: Callable[[ServingRuntime], dict[str, Any]] | None = None,
        body_timeout: float = 10.0,
        token: str = "",
        max_in_flight: int = 0,
    ) -> None:
        from ml_assets.serve.auth import TokenCheck

        self.runtime = runtime
        self.auth = TokenCheck(token) if token else None
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.openapi = openapi
        self.max_in_flight = max_in_flight
        """Most prediction requests in progress in this worker (0: no limit); beyond, 503."""
        self.in_flight = 0
        self._openapi_body: bytes | None = None
        self.routes: dict[str, tuple[str, str]] = {
            "/predict": ("POST", PREDICT),
            "/predict_by_keys": ("POST", PREDICT_BY_KEYS),
            "/model": ("GET", "model"),
            "/openapi.json": ("GET", "openapi"),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter_ns()
        path: str = scope["path"]
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root) :]
        route = self.routes.get(path)
        headers = dict(scope["headers"])
        request_id = new_request_id()
        try:
            given = client_request_id(_text(headers.get(b"x-request-id")))
        except RequestError as exc:
            await _respond(send, exc.status, _error_body(exc, request_id), request_id)
            return
        if self.auth is not None and not self.auth.allows(headers.get(b"authorization")):
            # before routing: without the token nothing of the API is revealed, not even 404
            await _error(
                send, 401, "unauthenticated", "a bearer token is required", request_id, given,
                extra=[(b"www-authenticate", CHALLENGE)],
            )  # fmt: skip
            return
        if route is None:
            await _error(send, 404, "not_found", f"no route {path}", request_id, given)
            return
        method, name = route
        if scope["method"] != method:
            await _error(
                send, 405, "method_not_allowed", f"use {method} {path}", request_id, given,
                extra=[(b"allow", method.encode())],
            )  # fmt: skip
            return
        runtime = self.runtime()
        if runtime is None:
            await _error(
                send, 503, ErrorCode.UNAVAILABLE.value, "model not loaded yet", request_id, given
            )
            return
        if name == "model":
            await _respond(send, 200, orjson.dumps(runtime.info()), request_id, given)
            return
        if name == "openapi":
            if self._openapi_body is None and self.openapi is not None:
                self._openapi_body = orjson.dumps(self.openapi(runtime))
            await _respond(send, 200, self._openapi_body or b"{}", request_id, given)
            return
        if self.max_in_flight and self.in_flight >= self.max_in_flight:
            # shed at once, before reading the body: a queue would only add latency to every
            # request behind it (the event loop scores one request at a time)
            if runtime.metrics is not None:
                seconds = (time.perf_counter_ns() - started) / 1e9
                runtime.metrics.observe_request(name, "http", "503", seconds, 0)
            await _error(
                send, 503, ErrorCode.UNAVAILABLE.value,
                f"overloaded: {self.in_flight} requests in progress in this worker, at most "
                f"{self.max_in_flight} (max_concurrency); retry after a second",
                request_id, given, extra=[(b"retry-after", b"1")],
            )  # fmt: skip
            return
        self.in_flight += 1
        try:
            await self._predict(runtime, name, headers, receive, send, request_id, given, started)
        finally:
            self.in_flight -= 1

    async def _predict(
        self,
        runtime: ServingRuntime,
        endpoint: str,
        headers: dict[bytes, bytes],
        receive: Receive,
        send: Send,
        request_id: str,
        given: str | None,
        started: int,
    ) -> None:
        status = 500
        rows = 0
        try:
            check_content_type(_text(headers.get(b"content-type")))
            check_content_encoding(_text(headers.get(b"content-encoding")))
            body = await self._body(headers, receive)
            records = records_of(decode_json(body), runtime.max_records)
            method = runtime.predict if endpoint == PREDICT else runtime.predict_by_keys
            outcome = method(
                records,
                request_id=request_id,
                protocol="http",
                started_ns=started,
                client_request_id=given,
            )
            payload = outcome.to_json()
            status, rows = 200, len(records)
        except RequestError as exc:
            status = exc.status
            payload = _error_body(exc, request_id, given)
        except Exception:
            log.exception("request %s to %s failed", request_id, endpoint)
            payload = orjson.dumps(
                {
                    "error": {"code": "internal", "message": "internal error", "fields": []},
                    "request_id": request_id,
                }
            )
        finally:
            if runtime.metrics is not None:
                seconds = (time.perf_counter_ns() - started) / 1e9
                runtime.metrics.observe_request(endpoint, "http", str(status), seconds, rows)
        await _respond(send, status, payload, request_id, given)

    async def _body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        """The whole body, within the size limit and the time limit (a client trickling its
        body gets 408 and its connection closed, not a worker slot held indefinitely)."""
        limit = self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(int(declared), limit)
        deadline = time.monotonic() + self.body_timeout
        parts: list[bytes] = []
        size = 0
        more = True
        while more:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                raise RequestError(
                    ErrorCode.TIMEOUT,
                    [("body", f"not received within {self.body_timeout:g} s ({size} bytes came)")],
                ) from None
            if message["type"] == "http.disconnect":
                raise RequestError(ErrorCode.BAD_JSON, [("body", "client disconnected")])
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(size, limit)
            parts.append(chunk)
            more = message.get("more_body", False)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _error_body(exc: RequestError, request_id: str, given: str | None = None) -> bytes:
    body = {**exc.to_json(), "request_id": request_id}
    if given is not None:
        body["client_request_id"] = given
    return orjson.dumps(body)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    request_id: str,
    given: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        *JSON_HEADERS,
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if given is not None:
        headers.append((b"x-client-request-id", given.encode()))
    if status in (408, 413):  # the rest of the body is not read: do not reuse the connection
        headers.append((b"connection", b"close"))
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: Send,
    status: int,
    code: str,
    message: str,
    request_id: str,
    given: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload: dict[str, Any] = {
        "error": {"code": code, "message": message, "fields": []},
        "request_id": request_id,
    }
    if given is not None:
        payload["client_request_id"] = given
    await _respond(send, status, orjson.dumps(payload), request_id, given, extra)
