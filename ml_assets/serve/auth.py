"""Optional bearer-token authentication of the serving endpoints, HTTP and gRPC.

Off unless ``ML_ASSETS_SERVE_TOKEN`` is set when the server starts (the token is never
written into a Bento). When set, every request to the service's own routes (HTTP ``/v1/...``:
predict, predict by keys, model, OpenAPI; gRPC ``ml_assets.serving.v1.Predictor``) must carry
``Authorization: Bearer <token>`` (gRPC: ``authorization`` metadata); the token is compared in
constant time (:func:`hmac.compare_digest`). Without it: HTTP 401 with ``WWW-Authenticate:
Bearer``, gRPC UNAUTHENTICATED. Open on purpose: liveness and readiness (``/livez``,
``/readyz``, gRPC ``grpc.health.v1.Health``, which orchestrators probe without credentials),
``/metrics`` (Prometheus scrapes; counts and latencies only, no inputs) and the static docs
page at ``/``. Both ports listen on loopback unless exposed on purpose; exposed, put TLS in
front (a reverse proxy): a bearer token over plain HTTP is readable on the network.
"""

from __future__ import annotations

import hmac
from typing import Any

import grpc

BEARER = b"bearer "
CHALLENGE = b'Bearer realm="ml_assets"'


class TokenCheck:
    """Checks an ``Authorization`` value against the configured token (constant time)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode("utf-8")

    def allows(self, header: bytes | str | None) -> bool:
        """Whether ``header`` (the ``Authorization`` value) is ``Bearer <the token>``."""
        if header is None:
            return False
        value = header.encode("latin-1") if isinstance(header, str) else header
        if value[: len(BEARER)].lower() != BEARER:
            return False
        return hmac.compare_digest(value[len(BEARER) :].strip(), self._token)


class GrpcTokenInterceptor(grpc.ServerInterceptor):
    """Refuses calls to ``service`` (UNAUTHENTICATED) without the bearer token; other services
    (health, reflection) pass."""

    def __init__(self, check: TokenCheck, service: str) -> None:
        self.check = check
        self.prefix = f"/{service}/"

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a bearer token is required")

        self._deny = grpc.unary_unary_rpc_method_handler(
            deny, request_deserializer=lambda data: data
        )

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        if not handler_call_details.method.startswith(self.prefix):
            return continuation(handler_call_details)
        given = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value
                break
        if self.check.allows(given):
            return continuation(handler_call_details)
        return self._deny
