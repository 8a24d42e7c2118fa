"""Connection limits of a worker's HTTP server that uvicorn has no setting for.

uvicorn (which BentoML runs every HTTP worker on) times out only idle keep-alive connections:
a client that opens a connection and sends its request head slowly, or never finishes it, holds
the connection indefinitely (uvicorn issue #157, "timeout-request-start", is open), and BentoML
passes no ``limit_concurrency`` to it. The request *body* is timed by our ASGI app
(:class:`~ml_assets.serve.http_app.HttpApp`, 408); this module covers what happens before the
app sees a request: :func:`install` makes uvicorn's HTTP protocol of this process one that

* answers 408 and closes a connection whose request head is not complete ``header_timeout``
  seconds after the connection opened or the request began (the keep-alive timer covers the
  idle time between requests, as before), and
* answers 503 and closes a new connection while the worker already holds ``max_connections``.

Only the httptools protocol (uvicorn's default when httptools is installed, as with BentoML)
has the parser callbacks this needs; with another one :func:`install` logs that and does
nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


def _raw_response(status: bytes, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response with our JSON error body, closing the connection."""
    import orjson

    body = orjson.dumps({"error": {"code": code, "message": message, "fields": []}})
    head = (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


TIMEOUT_RESPONSE = _raw_response(
    b"408 Request Timeout", "request_timeout", "request head not received in time"
)
BUSY_RESPONSE = _raw_response(b"503 Service Unavailable", "unavailable", "too many connections")


def install(header_timeout: float, max_connections: int) -> None:
    """Make uvicorn in this process use the guarded protocol (idempotent). Call before the
    worker's uvicorn config loads (when the service module is imported)."""
    from uvicorn.protocols.http import auto

    base = auto.AutoHTTPProtocol
    if getattr(base, "ml_assets_guarded", False):
        return
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools comes with BentoML
        HttpToolsProtocol = None
    if HttpToolsProtocol is None or base is not HttpToolsProtocol:
        log.warning("uvicorn protocol %s: no request-head timeout or connection limit", base)
        return

    class GuardedProtocol(base):  # type: ignore[misc, valid-type]
        """uvicorn's httptools protocol with a request-head deadline and a connection cap."""

        ml_assets_guarded = True
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("refused a connection: %d open", len(self.connections) - 1)
                transport.write(BUSY_RESPONSE)
                transport.close()
                return
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout, self._head_too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _head_too_slow(self) -> None:
            self._deadline = None
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(TIMEOUT_RESPONSE)
                self.transport.close()

    auto.AutoHTTPProtocol = GuardedProtocol
    log.debug("uvicorn: request heads within %g s, at most %d connections", header_timeout,
              max_connections)  # fmt: skip
