"""The OpenAPI 3.1 description of the HTTP API, generated from the contract-derived schemas.

Every field of both record kinds is listed with its JSON type, nullability, range, allowed values
and the contract's description, so a client generator (openapi-generator, openapi-python-client,
...) produces typed models. Served at ``GET /v1/openapi.json`` and written into every Bento.
"""

from __future__ import annotations

from typing import Any

from ml_assets.serve.runtime import ServingRuntime
from ml_assets.serve.validation import RecordSchema

MOUNT = "/v1"


def _record(
    schema: RecordSchema, title: str, description: str, optional: RecordSchema | None = None
) -> dict[str, Any]:
    """A record's JSON Schema; ``optional`` adds fields a record may carry besides (not
    required; a composite key's parts all or none, which JSON Schema says with
    ``dependentRequired``)."""
    out: dict[str, Any] = {
        "title": title,
        "description": description,
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in schema.fields if f.required],
        "properties": {f.name: f.json_schema() for f in schema.fields},
    }
    if optional is not None and optional.fields:
        out["properties"].update({f.name: f.json_schema() for f in optional.fields})
        if optional.together:
            out["dependentRequired"] = {
                n: [m for m in optional.together if m != n] for n in optional.together
            }
    return out


def _request(
    item_ref: str, example: dict[str, Any] | None, *more: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["records"],
        "properties": {
            "records": {"type": "array", "minItems": 1, "items": {"$ref": item_ref}},
        },
    }
    if example is not None:
        out["examples"] = [{"records": [example]}, *({"records": [m]} for m in more)]
    return out


def _prediction(runtime: ServingRuntime) -> dict[str, Any]:
    bundle = runtime.bundle
    props = bundle.kind.prediction_openapi(bundle.classes)
    props["key"] = {
        "type": "object",
        "description": "The record's key fields, when it gave them.",
    }
    return {"type": "object", "required": [p for p in props if p != "key"], "properties": props}


def example_features(runtime: ServingRuntime) -> dict[str, Any]:
    """A feature record that passes validation (the middle of every range, the first category)."""
    return {f.name: _example_value(f) for f in runtime.features.fields}


def example_identified(runtime: ServingRuntime) -> dict[str, Any]:
    """A feature record that also gives the entity key and event time (logged, not scored)."""
    return {**example_features(runtime), **{f.name: _example_value(f) for f in runtime.ids.fields}}


def example_entity(runtime: ServingRuntime) -> dict[str, Any]:
    """An entity record that passes validation (required fields only)."""
    return {f.name: _example_value(f) for f in runtime.entities.fields if f.required}


def _example_value(rule: Any) -> Any:
    if rule.allowed:
        return rule.allowed[0]
    kind = rule.kind.value
    if kind == "bool":
        return False
    if kind in ("string", "category"):
        return "text"
    if kind == "datetime":
        return "2024-01-01T12:00:00Z"
    if kind == "date":
        return "2024-01-01"
    lo = rule.min if rule.min is not None else 0
    hi = rule.max if rule.max is not None else lo + 10
    mid = (lo + hi) / 2
    return round(mid) if kind == "int" else float(mid)


def openapi_document(runtime: ServingRuntime) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document of a runtime's HTTP API."""
    name = runtime.dataset
    error = {"$ref": "#/components/schemas/Error"}
    errors = {
        str(code): {"description": why, "content": {"application/json": {"schema": error}}}
        for code, why in (
            (400, "Body is not valid UTF-8 JSON, has a key twice, or X-Request-Id is bad."),
            (408, "Body not received within the time limit."),
            (413, "Body or batch too large."),
            (415, "Not application/json, a charset other than UTF-8, or compressed."),
            (422, "A record breaks the contract; the message names the field."),
            (
                503,
                "Not ready, overloaded (shed at once: retry after Retry-After), or the online "
                "store or the prediction log is unavailable.",
            ),
        )
    }
    response = {
        "200": {
            "description": "One prediction per record, in order.",
            "headers": {"x-request-id": {"schema": {"type": "string"}}},
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictResponse"}}
            },
        },
        **errors,
    }
    request_id = {
        "name": "x-request-id",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 128},
        "description": (
            "Your id for the request (printable ASCII): echoed as client_request_id and "
            "logged with the predictions; request_id is always the server's own, unique one."
        ),
    }

    def operation(op_id: str, summary: str, request_schema: str) -> dict[str, Any]:
        return {
            "operationId": op_id,
            "summary": summary,
            "parameters": [request_id],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{request_schema}"}
                    }
                },
            },
            "responses": response,
        }

    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{name} prediction service",
            "version": runtime.spec.contract.version,
            "description": (
                f"{runtime.spec.contract.description} Model version {runtime.model_version} "
                f"({runtime.bundle.problem_type.value}). Fields, types, ranges and categories "
                "come from the dataset's contract."
            ),
        },
        "paths": {
            f"{MOUNT}/predict": {
                "post": operation(
                    "predict",
                    "Predict on feature rows (the model's inputs as the feature table holds them).",
                    "PredictRequest",
                )
            },
            f"{MOUNT}/predict_by_keys": {
                "post": operation(
                    "predict_by_keys",
                    "Predict on entity records: features computed by the feature code, "
                    "aggregates fetched from the online store by the records' keys.",
                    "PredictByKeysRequest",
                )
            },
            f"{MOUNT}/model": {
                "get": {
                    "operationId": "model_info",
                    "summary": "What is being served.",
                    "responses": {
                        "200": {
                            "description": "Model info.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "FeatureRecord": _record(
                    runtime.features,
                    "FeatureRecord",
                    "The model's features for one row; optionally the entity key and event "
                    "time too (never model inputs: logged with the prediction so that "
                    "monitoring places it at its event and joins its label; the key is echoed).",
                    runtime.ids,
                ),
                "EntityRecord": _record(
                    runtime.entities,
                    "EntityRecord",
                    "One entity as the contract declares it; the event time defaults to the "
                    "request time.",
                ),
                "PredictRequest": _request(
                    "#/components/schemas/FeatureRecord",
                    example_features(runtime),
                    example_identified(runtime),
                ),
                "PredictByKeysRequest": _request(
                    "#/components/schemas/EntityRecord", example_entity(runtime)
                ),
                "Prediction": _prediction(runtime),
                "PredictResponse": {
                    "type": "object",
                    "required": ["request_id", "model_version", "predictions"],
                    "properties": {
                        "request_id": {"type": "string"},
                        "model_version": {"type": "string"},
                        "predictions": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Prediction"},
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "request_id": {"type": "string"},
                        "error": {
                            "type": "object",
                            "required": ["code", "message", "fields"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "fields": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "field": {"type": "string"},
                                            "message": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            }
        },
    }
