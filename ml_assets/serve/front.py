"""The front door of a worker's HTTP server: known routes only, bounded metric labels, an
offline docs page.

BentoML labels its HTTP traffic metrics (``bentoml_service_request_total`` and
``..._request_duration_seconds``) with the raw request path, so every distinct unknown path a
scanner tries adds series for the life of the worker (3,000 such requests: +82 MB, and a
24 MB ``/metrics``). BentoML has no setting for this (its ``skip_paths`` only skips the
last-request gauge), so :func:`install` replaces the middleware class BentoML builds the app
with by a subclass that labels a request with its route (one of :data:`ROUTES`) or
``unmatched``, and puts :class:`FrontDoor` right inside it. The front door answers every
unmatched path with our JSON 404 before BentoML's routing sees it, and ``GET /`` with
:data:`DOCS_HTML`: a self-contained page (no scripts, no third-party requests, a CSP that
forbids loading anything) pointing at ``/v1/openapi.json``, instead of BentoML's Swagger UI,
which embeds a third-party tag manager.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

log = logging.getLogger(__name__)

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

UNMATCHED = "unmatched"
RAW_PATH = "ml_assets.raw_path"
BENTOML_ROUTES = ("/livez", "/healthz", "/readyz", "/metrics", "/schema.json")
"""BentoML's own routes that stay: health, readiness, metrics, and the service schema its
clients read. Its Swagger UI (``/``), ``/docs.json`` and ``/static_content/`` do not."""
MOUNT_ROUTES = ("/predict", "/predict_by_keys", "/model", "/openapi.json")

DOCS_HTML = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ml_assets prediction service</title>
<style>body{font-family:sans-serif;max-width:46em;margin:2em auto;line-height:1.4}
code{background:#eee;padding:0 .2em}</style></head><body>
<h1>ml_assets prediction service</h1>
<p>The API is described by its OpenAPI document: <a href="v1/openapi.json">/v1/openapi.json</a>
(fields, types, ranges and categories from the dataset's contract). Load it into any OpenAPI
viewer or client generator you run yourself; this page loads nothing from anywhere.</p>
<ul>
<li><code>POST /v1/predict</code>: <code>{"records": [feature rows]}</code></li>
<li><code>POST /v1/predict_by_keys</code>: <code>{"records": [entity records]}</code></li>
<li><code>GET /v1/model</code>: what is served</li>
<li><code>GET /livez</code>, <code>GET /readyz</code>, <code>GET /metrics</code></li>
</ul>
<p>Bodies are UTF-8 JSON (<code>Content-Type: application/json</code>), uncompressed; gRPC
serves the same operations (<code>ml_assets.serving.v1.Predictor</code>).</p>
</body></html>
"""
DOCS_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"content-length", str(len(DOCS_HTML)).encode()),
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'"),
    (b"x-content-type-options", b"nosniff"),
]


def routes(mount: str) -> frozenset[str]:
    """Every path the server answers (besides 404s): BentoML's kept routes, ``/`` and ours."""
    return frozenset({"/", *BENTOML_ROUTES, *(mount + r for r in MOUNT_ROUTES)})


class FrontDoor:
    """ASGI middleware: unknown paths get a JSON 404 here, ``/`` the offline docs page."""

    def __init__(self, app: ASGIApp, known: frozenset[str]) -> None:
        self.app = app
        self.known = known

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.pop(RAW_PATH, None)
        if path is not None:  # relabelled for the metrics: route on the real path
            scope = {**scope, "path": path}
        path = scope["path"]
        if path == "/":
            if scope["method"] in ("GET", "HEAD"):
                await _send(send, 200, DOCS_HEADERS, DOCS_HTML)
            else:
                await _json(send, 405, "method_not_allowed", "use GET /", [(b"allow", b"GET")])
            return
        if path not in self.known:
            await _json(send, 404, "not_found", "no such route; see GET /v1/openapi.json")
            return
        await self.app(scope, receive, send)


async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(
    send: Any, status: int, code: str, message: str, extra: list[tuple[bytes, bytes]] = ()
) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message, "fields": []}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await _send(send, status, headers, body)


def install(mount: str) -> None:
    """Make the BentoML app of this process label its traffic metrics by route and put the
    :class:`FrontDoor` in front of everything else (idempotent). Call before BentoML builds
    the worker's app, i.e. when the service module is imported."""
    from bentoml._internal.server.http import instruments

    base = instruments.RunnerTrafficMetricsMiddleware
    if getattr(base, "ml_assets_front_door", False):
        return
    known = routes(mount)

    class BoundedTrafficMetrics(base):  # type: ignore[misc, valid-type]
        """BentoML's traffic metrics, labelled by route (or ``unmatched``), not by raw path."""

        ml_assets_front_door = True

        def __init__(self, app: ASGIApp, **options: Any) -> None:
            super().__init__(FrontDoor(app, known), **options)

        async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                path = scope["path"]
                if path not in known:
                    scope = {**scope, "path": UNMATCHED, RAW_PATH: path}
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = BoundedTrafficMetrics
    log.debug("BentoML HTTP metrics labelled by route; unmatched paths answered by ml_assets")
