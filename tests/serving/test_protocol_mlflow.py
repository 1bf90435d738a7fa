"""MLflow scoring codec: every body format of /invocations, CSV, and errors naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from kiln.registry.signature import ColumnSpec, Signature, enforce
from kiln.serving.protocols import ProtocolError, mlflow

JSON = "application/json"
TWO = Signature(
    inputs=(ColumnSpec(name="a", dtype="float64"), ColumnSpec(name="b", dtype="float64")),
    outputs=(),
)
ONE = Signature(inputs=(ColumnSpec(name="x", dtype="float64"),), outputs=())
MIXED = Signature(
    inputs=(
        ColumnSpec(name="amount", dtype="float64"),
        ColumnSpec(name="count", dtype="int64"),
        ColumnSpec(name="country", dtype="string"),
        ColumnSpec(name="flag", dtype="bool"),
    ),
    outputs=(),
)
TENSOR = Signature(
    inputs=(ColumnSpec(name=None, dtype="float32", shape=(-1, 3)),),
    outputs=(),
    input_kind="tensor",
)


def decode(doc: Any, signature: Signature = TWO, content_type: str = JSON) -> Any:
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return mlflow.decode_invocation(raw, content_type, signature)


def error(doc: Any, signature: Signature = TWO, content_type: str = JSON) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(doc, signature, content_type)
    return info.value


EXPECTED = [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    "doc",
    [
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}},
        {"dataframe_split": {"columns": ["b", "a"], "data": [[2, 1], [4, 3]], "index": [7, 8]}},
        {"dataframe_records": [{"a": 1, "b": 2}, {"b": 4, "a": 3}]},
        {"instances": [[1, 2], [3, 4]]},
        {"instances": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]},
        {"instances": {"a": [1, 3], "b": [2, 4]}},
        {"inputs": [[1.0, 2.0], [3.0, 4.0]]},
        {"inputs": {"a": [1, 3], "b": [2, 4]}},
        {"inputs": [[1, 2], [3, 4]], "params": {}},
    ],
    ids=[
        "split",
        "split-reordered",
        "records",
        "instances-rows",
        "instances-records",
        "instances-columns",
        "inputs-rows",
        "inputs-columns",
        "empty-params",
    ],
)
def test_every_format_gives_the_matrix_in_signature_order(doc: dict[str, Any]) -> None:
    out = decode(doc)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_array_equal(out, EXPECTED)


def test_single_row_forms() -> None:
    np.testing.assert_array_equal(decode({"inputs": {"a": 1, "b": 2}}), [[1.0, 2.0]])
    np.testing.assert_array_equal(decode({"instances": [5, 6]}, ONE), [[5.0], [6.0]])


def test_nulls_are_missing_values_in_float_and_string_columns() -> None:
    out = decode({"dataframe_records": [{"a": None, "b": 2}]})
    assert np.isnan(out[0, 0]) and out[0, 1] == 2
    cols = decode(
        {
            "dataframe_split": {
                "columns": ["flag", "country", "count", "amount"],
                "data": [[True, None, 3, None], [False, "DE", 4, 1.5]],
            }
        },
        MIXED,
    )
    assert isinstance(cols, dict) and list(cols) == ["amount", "count", "country", "flag"]
    assert np.isnan(cols["amount"][0]) and cols["amount"][1] == 1.5
    assert cols["count"].dtype == np.int64 and cols["country"].tolist() == [None, "DE"]
    assert cols["flag"].tolist() == [True, False]
    assert len(enforce(MIXED, cols)) == 2


def test_csv() -> None:
    out = decode(b"b,a\n2,1\n4,3\n", content_type="text/csv; charset=utf-8")
    np.testing.assert_array_equal(out, EXPECTED)
    missing = decode(b"a,b\n1,\n", content_type="text/csv")
    assert np.isnan(missing[0, 1])
    cols = decode(b"amount,count,country,flag\n1.5,2,DE,true\n,3,,False\n", MIXED, "text/csv")
    assert cols["count"].tolist() == [2, 3] and cols["country"].tolist() == ["DE", None]
    assert cols["flag"].tolist() == [True, False] and np.isnan(cols["amount"][1])
    tensor = decode(b"c0,c1,c2\n1,2,3\n", TENSOR, "text/csv")
    assert tensor.dtype == np.float32 and tensor.shape == (1, 3)


def test_tensor_models() -> None:
    out = decode({"inputs": [[1, 2, 3], [4, 5, 6]]}, TENSOR)
    assert out.dtype == np.float32 and out.shape == (2, 3)
    assert decode({"instances": [1, 2, 3]}, TENSOR).shape == (1, 3)
    assert "shape [2, 2] does not match the model's [-1, 3]" in str(
        error({"inputs": [[1, 2], [3, 4]]}, TENSOR)
    )
    assert "takes numbers only" in str(error({"inputs": [[1, "x", 3]]}, TENSOR))
    assert "one tensor" in str(error({"dataframe_records": [{"a": 1}]}, TENSOR))


BAD: list[tuple[str, Any, str]] = [
    ("malformed", b'{"inputs": [[1, 2]', "request body is not valid JSON"),
    ("NaN", b'{"inputs": [[NaN, 2]]}', "NaN and Infinity are not JSON numbers"),
    ("not an object", [[1, 2]], "must be a JSON object with one of dataframe_split"),
    (
        "unknown format",
        {"data": [[1, 2]]},
        "exactly one of dataframe_split, dataframe_records, instances, inputs; got keys data",
    ),
    ("two formats", {"inputs": [[1, 2]], "instances": [[1, 2]]}, "got instances, inputs"),
    ("extra field", {"inputs": [[1, 2]], "extra": 1}, "unexpected field 'extra'"),
    ("params", {"inputs": [[1, 2]], "params": {"k": 1}}, "'params' are not supported"),
    ("split not an object", {"dataframe_split": [[1, 2]]}, "dataframe_split must be an object"),
    (
        "split without columns",
        {"dataframe_split": {"data": [[1, 2]]}},
        "dataframe_split needs 'columns': the model's columns are a, b",
    ),
    (
        "split extra key",
        {"dataframe_split": {"columns": ["a", "b"], "data": [], "x": 1}},
        "unexpected field 'x' in dataframe_split",
    ),
    (
        "split missing column",
        {"dataframe_split": {"columns": ["a"], "data": [[1]]}},
        "dataframe_split.columns: missing column b; the model's columns are a, b",
    ),
    (
        "split extra column",
        {"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2, 3]]}},
        "unexpected column 'c'",
    ),
    (
        "split duplicate column",
        {"dataframe_split": {"columns": ["a", "a", "b"], "data": []}},
        "column 'a' is given twice",
    ),
    (
        "split short row",
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3]]}},
        "dataframe_split.data[1] must be a list of 2 values; got a list of 1",
    ),
    (
        "split index length",
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]], "index": [1, 2]}},
        "one label per row",
    ),
    ("split no rows", {"dataframe_split": {"columns": ["a", "b"], "data": []}}, "has no rows"),
    ("records not a list", {"dataframe_records": {"a": 1}}, "must be a list of objects"),
    (
        "record missing column",
        {"dataframe_records": [{"a": 1, "b": 2}, {"a": 1}]},
        "dataframe_records[1]: missing column b",
    ),
    (
        "record extra column",
        {"dataframe_records": [{"a": 1, "b": 2, "z": 0}]},
        "dataframe_records[0]: unexpected column 'z'",
    ),
    (
        "record not an object",
        {"dataframe_records": [[1, 2]]},
        "dataframe_records[0] must be an object",
    ),
    (
        "string in float column",
        {"dataframe_records": [{"a": 1, "b": "2"}]},
        "column 'b': row 0 is the string '2'; a float64 column takes numbers",
    ),
    ("boolean in float column", {"inputs": [[1, True]]}, "a float64 column takes numbers"),
    ("nested value", {"inputs": [[1, [2]]]}, "column 'b'"),
    ("instances of scalars", {"instances": [1, 2]}, "must be a list of rows (lists of 2 values"),
    ("inputs not a list", {"inputs": "x"}, "inputs must be a list of rows or records"),
    (
        "columns of different lengths",
        {"inputs": {"a": [1], "b": [1, 2]}},
        "columns have different lengths: a=1, b=2",
    ),
    ("single value among lists", {"inputs": {"a": 1, "b": [1]}}, "column 'a' is a single value"),
    ("column object missing", {"inputs": {"a": [1]}}, "inputs: missing column b"),
]


@pytest.mark.parametrize(
    ("doc", "message"), [(d, m) for _, d, m in BAD], ids=[n for n, _, _ in BAD]
)
def test_bad_bodies_name_the_field(doc: Any, message: str) -> None:
    err = error(doc)
    assert err.status == 400
    assert message in err.message


def test_type_errors_of_typed_columns() -> None:
    base = {"amount": 1.0, "count": 1, "country": "DE", "flag": True}

    def bad(**change: Any) -> str:
        return error({"dataframe_records": [{**base, **change}]}, MIXED).message

    assert "column 'count': row 0: 1.5 is not an integer; an int64 column takes integers" in bad(
        count=1.5
    )
    assert "column 'count': row 0: 3.0" not in bad(count=3.0, flag=1)  # 3.0 is an integer
    assert "column 'count': row 0 is null; an int64 column takes numbers" in bad(count=None)
    assert "row 0 is 3; a string column takes strings" in bad(country=3)
    assert "row 0 is 1; a bool column takes true or false" in bad(flag=1)
    assert "out of range for int64" in bad(count=2**63)


def test_big_integers_among_floats_stay_exact() -> None:
    ints = Signature(
        inputs=(ColumnSpec(name="a", dtype="int64"), ColumnSpec(name="b", dtype="int64")),
        outputs=(),
    )
    big = 2**63 - 2
    for doc in (
        {"inputs": [[1.0, big]]},
        {"dataframe_records": [{"a": 1.0, "b": big}]},
        {"inputs": {"a": [1.0], "b": [big]}},
    ):
        out = decode(doc, ints)
        assert isinstance(out, np.ndarray) and out.tolist() == [[1, big]], doc


def test_csv_errors() -> None:
    assert error(b"a,b\n1,2\n", content_type="text/plain").status == 415
    assert error(b"a,b\n1,2\n", content_type="").status == 415
    assert "header row" in error(b"a,b\n", content_type="text/csv").message
    assert (
        "CSV row 1 has 1 fields; the header has 2"
        in error(b"a,b\n1\n", content_type="text/csv").message
    )
    assert "CSV header: missing column b" in error(b"a\n1\n", content_type="text/csv").message
    assert (
        "CSV column 'b': row 0 is 'x'; a float64 column takes numbers"
        in error(b"a,b\n1,x\n", content_type="text/csv").message
    )
    assert (
        "infinite values are not accepted"
        in error(b"a,b\n1,inf\n", content_type="text/csv").message
    )
    assert (
        "an int64 column takes integers"
        in error(b"amount,count,country,flag\n1,2.5,DE,true\n", MIXED, "text/csv").message
    )
    assert (
        "a bool column takes true or false"
        in error(b"amount,count,country,flag\n1,2,DE,yes\n", MIXED, "text/csv").message
    )
    assert "not UTF-8" in error(b"a,b\n\xff,1\n", content_type="text/csv").message


def test_encode_predictions() -> None:
    assert orjson.loads(mlflow.encode_predictions(np.array([0.5, 1.5]))) == {
        "predictions": [0.5, 1.5]
    }
    assert orjson.loads(mlflow.encode_predictions(np.array([[1, 2]], dtype=np.int32))) == {
        "predictions": [[1, 2]]
    }
    assert orjson.loads(mlflow.encode_predictions(np.array(["a"], dtype=object))) == {
        "predictions": ["a"]
    }
    assert orjson.loads(
        mlflow.encode_predictions({"label": np.array([1, 0]), "score": np.array([0.9, 0.1])})
    ) == {"predictions": [{"label": 1, "score": 0.9}, {"label": 0, "score": 0.1}]}
    assert orjson.loads(mlflow.encode_predictions([1, 2])) == {"predictions": [1, 2]}


# -- errors as MLflow's clients read them --------------------------------------------------

# MLflow's ErrorCode names and the HTTP status it maps each to (mlflow.exceptions).
MLFLOW_ERROR_STATUS = {
    "INTERNAL_ERROR": 500,
    "INVALID_STATE": 500,
    "DATA_LOSS": 500,
    "NOT_IMPLEMENTED": 501,
    "TEMPORARILY_UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "REQUEST_LIMIT_EXCEEDED": 429,
    "CANCELLED": 499,
    "RESOURCE_EXHAUSTED": 429,
    "ABORTED": 409,
    "RESOURCE_CONFLICT": 409,
    "ALREADY_EXISTS": 409,
    "NOT_FOUND": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "PERMISSION_DENIED": 403,
    "CUSTOMER_UNAUTHORIZED": 401,
    "UNAUTHENTICATED": 401,
    "BAD_REQUEST": 400,
    "RESOURCE_ALREADY_EXISTS": 400,
    "INVALID_PARAMETER_VALUE": 400,
}


def parse_like_mlflow(status: int, text: str) -> tuple[str, str]:
    """An error answer as MLflow's REST client reads it: its error code and message.

    ``mlflow.utils.rest_utils.verify_rest_response`` raises ``RestException(json)`` for a
    body that parses as a JSON object (else a generic error without the server's code);
    ``RestException`` takes ``error_code`` (default INTERNAL_ERROR) through
    ``ErrorCode.Value`` and prefixes it to ``message``.
    """
    try:
        doc = json.loads(text)
    except ValueError:
        raise AssertionError(f"{status}: MLflow cannot parse {text[:200]!r}") from None
    assert isinstance(doc, dict), text
    assert set(doc) == {"error_code", "message"}, doc
    code = doc.get("error_code", "INTERNAL_ERROR")
    assert code in MLFLOW_ERROR_STATUS, f"{code!r} is no MLflow ErrorCode name"
    assert isinstance(doc["message"], str) and doc["message"], doc
    # the code means what the status means: a client error is a 4xx code
    assert MLFLOW_ERROR_STATUS[code] // 100 == status // 100, (status, code)
    return code, f"{code}: {doc['message']}"


@pytest.mark.parametrize("status", [400, 404, 405, 409, 413, 415, 429, 500, 501, 503, 504])
def test_error_bodies_parse_as_mlflow_errors(status: int) -> None:
    code, message = parse_like_mlflow(status, mlflow.error_body(status, "what went wrong").decode())
    assert code == mlflow.error_code(status)
    assert message.endswith(": what went wrong")
    assert mlflow.error_code(400) == "BAD_REQUEST"
    assert mlflow.error_code(503) == "TEMPORARILY_UNAVAILABLE"


def test_content_type_and_charset() -> None:
    doc = {"inputs": [[1, 2]]}
    for ok in ("application/json; charset=utf-8", "Application/JSON;charset=UTF-8", JSON):
        np.testing.assert_array_equal(decode(doc, content_type=ok), [[1.0, 2.0]])
    err = error(doc, content_type="application/json; charset=latin-1")
    assert err.status == 415 and "charset 'latin-1' is not supported" in err.message
    err = error(doc, content_type="application/xml")
    assert err.status == 415 and "use application/json or text/csv" in err.message


def test_live_server_answers_as_mlflow_scoring_server(tmp_path: Path) -> None:
    """Every /invocations error parses as MLflow's client parses it; /version; headers."""
    from _harness import register_controlled, serving

    import kiln

    flags = tmp_path / "flags"
    register_controlled("risk", 2.0, flags)
    kiln.deployments.create("risk-api", model="risk/1", max_body_bytes=2048)
    row = {"f0": 1.0, "f1": 2.0, "f2": 3.0, "f3": 4.0}
    errors: list[tuple[str, str, bytes | dict[str, Any], str, int]] = [
        ("POST", JSON, b"{not json", "not valid JSON", 400),
        ("POST", JSON, {"rows": []}, "exactly one of", 400),
        ("POST", JSON, {"dataframe_records": [{**row, "f9": 1.0}]}, "'f9'", 400),
        ("POST", JSON, {"dataframe_records": [{**row, "f1": "x"}]}, "float64 column", 400),
        ("POST", JSON, {"inputs": [[0.5] * 4] * 200}, "limit", 413),
        ("POST", "text/plain", b"f0\n1\n", "Content-Type 'text/plain'", 415),
        ("POST", f"{JSON}; charset=latin-1", {"inputs": [row]}, "charset", 415),
        ("GET", JSON, b"", "GET is not allowed on /invocations", 405),
    ]
    with serving(["risk-api"]) as server, server.client() as http:
        assert http.get("/version").text == kiln.__version__
        ok = http.post("/invocations", json={"dataframe_records": [row]})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"predictions": [2.0]}
        assert ok.headers["kiln-model-version"] == "risk/1"
        for method, content_type, sent, needle, status in errors:
            content = sent if isinstance(sent, bytes) else orjson.dumps(sent)
            r = http.request(
                method, "/invocations", content=content, headers={"content-type": content_type}
            )
            assert r.status_code == status, (sent, r.status_code, r.text)
            code, message = parse_like_mlflow(r.status_code, r.text)
            assert code == ("BAD_REQUEST" if status != 404 else "RESOURCE_DOES_NOT_EXIST")
            assert needle in message, (sent, message)
        (flags / "fail").touch()  # the model fails: a server-side error, still MLflow's shape
        r = http.post("/invocations", json={"dataframe_records": [row]})
        assert r.status_code >= 500
        parse_like_mlflow(r.status_code, r.text)
        # the Open Inference Protocol keeps its own error shape
        r = http.post("/v2/models/risk-api/infer", json={"inputs": []})
        assert r.status_code == 400 and set(r.json()) == {"error"}
