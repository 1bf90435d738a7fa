"""The OpenAPI 3.1 document of a ``kiln serve`` process, published at ``/openapi.json``.

Every route of the three protocols is described, with request bodies written from the
same column rules the codecs enforce, per deployment: the inference and predict routes
of each deployment are listed under its own path (``/v2/models/fraud-api/infer``,
``/deployments/fraud-api/predict``) so that each body schema names that deployment's
columns, types and ranges. A body valid under the schema is accepted (schemathesis can
generate both valid and invalid requests from it), with one limit JSON Schema cannot
state: the schemas describe one-row tensors, because a tensor's element count must
equal the product of its shape. Every 4xx answer is ``{"error": "..."}``, except on
``/invocations``, which answers errors as MLflow does: ``{"error_code", "message"}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

from kiln.registry.signature import ColumnSpec, Signature
from kiln.serving.protocols import v2
from kiln.serving.protocols._request_schemas import (
    REF,
    input_parameters,
    mlflow_request,
    native_request,
    v2_request,
)
from kiln.serving.protocols.mlflow import ERROR_CODES, FORMATS

__all__ = ["DeploymentInfo", "openapi_document"]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


class DeploymentInfo(TypedDict):
    """What the document needs to know about one served deployment."""

    name: str
    signature: Signature
    entity_keys: Sequence[str]
    request_fields: Sequence[ColumnSpec]
    versions: NotRequired[Sequence[str | int]]
    max_body_bytes: NotRequired[int]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _json(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str, schema: str = "Error") -> dict[str, Any]:
    return _json(_ref(schema), description)


def _busy(schema: str = "Error") -> dict[str, Any]:
    out = _error("Overloaded: the request queue is full; retry after Retry-After seconds", schema)
    out["headers"] = {
        "Retry-After": {
            "description": "Seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 0},
        }
    }
    return out


def _body(schema: Mapping[str, Any], limit: int, what: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": f"{what} At most {limit} bytes; a larger body is refused with 413.",
        "content": {"application/json": {"schema": schema}},
    }


def _post_errors(limit: int, schema: str = "Error") -> dict[str, Any]:
    return {
        "400": _error("Malformed or invalid request; the message names the field", schema),
        "404": _error("No such deployment or model version", schema),
        "413": _error(f"Request body over the limit ({limit} bytes)", schema),
        "503": _busy(schema),
    }


def _path_param(name: str, schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _enum(values: Sequence[str]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)} if values else {"type": "string"}


def _versions(values: Sequence[str]) -> dict[str, Any]:
    """The versions when known, else any registry version number."""
    if values:
        return _enum(values)
    return {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"}


# -- v2 ------------------------------------------------------------------------------------


def _infer_operation(info: Mapping[str, Any], limit: int, versioned: bool) -> dict[str, Any]:
    name = info["name"]
    params = []
    if versioned:
        params.append(_version_param(info.get("versions")))
    return {
        "post": {
            "tags": ["Open Inference Protocol v2"],
            "operationId": f"v2_infer{'_version' if versioned else ''}_{name}",
            "summary": f"Inference on {name}"
            + (" (one of its model versions)" if versioned else ""),
            "parameters": params,
            "requestBody": _body(
                _ref(f"V2InferRequest_{name}"),
                limit,
                "Input tensors. Shapes are [n, ...] for n rows; a tensor's data is row-major, "
                "flat or nested exactly as its shape, with as many elements as the product of "
                "the shape (the schema shows one row). Triton's binary tensor extension "
                "(Inference-Header-Content-Length) is accepted too.",
            ),
            "responses": {
                "200": {
                    "description": "The output tensor",
                    "headers": _served_headers(),
                    "content": {
                        "application/json": {"schema": _ref("V2InferResponse")},
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    },
                },
                **_post_errors(limit),
            },
        }
    }


def _version_param(versions: Sequence[str | int] | None) -> dict[str, Any]:
    return _path_param(
        "model_version",
        _versions([str(v) for v in versions or ()]),
        "A model version of the deployment",
    )


# -- MLflow --------------------------------------------------------------------------------


def _invocations(default: Mapping[str, Any] | None, limit: int) -> dict[str, Any]:
    body_schema = (
        _ref(f"MLflowRequest_{default['name']}")
        if default is not None
        else {"type": "object", "description": "No default deployment is served"}
    )
    target = f"the default deployment ({default['name']})" if default else "the default deployment"
    return {
        "post": {
            "tags": ["MLflow scoring"],
            "operationId": "mlflow_invocations",
            "summary": f"Score rows with {target}",
            "requestBody": _body(
                body_schema,
                limit,
                f"Exactly one of {', '.join(FORMATS)}. A text/csv body with a header row is "
                "accepted too.",
            ),
            "responses": {
                "200": {
                    **_json(_ref("MLflowResponse"), "The predictions, one per row"),
                    "headers": _served_headers(),
                },
                **_post_errors(limit, "MLflowError"),
                "415": _error(
                    "Content-Type other than application/json or text/csv, or a charset "
                    "other than UTF-8",
                    "MLflowError",
                ),
            },
        }
    }


def _served_headers() -> dict[str, Any]:
    return {
        "Kiln-Model-Version": {
            "description": "The model version that answered (name/version)",
            "schema": {"type": "string"},
        }
    }


# -- native --------------------------------------------------------------------------------


def _predict_operation(info: Mapping[str, Any], limit: int) -> dict[str, Any]:
    name = info["name"]
    return {
        "post": {
            "tags": ["Kiln native"],
            "operationId": f"native_predict_{name}",
            "summary": f"Predict with {name}: online features looked up for the entities",
            "requestBody": _body(
                _ref(f"NativeRequest_{name}"), limit, "Entities and request fields."
            ),
            "responses": {
                "200": _json(_ref("NativeResponse"), "Predictions and the version that answered"),
                **_post_errors(limit),
            },
        }
    }


# -- shared schemas ------------------------------------------------------------------------


def _components() -> dict[str, Any]:
    tensor_meta = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"enum": list(v2.DATATYPES)},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "MLflowError": {
            "type": "object",
            "description": "An /invocations error, as MLflow's scoring server answers it",
            "required": ["error_code", "message"],
            "properties": {
                "error_code": {"enum": sorted(set(ERROR_CODES.values()))},
                "message": {"type": "string"},
            },
        },
        "V2InputParameters": input_parameters(),
        "V2ServerLive": {
            "type": "object",
            "required": ["live"],
            "properties": {"live": {"type": "boolean"}},
        },
        "V2ServerReady": {
            "type": "object",
            "required": ["ready"],
            "properties": {
                "ready": {"type": "boolean"},
                "deployments": {
                    "type": "object",
                    "description": "Each served deployment's state: ready with the model it "
                    "serves, or not ready with the reason",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["ready"],
                        "properties": {
                            "ready": {"type": "boolean"},
                            "model": {"type": "string"},
                            "reason": {"type": "string"},
                        },
                    },
                },
            },
        },
        "V2ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "V2ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "V2MetadataTensor": tensor_meta,
        "V2ModelMetadata": {
            "type": "object",
            "required": ["name", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _ref("V2MetadataTensor")},
                "outputs": {"type": "array", "items": _ref("V2MetadataTensor")},
            },
        },
        "V2InferResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "shape", "datatype"],
                        "properties": {
                            "name": {"type": "string"},
                            "shape": {"type": "array", "items": {"type": "integer"}},
                            "datatype": {"enum": list(v2.DATATYPES)},
                            "parameters": {"type": "object"},
                            "data": {"type": "array"},
                        },
                    },
                },
            },
        },
        "MLflowResponse": {
            "type": "object",
            "required": ["predictions"],
            "properties": {"predictions": {"type": "array"}},
        },
        "NativeResponse": {
            "type": "object",
            "required": ["predictions", "model", "version", "request_id", "fallback"],
            "properties": {
                "predictions": {"type": "array", "description": "One prediction per row"},
                "model": {"type": "string", "description": "The model reference served"},
                "version": {
                    "type": ["integer", "string", "null"],
                    "description": "The model version that answered",
                },
                "request_id": {"type": ["string", "null"]},
                "arm": {"type": ["string", "null"], "description": "The traffic policy arm"},
                "fallback": {
                    "type": "boolean",
                    "description": "True when a fallback answered instead of the model",
                },
                "features": {
                    "type": "object",
                    "description": "The feature values the model was given, by name",
                },
            },
        },
    }


def _get(
    tag: str, op: str, summary: str, responses: dict[str, Any], params: list[Any] | None = None
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": [tag],
        "operationId": op,
        "summary": summary,
        "responses": responses,
    }
    if params:
        operation["parameters"] = params
    return {"get": operation}


def openapi_document(
    deployments: Sequence[Mapping[str, Any]],
    server_version: str,
    *,
    default: str | None = None,
    max_body_bytes: int | None = None,
    title: str = "Kiln serving",
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``deployments`` (see :class:`DeploymentInfo`).

    ``default`` names the deployment answering ``/invocations`` (the only one when
    there is one and none is named); ``max_body_bytes`` is the body limit when a
    deployment does not give its own.
    """
    limit_all = max_body_bytes or DEFAULT_MAX_BODY_BYTES
    names = [d["name"] for d in deployments]
    if default is None and len(deployments) == 1:
        default = names[0]
    default_info = next((d for d in deployments if d["name"] == default), None)
    all_versions = sorted({str(v) for d in deployments for v in d.get("versions") or ()})
    model_name = _path_param("model_name", _enum(names), "A deployment name")
    model_version = _path_param(
        "model_version", _versions(all_versions), "A model version of the deployment"
    )
    tag = "Open Inference Protocol v2"
    not_found = {"404": _error("No such deployment or model version")}
    bad_version = {"400": _error("The model version is not a positive integer")}
    ready_codes = {
        "200": _json(_ref("V2ModelReady"), "Ready"),
        "503": _json(
            {"anyOf": [_ref("V2ModelReady"), _ref("Error")]}, "Not ready (model not loaded)"
        ),
        **not_found,
    }
    paths: dict[str, Any] = {
        "/v2/health/live": _get(
            tag, "v2_live", "Server liveness", {"200": _json(_ref("V2ServerLive"), "Live")}
        ),
        "/v2/health/ready": _get(
            tag,
            "v2_ready",
            "Server readiness: every deployment has a model loaded",
            {
                "200": _json(_ref("V2ServerReady"), "Ready"),
                "503": _json({"anyOf": [_ref("V2ServerReady"), _ref("Error")]}, "Not ready yet"),
            },
        ),
        "/v2": _get(
            tag,
            "v2_server_metadata",
            "Server metadata",
            {"200": _json(_ref("V2ServerMetadata"), "Server name, version and extensions")},
        ),
        "/v2/models/{model_name}": _get(
            tag,
            "v2_model_metadata",
            "Model metadata (inputs, outputs, versions)",
            {"200": _json(_ref("V2ModelMetadata"), "Metadata"), **not_found},
            [model_name],
        ),
        "/v2/models/{model_name}/ready": _get(
            tag, "v2_model_ready", "Model readiness", ready_codes, [model_name]
        ),
        "/v2/models/{model_name}/versions/{model_version}": _get(
            tag,
            "v2_model_version_metadata",
            "Metadata of one model version",
            {"200": _json(_ref("V2ModelMetadata"), "Metadata"), **not_found, **bad_version},
            [model_name, model_version],
        ),
        "/v2/models/{model_name}/versions/{model_version}/ready": _get(
            tag,
            "v2_model_version_ready",
            "Readiness of one model version",
            {**ready_codes, **bad_version},
            [model_name, model_version],
        ),
    }
    schemas = _components()
    for info in deployments:
        name = info["name"]
        limit = int(info.get("max_body_bytes") or limit_all)
        schemas[f"V2InferRequest_{name}"] = v2_request(info["signature"])
        paths[f"/v2/models/{name}/infer"] = _infer_operation(info, limit, versioned=False)
        paths[f"/v2/models/{name}/versions/{{model_version}}/infer"] = _infer_operation(
            info, limit, versioned=True
        )
        schemas[f"NativeRequest_{name}"] = native_request(info)
        paths[f"/deployments/{name}/predict"] = _predict_operation(info, limit)
    if default_info is not None:
        schemas[f"MLflowRequest_{default_info['name']}"] = mlflow_request(default_info["signature"])
    default_limit = int((default_info or {}).get("max_body_bytes") or limit_all)
    paths["/invocations"] = _invocations(default_info, default_limit)
    health = "MLflow scoring"
    alive = {
        "200": {"description": "Ready to score"},
        "503": {"description": "Not ready yet (models loading)"},
    }
    paths["/ping"] = _get(health, "mlflow_ping", "Readiness (MLflow)", alive)
    paths["/version"] = _get(
        health,
        "mlflow_version",
        "The server's version, as plain text (MLflow answers its own version here)",
        {
            "200": {
                "description": "The Kiln version",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    paths["/health"] = _get(health, "mlflow_health", "Readiness (MLflow)", alive)
    paths["/metrics"] = _get(
        "Operations",
        "metrics",
        "Prometheus metrics: requests, errors, latency, batch sizes, queues, breakers",
        {
            "200": {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    paths["/openapi.json"] = _get(
        "Operations",
        "openapi",
        "This document",
        {"200": _json({"type": "object"}, "The OpenAPI document")},
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": server_version,
            "description": (
                "Kiln model serving: the Open Inference Protocol v2 (KServe, Triton), the "
                "MLflow scoring protocol and Kiln's native predict endpoint. Request bodies "
                f"are limited to {limit_all} bytes unless a deployment sets its own limit "
                "(max_body_bytes); a larger body is refused with 413. Every 4xx answer is "
                '{"error": "..."} naming the field at fault, except on /invocations, which '
                'answers errors as MLflow does: {"error_code": "BAD_REQUEST", "message": "..."}.'
            ),
        },
        "tags": [
            {"name": "Open Inference Protocol v2", "description": "KServe / Triton REST"},
            {"name": "MLflow scoring", "description": "As `mlflow models serve` answers"},
            {"name": "Kiln native", "description": "Entities in, online features looked up"},
            {"name": "Operations", "description": "Metrics and this document"},
        ],
        "paths": paths,
        "components": {"schemas": schemas},
    }
