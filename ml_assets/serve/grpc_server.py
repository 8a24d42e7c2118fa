"""The gRPC side of the service: grpcio, the checked-in ``bentos/predictor.proto``.

BentoML's own gRPC server only serves legacy ``bentoml.Service`` and fails to import with
protobuf >= 6.30, so the service starts this one itself (in its init, in every worker: the
workers share the port through SO_REUSEPORT). The servicer is a thin translation: protobuf
records -> plain Python records -> the very same :class:`ServingRuntime` methods, validation
and prediction log as HTTP -> protobuf response. A ``Predict`` record's optional key and
event time travel as any field does (the key as its typed value, the event time as an ISO 8601
``string_value``, decoded as ``PredictByKeys`` decodes it). A :class:`RequestError` becomes
INVALID_ARGUMENT (RESOURCE_EXHAUSTED when too large, UNAVAILABLE when the store is down) with
the message naming the field. The standard ``grpc.health.v1`` health service and server
reflection are served too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ml_assets.serve import predictor_pb2 as pb
from ml_assets.serve import predictor_pb2_grpc as pb_grpc
from ml_assets.serve.decoding import ErrorCode, RequestError, check_count
from ml_assets.serve.runtime import (
    PREDICT,
    PREDICT_BY_KEYS,
    Outcome,
    ServingRuntime,
    client_request_id,
    new_request_id,
)
from ml_assets.serve.wire import parse_request, records_of_request

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Predictor"].full_name
GRPC_CODES = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.BAD_JSON: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.BAD_HEADER: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def _metadata(context: Any, name: str) -> str | None:
    for key, value in context.invocation_metadata():
        if key == name:
            return value if isinstance(value, str) else None
    return None


def predictor_handler(servicer: PredictorServicer) -> grpc.GenericRpcHandler:
    """The Predictor service with Predict and PredictByKeys taking raw request bytes: grpcio
    then never fails a call in its own deserializer (INTERNAL), the servicer parses and
    answers INVALID_ARGUMENT with the reason (:mod:`ml_assets.serve.wire`)."""
    handlers = {
        "Predict": grpc.unary_unary_rpc_method_handler(
            servicer.Predict, response_serializer=pb.PredictResponse.SerializeToString
        ),
        "PredictByKeys": grpc.unary_unary_rpc_method_handler(
            servicer.PredictByKeys, response_serializer=pb.PredictResponse.SerializeToString
        ),
        "ModelInfo": grpc.unary_unary_rpc_method_handler(
            servicer.ModelInfo,
            request_deserializer=lambda _: pb.ModelInfoRequest(),  # no fields: nothing to read
            response_serializer=pb.ModelInfoResponse.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def _set_value(target: pb.Value, v: Any) -> None:
    if v is None:
        target.null_value = pb.NULL_VALUE
    elif isinstance(v, bool):
        target.bool_value = v
    elif isinstance(v, int):
        target.int_value = v
    elif isinstance(v, float):
        target.number_value = v
    else:
        target.string_value = str(v)


def response_from_outcome(outcome: Outcome) -> pb.PredictResponse:
    """The protobuf response of an outcome (same content as the HTTP JSON)."""
    resp = pb.PredictResponse(request_id=outcome.request_id, model_version=outcome.model_version)
    for item in outcome.predictions():
        p = resp.predictions.add()
        if "label" in item:
            _set_value(p.label, item["label"])
        if "probability" in item:
            p.probability = item["probability"]
        if "probabilities" in item:
            p.probabilities.update(item["probabilities"])
        if "value" in item:
            p.value = item["value"]
        for k, v in item.get("key", {}).items():
            _set_value(p.key[k], v)
    return resp


class PredictorServicer(pb_grpc.PredictorServicer):
    """Predictor RPCs over the shared runtime."""

    def __init__(self, runtime: Callable[[], ServingRuntime | None]) -> None:
        self.runtime = runtime

    def _call(self, endpoint: str, data: bytes, context: Any) -> pb.PredictResponse:
        """One Predict / PredictByKeys call on the request's raw bytes (see
        :mod:`ml_assets.serve.wire`: a malformed message is INVALID_ARGUMENT, not INTERNAL)."""
        started = time.perf_counter_ns()
        request_id = new_request_id()
        metadata = [("x-request-id", request_id)]
        runtime = self.runtime()
        if runtime is None:
            context.set_trailing_metadata(metadata)
            context.abort(grpc.StatusCode.UNAVAILABLE, "model not loaded yet")
        assert runtime is not None
        status, message, rows = grpc.StatusCode.INTERNAL, "internal error", 0
        try:
            given = client_request_id(_metadata(context, "x-request-id"))
            if given is not None:
                metadata.append(("x-client-request-id", given))
            request = parse_request(data)
            check_count(len(request.records), runtime.max_records)
            records = records_of_request(request)
            method = runtime.predict if endpoint == PREDICT else runtime.predict_by_keys
            outcome = method(
                records,
                request_id=request_id,
                protocol="grpc",
                started_ns=started,
                client_request_id=given,
            )
            response = response_from_outcome(outcome)
            status, rows = grpc.StatusCode.OK, len(records)
            context.set_trailing_metadata(metadata)
            return response
        except RequestError as exc:
            status, message = GRPC_CODES[exc.code], exc.message
        except Exception:
            log.exception("gRPC %s %s failed", endpoint, request_id)
        finally:
            if runtime.metrics is not None:
                seconds = (time.perf_counter_ns() - started) / 1e9
                runtime.metrics.observe_request(endpoint, "grpc", status.name, seconds, rows)
        context.set_trailing_metadata(metadata)
        context.abort(status, message)
        raise AssertionError("unreachable")  # pragma: no cover - abort raises

    def Predict(self, request: bytes, context: Any) -> pb.PredictResponse:
        return self._call(PREDICT, request, context)

    def PredictByKeys(self, request: bytes, context: Any) -> pb.PredictResponse:
        return self._call(PREDICT_BY_KEYS, request, context)

    def ModelInfo(self, request: pb.ModelInfoRequest, context: Any) -> pb.ModelInfoResponse:
        runtime = self.runtime()
        if runtime is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "model not loaded yet")
        assert runtime is not None
        info = runtime.info()
        return pb.ModelInfoResponse(
            dataset=info["dataset"],
            model_version=info["model_version"],
            problem_type=info["problem_type"],
            features=info["features"],
            classes=[str(c) for c in info["classes"]],
            bentoml_model=info["bentoml_model"],
            contract_version=info["contract_version"],
        )


class GrpcServer:
    """A started grpcio server with the predictor, health and reflection services."""

    def __init__(
        self,
        runtime: Callable[[], ServingRuntime | None],
        *,
        host: str,
        port: int,
        threads: int = 8,
        max_message_bytes: int = 4 * 1024 * 1024,
        token: str = "",
    ) -> None:
        interceptors = []
        if token:  # the predictor needs the bearer token; health and reflection stay open
            from ml_assets.serve.auth import GrpcTokenInterceptor, TokenCheck

            interceptors.append(GrpcTokenInterceptor(TokenCheck(token), SERVICE_NAME))
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
            interceptors=interceptors,
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max(max_message_bytes, 16 * 1024 * 1024)),
            ],
        )
        self.server.add_generic_rpc_handlers((predictor_handler(PredictorServicer(runtime)),))
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        address = f"{host}:{port}"
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"gRPC: cannot bind {address}")
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.stopped = False
        log.info("gRPC server listening on %s:%d", host, self.port)

    def stop(self, grace: float = 10.0) -> None:
        """Report NOT_SERVING, finish the calls in flight (up to ``grace`` s), stop."""
        if self.stopped:
            return
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait(grace + 1)
        self.stopped = True
        log.info("gRPC server on port %d stopped", self.port)
