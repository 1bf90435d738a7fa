"""The OpenAPI document: valid, complete, and exact enough for schemathesis.

Schemathesis drives a small app over the codecs (``_codec_app``) from the document, with
valid and invalid requests: every valid body must be accepted, every invalid one refused
with a documented 4xx, and no answer may be a 5xx or stray from its documented schema.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import schemathesis
from _codec_app import Served, make_app
from openapi_spec_validator import validate

from kiln.registry.signature import ColumnSpec, Signature
from kiln.serving.protocols import openapi

FRAUD = Signature(
    inputs=tuple(ColumnSpec(name=f"f{i}", dtype="float64") for i in range(3)),
    outputs=(ColumnSpec(name=None, dtype="float64", shape=(-1,)),),
)
MIXED = Signature(
    inputs=(
        ColumnSpec(name="amount", dtype="float32"),
        ColumnSpec(name="count", dtype="int16"),
        ColumnSpec(name="country", dtype="string"),
        ColumnSpec(name="flag", dtype="bool"),
        ColumnSpec(name="seen", dtype="datetime64[ns]"),
    ),
    outputs=(),
)
IMAGE = Signature(
    inputs=(ColumnSpec(name=None, dtype="float32", shape=(-1, 2, 2)),),
    outputs=(),
    input_kind="tensor",
)
ONE = Signature(inputs=(ColumnSpec(name="x", dtype="int64"),), outputs=())
SERVED = [
    Served(
        "fraud",
        FRAUD,
        entity_keys=("user_id", "merchant"),
        request_fields=(
            ColumnSpec(name="amount", dtype="float64"),
            ColumnSpec(name="channel", dtype="string"),
            ColumnSpec(name="items", dtype="uint8"),
        ),
    ),
    Served("mixed", MIXED, request_fields=(ColumnSpec(name="tip", dtype="float32"),)),
    Served("image", IMAGE, entity_keys=("id",)),
    Served("one.col-umn_1", ONE, versions=("7",)),
]


def infos(served: list[Served]) -> list[openapi.DeploymentInfo]:
    return [
        openapi.DeploymentInfo(
            name=s.name,
            signature=s.signature,
            entity_keys=s.entity_keys,
            request_fields=s.request_fields,
            versions=s.versions,
        )
        for s in served
    ]


@pytest.mark.parametrize("default", [None, "mixed", "image", "one.col-umn_1"])
def test_document_is_valid_openapi(default: str | None) -> None:
    validate(openapi.openapi_document(infos(SERVED), "1.0.0", default=default))
    validate(openapi.openapi_document(infos(SERVED[:1]), "1.0.0"))
    validate(openapi.openapi_document([], "1.0.0"))


def test_every_route_is_documented() -> None:
    doc = openapi.openapi_document(infos(SERVED), "1.2.3", default="fraud", max_body_bytes=1000)
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["version"] == "1.2.3"
    assert "1000 bytes" in doc["info"]["description"]
    paths = doc["paths"]
    for route in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/{model_name}",
        "/v2/models/{model_name}/ready",
        "/v2/models/{model_name}/versions/{model_version}",
        "/v2/models/{model_name}/versions/{model_version}/ready",
        "/invocations",
        "/ping",
        "/health",
        "/version",
        "/metrics",
        "/openapi.json",
    ]:
        assert route in paths, route
    for s in SERVED:
        assert f"/v2/models/{s.name}/infer" in paths
        assert f"/v2/models/{s.name}/versions/{{model_version}}/infer" in paths
        assert f"/deployments/{s.name}/predict" in paths
    (name_param,) = paths["/v2/models/{model_name}"]["get"]["parameters"]
    assert name_param["schema"]["enum"] == [s.name for s in SERVED]
    version_param = paths["/v2/models/{model_name}/versions/{model_version}"]["get"]["parameters"]
    assert version_param[1]["schema"]["enum"] == ["1", "2", "7"]
    fraud_infer = paths["/v2/models/fraud/versions/{model_version}/infer"]["post"]
    assert fraud_infer["parameters"][0]["schema"]["enum"] == ["1", "2"]


def test_posts_document_their_errors_and_limit() -> None:
    doc = openapi.openapi_document(infos(SERVED), "1.0.0", default="fraud", max_body_bytes=5000)
    error = doc["components"]["schemas"]["Error"]
    assert error == {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    }
    posts = [(p, ops["post"]) for p, ops in doc["paths"].items() if "post" in ops]
    assert len(posts) == 3 * len(SERVED) + 1
    for path, op in posts:
        assert op["requestBody"]["required"] is True
        assert "At most 5000 bytes" in op["requestBody"]["description"], path
        shape = "MLflowError" if path == "/invocations" else "Error"
        for status in ("400", "404", "413", "503"):
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{shape}"}, (path, status)
        assert "Retry-After" in op["responses"]["503"]["headers"]
    invocations = doc["paths"]["/invocations"]["post"]["responses"]
    assert invocations["415"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MLflowError"
    }
    mlflow_error = doc["components"]["schemas"]["MLflowError"]
    assert mlflow_error["required"] == ["error_code", "message"]
    assert "BAD_REQUEST" in mlflow_error["properties"]["error_code"]["enum"]
    assert "text/plain" in doc["paths"]["/version"]["get"]["responses"]["200"]["content"]


def test_request_schemas_name_the_columns() -> None:
    doc = openapi.openapi_document(infos(SERVED), "1.0.0", default="fraud")
    schemas = doc["components"]["schemas"]
    native = schemas["NativeRequest_fraud"]
    assert native["required"] == ["entities", "request"]
    request = native["properties"]["request"]
    assert request["required"] == ["amount", "channel", "items"]
    assert request["properties"]["items"] == {"type": "integer", "minimum": 0, "maximum": 255}
    assert request["properties"]["channel"] == {"type": ["string", "null"]}
    assert schemas["NativeRequest_mixed"]["required"] == ["request"]
    assert "entities" not in schemas["NativeRequest_mixed"]["properties"]
    mlflow = schemas["MLflowRequest_fraud"]
    keys = [next(iter(form["properties"])) for form in mlflow["oneOf"]]
    assert keys == ["dataframe_split", "dataframe_records", "instances", "inputs"]
    split = mlflow["oneOf"][0]["properties"]["dataframe_split"]
    assert split["properties"]["columns"] == {"const": ["f0", "f1", "f2"]}
    v2_inputs = schemas["V2InferRequest_fraud"]["properties"]["inputs"]["anyOf"]
    matrix, by_column = v2_inputs
    assert matrix["items"]["properties"]["shape"] == {"const": [1, 3]}
    assert [c["oneOf"][0]["properties"]["name"] for c in by_column["prefixItems"]] == [
        {"const": "f0"},
        {"const": "f1"},
        {"const": "f2"},
    ]
    mixed = schemas["V2InferRequest_mixed"]["properties"]["inputs"]
    flat, nested = mixed["prefixItems"][1]["oneOf"]
    assert flat["properties"]["shape"] == {"const": [1]}
    assert nested["properties"]["shape"] == {"const": [1, 1]}
    count = flat["properties"]
    assert count["datatype"] == {"enum": ["INT16"]}
    assert count["data"]["items"] == {"type": "integer", "minimum": -32768, "maximum": 32767}


# -- schemathesis against the codecs ------------------------------------------------------

APP = make_app(SERVED, default="fraud")
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)


@SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_schemathesis(case: Any) -> None:
    case.call_and_validate()
