"""Open Inference Protocol v2 codec: tensors to model input and back, errors naming the field."""

from __future__ import annotations

import timeit
from collections.abc import Iterator
from typing import Any

import hypothesis
import numpy as np
import orjson
import pytest
import schemathesis
from _codec_app import Served, make_app, serve

from kiln.core import InvalidInput
from kiln.registry.signature import ColumnSpec, Signature, enforce, input_signature
from kiln.serving.protocols import ProtocolError, check_size, v2

FLOATS = Signature(
    inputs=tuple(ColumnSpec(name=f"f{i}", dtype="float64") for i in range(4)),
    outputs=(ColumnSpec(name=None, dtype="float64", shape=(-1,)),),
)
MIXED = Signature(
    inputs=(
        ColumnSpec(name="amount", dtype="float64"),
        ColumnSpec(name="count", dtype="int32"),
        ColumnSpec(name="country", dtype="string"),
        ColumnSpec(name="flag", dtype="bool"),
        ColumnSpec(name="seen", dtype="datetime64[ns]"),
    ),
    outputs=(),
)
F32 = Signature(
    inputs=(ColumnSpec(name="a", dtype="float32"), ColumnSpec(name="b", dtype="float32")),
    outputs=(),
)
IMAGE = Signature(
    inputs=(ColumnSpec(name=None, dtype="float32", shape=(-1, 2, 3)),),
    outputs=(),
    input_kind="tensor",
)

# mixed int and float columns, as a DataFrame of amounts and counts registers them
NUMBERS = Signature(
    inputs=(
        ColumnSpec(name="amount", dtype="float64"),
        ColumnSpec(name="count", dtype="int64"),
        ColumnSpec(name="rate", dtype="float32"),
    ),
    outputs=(),
)
COUNTS = Signature(
    inputs=(ColumnSpec(name="a", dtype="int64"), ColumnSpec(name="b", dtype="int64")),
    outputs=(),
)
# a model registered from a numpy example: one int64 tensor of three columns
NUMPY_INT = input_signature(np.arange(6, dtype=np.int64).reshape(2, 3))


def body(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


def tensor(name: str, shape: list[int], datatype: str, data: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data, **extra}


def error(raw: bytes, signature: Signature = FLOATS, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        v2.decode_infer_request(raw, signature, **kwargs)
    return info.value


# -- decoding -----------------------------------------------------------------------------


def test_one_tensor_of_all_columns_is_a_matrix_in_signature_order() -> None:
    raw = body([tensor("input-0", [2, 4], "FP32", [1, 2, 3, 4, 5, 6, 7, 8.5])], id="r1")
    req = v2.decode_infer_request(raw, FLOATS)
    assert req.id == "r1"
    assert req.parameters == {}
    assert req.rows == 2
    assert isinstance(req.inputs, np.ndarray)
    assert req.inputs.dtype == np.float64
    np.testing.assert_array_equal(req.inputs, [[1, 2, 3, 4], [5, 6, 7, 8.5]])
    nested = body([tensor("x", [2, 4], "FP64", [[1, 2, 3, 4], [5, 6, 7, 8.5]])])
    np.testing.assert_array_equal(v2.decode_infer_request(nested, FLOATS).inputs, req.inputs)
    assert enforce(FLOATS, req.inputs).matrix is req.inputs  # nothing left to convert


def binary_body(name: str, arr: np.ndarray, datatype: str) -> tuple[bytes, int]:
    """A request with ``arr`` as binary tensor data (Triton's extension)."""
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(arr.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": arr.nbytes},
                }
            ]
        }
    )
    return head + arr.tobytes(), len(head)


@pytest.mark.parametrize("name", ["input-0", "f0", "f3", "anything"])
def test_one_n_by_k_tensor_is_taken_whatever_its_name(name: str) -> None:
    x = np.arange(8, dtype=np.float64).reshape(2, 4) + 0.5
    req = v2.decode_infer_request(body([tensor(name, [2, 4], "FP64", x.ravel().tolist())]), FLOATS)
    assert isinstance(req.inputs, np.ndarray)
    np.testing.assert_array_equal(req.inputs, x)
    raw, n = binary_body(name, x.astype(np.float32), "FP32")
    np.testing.assert_array_equal(v2.decode_infer_request(raw, FLOATS, header_length=n).inputs, x)
    # named as a column, [n, 1] is still that one column; another width is a matrix error
    err = error(body([tensor("f0", [1, 2], "FP64", [1, 2])]))
    assert "shape [1, 2] has 2 columns but the model takes 4 (f0, f1, f2, f3)" in err.message


@pytest.mark.parametrize("name", ["input-0", "amount"])
def test_mixed_int_and_float_columns_from_one_fp64_tensor(name: str) -> None:
    rows = [[1.5, 3.0, 0.25], [2.0, 4.0, 1.0]]
    json_req = v2.decode_infer_request(body([tensor(name, [2, 3], "FP64", rows)]), NUMBERS)
    raw, n = binary_body(name, np.array(rows), "FP64")
    binary_req = v2.decode_infer_request(raw, NUMBERS, header_length=n)
    for req in (json_req, binary_req):
        cols = req.inputs
        assert isinstance(cols, dict) and list(cols) == ["amount", "count", "rate"]
        assert cols["count"].dtype == np.int64 and cols["count"].tolist() == [3, 4]
        assert cols["amount"].tolist() == [1.5, 2.0]
        assert cols["rate"].dtype == np.float32
        assert len(enforce(NUMBERS, cols)) == 2
    bad = [[1.5, 3.0, 0.25], [2.0, 3.5, 1.0]]
    want = f"input {name!r} column 'count': row 1: 3.5 is not an integer; an int64 column"
    assert want in error(body([tensor(name, [2, 3], "FP64", bad)]), NUMBERS).message
    raw, n = binary_body(name, np.array(bad), "FP64")
    assert want in error(raw, NUMBERS, header_length=n).message
    # integer data feeds the float columns too; fractions never reach the int column
    ints = v2.decode_infer_request(body([tensor(name, [1, 3], "INT64", [1, 2, 3])]), NUMBERS)
    assert isinstance(ints.inputs, dict) and ints.inputs["amount"].dtype == np.float64


def test_integer_columns_take_integral_floats_and_name_the_bad_value() -> None:
    req = v2.decode_infer_request(body([tensor("x", [2, 2], "FP64", [1, 2.0, 3, 4])]), COUNTS)
    assert isinstance(req.inputs, np.ndarray) and req.inputs.dtype == np.int64
    np.testing.assert_array_equal(req.inputs, [[1, 2], [3, 4]])
    err = error(body([tensor("x", [2, 2], "FP64", [1, 2, 3, 4.5])]), COUNTS)
    assert "input 'x': row 1, column 'b': 4.5 is not an integer" in err.message
    err = error(body([tensor("x", [2, 2], "FP64", [1, 2, 1e19, 4])]), COUNTS)
    assert "row 1, column 'a': 10000000000000000000 is out of range for int64" in err.message
    per_column = [tensor("a", [2], "FP32", [1, 2]), tensor("b", [2], "FP64", [3, 4.0])]
    np.testing.assert_array_equal(
        v2.decode_infer_request(body(per_column), COUNTS).inputs, [[1, 3], [2, 4]]
    )
    raw, n = binary_body("x", np.array([[1.0, np.nan]]), "FP64")
    assert "row 0, column 'b': nan is not an integer" in error(raw, COUNTS, header_length=n).message


def test_big_integers_are_never_rounded_through_floats() -> None:
    # numpy reads [11620650.0, 2**63 - 2] as float64; the integer is read exactly instead
    big = 2**63 - 2
    req = v2.decode_infer_request(body([tensor("x", [1, 2], "INT64", [[11620650.0, big]])]), COUNTS)
    assert isinstance(req.inputs, np.ndarray) and req.inputs.tolist() == [[11620650, big]]
    # FP64 data cannot carry every integer from 2**53 on: refused for an integer column
    err = error(body([tensor("x", [1, 3], "FP64", [0.5, 2**53 + 1, 1])]), NUMBERS)
    assert "column 'count': row 0: 9007199254740992.0 is a float of 2**53 or more" in err.message
    exact = v2.decode_infer_request(
        body([tensor("x", [1, 3], "FP64", [0.5, 2**53 - 1, 1])]), NUMBERS
    ).inputs
    assert isinstance(exact, dict) and exact["count"].tolist() == [2**53 - 1]


def test_models_registered_from_a_numpy_example() -> None:
    assert NUMPY_INT.input_kind == "tensor"
    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    for name in ("input-0", "input", "x"):
        out = v2.decode_infer_request(body([tensor(name, [2, 3], "FP64", rows)]), NUMPY_INT)
        assert isinstance(out.inputs, np.ndarray) and out.inputs.dtype == np.int64
        np.testing.assert_array_equal(out.inputs, rows)
    raw, n = binary_body("input-0", np.array(rows, dtype=np.float32), "FP32")
    np.testing.assert_array_equal(
        v2.decode_infer_request(raw, NUMPY_INT, header_length=n).inputs, rows
    )
    err = error(body([tensor("input-0", [2, 3], "FP64", [1, 2, 3, 4, 5, 6.5])]), NUMPY_INT)
    assert "input 'input-0': row 1, column 2: 6.5 is not an integer" in err.message
    floats = input_signature(np.zeros((2, 3)))
    out = v2.decode_infer_request(body([tensor("input-0", [1, 3], "INT32", [1, 2, 3])]), floats)
    assert isinstance(out.inputs, np.ndarray) and out.inputs.dtype == np.float64


def test_integer_tensors_feed_float_columns() -> None:
    raw = body([tensor("x", [1, 4], "INT64", [1, 2, 3, 4])])
    out = v2.decode_infer_request(raw, FLOATS).inputs
    assert isinstance(out, np.ndarray) and out.dtype == np.float64


def test_one_tensor_per_column_in_any_order() -> None:
    inputs = [tensor(f"f{i}", [2], "FP64", [i, 10 + i]) for i in (3, 1, 0, 2)]
    req = v2.decode_infer_request(body(inputs), FLOATS)
    assert isinstance(req.inputs, np.ndarray)
    np.testing.assert_array_equal(req.inputs, [[0, 1, 2, 3], [10, 11, 12, 13]])
    column_shaped = [tensor(f"f{i}", [2, 1], "FP32", [[i], [10 + i]]) for i in range(4)]
    np.testing.assert_array_equal(
        v2.decode_infer_request(body(column_shaped), FLOATS).inputs, req.inputs
    )


def test_mixed_columns_come_back_as_typed_columns() -> None:
    inputs = [
        tensor("seen", [2], "BYTES", ["2024-05-01T12:30:00", "2024-05-02"]),
        tensor("flag", [2], "BOOL", [True, False]),
        tensor("country", [2], "BYTES", ["DE", "FR"]),
        tensor("count", [2], "INT32", [3, 4]),
        tensor("amount", [2], "FP32", [1.5, 2]),
    ]
    cols = v2.decode_infer_request(body(inputs), MIXED).inputs
    assert isinstance(cols, dict)
    assert list(cols) == ["amount", "count", "country", "flag", "seen"]
    assert cols["amount"].dtype == np.float64
    assert cols["count"].dtype == np.int32
    assert cols["country"].tolist() == ["DE", "FR"]
    assert cols["flag"].tolist() == [True, False]
    assert cols["seen"].dtype == np.dtype("datetime64[ns]")
    assert len(enforce(MIXED, cols)) == 2


def test_a_tensor_signature_takes_its_shape() -> None:
    raw = body([tensor("input", [2, 2, 3], "FP32", list(range(12)))])
    out = v2.decode_infer_request(raw, IMAGE).inputs
    assert isinstance(out, np.ndarray) and out.shape == (2, 2, 3) and out.dtype == np.float32
    err = error(body([tensor("input", [2, 3, 2], "FP32", list(range(12)))]), IMAGE)
    assert "shape [2, 3, 2] does not match the model's [-1, 2, 3]" in str(err)
    err = error(body([tensor("a", [1, 2, 3], "FP32", [0] * 6)] * 2), IMAGE)
    assert "one input tensor; got 2" in str(err)


def test_float32_columns_refuse_values_out_of_range() -> None:
    ok = v2.decode_infer_request(body([tensor("x", [1, 2], "FP64", [1.5, -2])]), F32).inputs
    assert isinstance(ok, np.ndarray) and ok.dtype == np.float32
    err = error(body([tensor("x", [1, 2], "FP64", [1e39, 1])]), F32)
    assert "out of range for float32" in str(err)


def test_parameters_and_requested_outputs() -> None:
    raw = body(
        [tensor("x", [1, 4], "FP32", [1, 2, 3, 4])],
        parameters={"priority": 1, "binary_data_output": True},
        outputs=[{"name": "predict", "parameters": {"binary_data": False}}],
    )
    req = v2.decode_infer_request(raw, FLOATS)
    assert req.parameters == {"priority": 1, "binary_data_output": False}
    assert not req.binary_output  # the output's own choice wins
    raw = body([tensor("x", [1, 4], "FP32", [1, 2, 3, 4])], parameters={"binary_data_output": True})
    assert v2.decode_infer_request(raw, FLOATS).binary_output


def test_binary_tensor_extension() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ]
        }
    )
    req = v2.decode_infer_request(head + x.tobytes(), FLOATS, header_length=str(len(head)))
    np.testing.assert_array_equal(req.inputs, x)
    texts = [b"DE", "Fr\u00e9".encode()]
    packed = b"".join(len(t).to_bytes(4, "little") + t for t in texts)
    head = orjson.dumps(
        {
            "inputs": [
                tensor("amount", [2], "FP64", [1, 2]),
                tensor("count", [2], "INT32", [1, 2]),
                {
                    "name": "country",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(packed)},
                },
                tensor("flag", [2], "BOOL", [True, True]),
                tensor("seen", [2], "BYTES", ["2024-01-01", "2024-01-02"]),
            ]
        }
    )
    cols = v2.decode_infer_request(head + packed, MIXED, header_length=len(head)).inputs
    assert isinstance(cols, dict) and cols["country"].tolist() == ["DE", "Fr\u00e9"]


# -- errors -------------------------------------------------------------------------------

ONE_ROW = [1.0, 2.0, 3.0, 4.0]

BAD: list[tuple[str, bytes, str]] = [
    ("malformed JSON", b'{"inputs": [', "not valid JSON"),
    ("empty body", b"", "is empty"),
    (
        "NaN literal",
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [NaN, 1, 2, 3]}]}',
        "NaN and Infinity are not JSON numbers",
    ),
    (
        "Infinity literal",
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", '
        b'"data": [-Infinity, 1, 2, 3]}]}',
        "NaN and Infinity",
    ),
    (
        "overflowing number",
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", '
        b'"data": [1e400, 1, 2, 3]}]}',
        "too large for a 64-bit float",
    ),
    ("not an object", b"[1, 2]", "must be a JSON object"),
    ("missing inputs", b'{"id": "a"}', "has no 'inputs'"),
    ("empty inputs", b'{"inputs": []}', "non-empty list"),
    ("unexpected field", body([tensor("x", [1, 4], "FP32", ONE_ROW)], extra=1), "'extra'"),
    ("id not a string", body([tensor("x", [1, 4], "FP32", ONE_ROW)], id=5), "'id' must be"),
    (
        "parameters not scalars",
        body([tensor("x", [1, 4], "FP32", ONE_ROW)], parameters={"a": [1]}),
        "parameters.a must be a string, number or boolean",
    ),
    (
        "binary_data_output not bool",
        body([tensor("x", [1, 4], "FP32", ONE_ROW)], parameters={"binary_data_output": "yes"}),
        "binary_data_output must be true or false",
    ),
    ("input not an object", body([5]), "inputs[0] must be an object"),
    ("unexpected input field", body([tensor("x", [1, 4], "FP32", ONE_ROW, dtype=1)]), "'dtype'"),
    (
        "name missing",
        body([{"shape": [1, 4], "datatype": "FP32", "data": ONE_ROW}]),
        "inputs[0].name must be a string",
    ),
    (
        "unknown datatype",
        body([tensor("x", [1, 4], "FLOAT32", ONE_ROW)]),
        "datatype 'FLOAT32' is not a datatype of the protocol; use one of BOOL",
    ),
    ("shape not a list", body([tensor("x", 4, "FP32", ONE_ROW)]), "shape must be a list"),
    ("negative dimension", body([tensor("x", [-1, 4], "FP32", ONE_ROW)]), "non-negative"),
    ("boolean dimension", body([tensor("x", [True, 4], "FP32", ONE_ROW)]), "non-negative"),
    ("no data", body([{"name": "x", "shape": [1, 4], "datatype": "FP32"}]), "has no 'data'"),
    ("data not a list", body([tensor("x", [1, 4], "FP32", 1.0)]), "data must be a list"),
    (
        "strings in FP32",
        body([tensor("x", [1, 4], "FP32", [1, "2", 3, 4])]),
        "input 'x': FP32 data must be numbers; got the string '2'",
    ),
    (
        "boolean in FP32",
        body([tensor("x", [1, 4], "FP32", [1, 2, 3, True])]),
        "FP32 data must be numbers; got true",
    ),
    (
        "null in FP64",
        body([tensor("x", [1, 4], "FP64", [1, None, 3, 4])]),
        "FP64 data must be numbers; got null",
    ),
    (
        "fraction in INT32",
        body([tensor("x", [1, 4], "INT32", [1, 2.5, 3, 4])]),
        "2.5 is not an integer",
    ),
    (
        "INT8 out of range",
        body([tensor("x", [1, 4], "INT8", [1, 2, 300, 4])]),
        "300 is out of range for int8",
    ),
    (
        "UINT8 negative",
        body([tensor("x", [1, 4], "UINT8", [1, 2, -3, 4])]),
        "-3 is out of range for uint8",
    ),
    (
        "numbers in BOOL",
        body([tensor("x", [1, 4], "BOOL", [1, 0, 1, 1])]),
        "BOOL data must be true or false",
    ),
    (
        "numbers in BYTES",
        body([tensor("x", [1, 4], "BYTES", ["a", 1, "b", "c"])]),
        "BYTES data must be strings",
    ),
    (
        "element count",
        body([tensor("x", [2, 4], "FP32", ONE_ROW)]),
        "shape [2, 4] holds 8 elements but data has 4",
    ),
    (
        "nested unlike shape",
        body([tensor("x", [1, 4], "FP32", [[1, 2], [3, 4]])]),
        "nested data has shape [2, 2], not [1, 4]",
    ),
    ("ragged", body([tensor("x", [2, 4], "FP32", [[1, 2, 3, 4], [1, 2, 3]])]), "ragged"),
    (
        "wrong number of columns",
        body([tensor("x", [1, 3], "FP32", [1, 2, 3])]),
        "has 3 columns but the model takes 4 (f0, f1, f2, f3)",
    ),
    (
        "unknown input",
        body([tensor("amount", [1], "FP32", [1])]),
        "unknown input 'amount'; this model takes one input per column (f0, f1, f2, f3)",
    ),
    (
        "missing inputs",
        body([tensor("f0", [1], "FP32", [1]), tensor("f2", [1], "FP32", [1])]),
        "missing inputs f1, f3",
    ),
    ("duplicate input", body([tensor("f0", [1], "FP32", [1])] * 2), "'f0' is given twice"),
    (
        "column shape",
        body([tensor(f"f{i}", [1, 2], "FP32", [1, 2]) for i in range(4)]),
        "must be [n] or [n, 1]",
    ),
    (
        "row counts differ",
        body([tensor(f"f{i}", [1 + (i == 2)], "FP32", [1] * (1 + (i == 2))) for i in range(4)]),
        "different numbers of rows",
    ),
    ("no rows", body([tensor("x", [0, 4], "FP32", [])]), "has no rows"),
    (
        "wrong datatype for column",
        body([tensor(f"f{i}", [1], "BYTES", ["a"]) for i in range(4)]),
        "input 'f0' has datatype BYTES but column 'f0' is float64; send FP64",
    ),
    (
        "unknown output",
        body([tensor("x", [1, 4], "FP32", ONE_ROW)], outputs=[{"name": "proba"}]),
        "unknown output 'proba'; this model's outputs: predict",
    ),
    (
        "output parameter",
        body(
            [tensor("x", [1, 4], "FP32", ONE_ROW)],
            outputs=[{"name": "predict", "parameters": {"classification": 2}}],
        ),
        "classification is not supported",
    ),
    (
        "shared memory",
        body([tensor("x", [1, 4], "FP32", ONE_ROW, parameters={"shared_memory_region": "r"})]),
        "shared memory (shared_memory_region) is not supported",
    ),
    (
        "binary size without binary",
        body(
            [
                {
                    "name": "x",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        ),
        "binary_data_size needs binary data",
    ),
]


@pytest.mark.parametrize(
    ("raw", "message"), [(b, m) for _, b, m in BAD], ids=[n for n, _, _ in BAD]
)
def test_bad_requests_name_the_field(raw: bytes, message: str) -> None:
    err = error(raw)
    assert err.status == 400
    assert message in err.message
    assert orjson.loads(err.body()) == {"error": err.message}
    assert isinstance(err, InvalidInput)


def test_column_type_errors_name_the_column() -> None:
    inputs = [
        tensor("amount", [1], "FP32", [1]),
        tensor("count", [1], "BOOL", [True]),
        tensor("country", [1], "BYTES", ["DE"]),
        tensor("flag", [1], "BOOL", [True]),
        tensor("seen", [1], "BYTES", ["2024-01-01"]),
    ]
    assert "input 'count' has datatype BOOL but column 'count' is int32; send INT32" in str(
        error(body(inputs), MIXED)
    )
    inputs[1] = tensor("count", [2], "FP32", [2.0, 1.5])
    assert "input 'count': row 1: 1.5 is not an integer; an int32 column takes integers" in str(
        error(body(inputs), MIXED)
    )
    inputs[1] = tensor("count", [1], "INT64", [2**40])
    assert "out of range for int32" in str(error(body(inputs), MIXED))
    inputs[1] = tensor("count", [1], "INT32", [1])
    inputs[4] = tensor("seen", [1], "BYTES", ["yesterday"])
    assert "takes ISO-8601 strings" in str(error(body(inputs), MIXED))
    matrix = [tensor("x", [1, 5], "FP32", [1, 2, 3, 4, 5])]
    assert "column 'country' is string; send one input per column" in str(
        error(body(matrix), MIXED)
    )


def test_binary_errors() -> None:
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    )
    payload = np.zeros(4, dtype=np.float32).tobytes()
    assert "Inference-Header-Content-Length header must be" in str(
        error(head + payload, header_length="abc")
    )
    assert "only 8 bytes remain" in str(error(head + payload[:8], header_length=len(head)))
    assert "no Inference-Header-Content-Length header says where its JSON part ends" in str(
        error(head + np.full(4, 0.7, dtype=np.float32).tobytes())
    )
    assert "belong to no input" in str(error(head + payload + b"xx", header_length=len(head)))
    wrong = head.replace(b"16", b"12")
    assert "needs 16 bytes; binary_data_size is 12" in str(
        error(wrong + payload[:12], header_length=len(wrong))
    )


def test_body_over_the_limit_is_413() -> None:
    check_size(100, 100)
    with pytest.raises(ProtocolError) as info:
        check_size(101, 100)
    assert info.value.status == 413
    assert "101 bytes, over this deployment's limit of 100" in info.value.message


# -- encoding and metadata ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "datatype"),
    [
        (np.array([0.5, 1.5]), "FP64"),
        (np.array([0.5], dtype=np.float32), "FP32"),
        (np.array([1, 0], dtype=np.int32), "INT32"),
        (np.array([1], dtype=np.uint8), "UINT8"),
        (np.array([True]), "BOOL"),
        (np.array(["a", "b"], dtype=object), "BYTES"),
    ],
)
def test_encode_response_datatypes(values: np.ndarray, datatype: str) -> None:
    doc = orjson.loads(v2.encode_infer_response("fraud", 3, "r1", values))
    assert doc["model_name"] == "fraud" and doc["model_version"] == "3" and doc["id"] == "r1"
    (out,) = doc["outputs"]
    assert out["name"] == "predict" and out["datatype"] == datatype
    assert out["shape"] == list(values.shape)
    assert out["data"] == values.tolist()


def test_encode_response_shapes_and_binary() -> None:
    proba = np.array([[0.1, 0.9], [0.8, 0.2]])
    doc = orjson.loads(v2.encode_infer_response("m", None, None, np.asfortranarray(proba), "proba"))
    assert "id" not in doc and "model_version" not in doc
    assert doc["outputs"][0]["shape"] == [2, 2]
    assert doc["outputs"][0]["data"] == [0.1, 0.9, 0.8, 0.2]
    payload, n = v2.encode_infer_response_binary("m", 1, "x", proba)
    head = orjson.loads(payload[:n])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 32}
    np.testing.assert_array_equal(np.frombuffer(payload[n:]).reshape(2, 2), proba)


def test_metadata() -> None:
    meta = v2.model_metadata("fraud", [1, 2], MIXED)
    assert meta["name"] == "fraud" and meta["versions"] == ["1", "2"]
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        ("amount", "FP64", [-1]),
        ("count", "INT32", [-1]),
        ("country", "BYTES", [-1]),
        ("flag", "BOOL", [-1]),
        ("seen", "BYTES", [-1]),
    ]
    image = v2.model_metadata("img", ["1"], IMAGE)
    assert image["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 2, 3]}]
    assert v2.model_metadata("f", [1], FLOATS)["outputs"] == [
        {"name": "predict", "datatype": "FP64", "shape": [-1]}
    ]
    server = v2.server_metadata("1.2.3")
    assert server == {"name": "kiln", "version": "1.2.3", "extensions": ["binary_tensor_data"]}


@pytest.mark.parametrize(
    ("signature", "shape", "datatype", "data"),
    [
        (FLOATS, [2, 4], "FP64", [1.5, 2, 3, 4, 5, 6, 7, 8]),
        (FLOATS, [1, 4], "FP32", [0.1, 0.2, 0.3, 0.4]),
        (FLOATS, [1, 4], "FP64", [1, 2, 3, 4]),  # integers feed float columns
        (FLOATS, [1, 4], "FP64", [1.5, True, 3, 4]),  # a boolean is no number
        (FLOATS, [1, 4], "FP64", [1.5, None, 3, 4]),  # nor is a null
        (FLOATS, [1, 4], "FP64", [1.5, 2.5, 3.5]),  # too few values
        (FLOATS, [0, 4], "FP64", []),  # no rows
        (FLOATS, [1, 3], "FP64", [1.5, 2.5, 3.5]),  # too few columns
        (F32, [1, 2], "FP64", [1e39, 1.5]),  # out of range, named by column
        (F32, [1, 2], "FP64", [0.5, 1.5]),
        (NUMBERS, [1, 3], "FP64", [1.5, 2.0, 0.25]),  # mixed columns: general path
        (FLOATS, [1, 4], "BYTES", ["a", "b", "c", "d"]),
    ],
)
def test_a_plain_matrix_decodes_as_the_general_path_does(
    signature: Signature, shape: list[int], datatype: str, data: list[Any]
) -> None:
    """The common request (one flat [n, k] tensor, no parameters) has a quicker decoder;
    the same tensor with (empty) parameters takes the general one: both must agree."""

    def decode(**extra: Any) -> Any:
        raw = body([tensor("input-0", shape, datatype, data, **extra)])
        try:
            return v2.decode_infer_request(raw, signature).inputs
        except ProtocolError as exc:
            return str(exc)

    plain, general = decode(), decode(parameters={})
    if isinstance(general, str):
        assert plain == general
    elif isinstance(general, np.ndarray):
        assert isinstance(plain, np.ndarray) and plain.dtype == general.dtype
        np.testing.assert_array_equal(plain, general)
    else:
        assert plain.keys() == general.keys()
        for name in general:
            np.testing.assert_array_equal(plain[name], general[name])


def test_single_row_decode_is_fast() -> None:
    """Target: well under 30 us for one row of 20 floats (asserted with slack for CI noise)."""
    sig = Signature(
        inputs=tuple(ColumnSpec(name=f"f{i}", dtype="float64") for i in range(20)), outputs=()
    )
    raw = body([tensor("input-0", [1, 20], "FP32", [0.1 * i for i in range(20)])], id="1")
    v2.decode_infer_request(raw, sig)
    best = min(timeit.repeat(lambda: v2.decode_infer_request(raw, sig), number=200, repeat=15))
    assert best / 200 < 60e-6


# -- a real Triton client -----------------------------------------------------------------


@pytest.fixture(scope="module")
def triton() -> Iterator[Any]:
    import tritonclient.http as httpclient

    app = make_app(
        [
            Served("fraud", FLOATS),
            Served("mixed", MIXED),
            Served("numbers", NUMBERS),
            Served("numpy", NUMPY_INT),
        ]
    )
    with serve(app) as url:
        client = httpclient.InferenceServerClient(url=url)
        yield client
        client.close()


def test_triton_client_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("fraud")
    assert triton.is_model_ready("fraud", "1")
    assert not triton.is_model_ready("nope")
    assert not triton.is_model_ready("fraud", "9")
    meta = triton.get_model_metadata("fraud")
    assert [i["name"] for i in meta["inputs"]] == ["f0", "f1", "f2", "f3"]
    assert triton.get_model_metadata("fraud", "2")["versions"] == ["1", "2"]
    assert triton.get_server_metadata()["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize("binary", [False, True])
def test_triton_client_infers(triton: Any, binary: bool) -> None:
    import tritonclient.http as httpclient

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    inp = httpclient.InferInput("input-0", [2, 4], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("predict", binary_data=binary)
    result = triton.infer("fraud", inputs=[inp], outputs=[out], request_id="req-1")
    np.testing.assert_array_equal(result.as_numpy("predict"), x.sum(axis=1))
    response = result.get_response()
    assert response["id"] == "req-1" and response["model_name"] == "fraud"
    # defaults: binary inputs, no outputs named (the client asks for binary outputs)
    inp = httpclient.InferInput("input-0", [2, 4], "FP32")
    inp.set_data_from_numpy(x)
    result = triton.infer("fraud", inputs=[inp], model_version="1")
    np.testing.assert_array_equal(result.as_numpy("predict"), x.sum(axis=1))


def test_triton_client_one_input_per_column(triton: Any) -> None:
    import tritonclient.http as httpclient

    values = {
        "amount": (np.array([1.5, 2.5]), "FP64"),
        "count": (np.array([1, 2], dtype=np.int32), "INT32"),
        "country": (np.array([b"DE", b"FR"], dtype=object), "BYTES"),
        "flag": (np.array([True, False]), "BOOL"),
        "seen": (np.array([b"2024-05-01", b"2024-05-02T10:00:00"], dtype=object), "BYTES"),
    }
    inputs = []
    for i, (name, (arr, datatype)) in enumerate(values.items()):
        inp = httpclient.InferInput(name, [2], datatype)
        inp.set_data_from_numpy(arr, binary_data=i % 2 == 0)
        inputs.append(inp)
    result = triton.infer("mixed", inputs=inputs)
    np.testing.assert_array_equal(result.as_numpy("predict"), [3.5, 4.5])


def test_triton_client_sees_our_errors(triton: Any) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    inp = httpclient.InferInput("input-0", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32), binary_data=False)
    with pytest.raises(InferenceServerException) as info:
        triton.infer("fraud", inputs=[inp])
    assert info.value.status() == "400"
    assert "has 3 columns but the model takes 4" in info.value.message()


@pytest.mark.parametrize("binary", [False, True])
def test_triton_client_sends_one_fp64_tensor_to_int_columns(triton: Any, binary: bool) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    x = np.array([[1.5, 3.0, 0.25], [2.0, 4.0, 1.0]])
    for model in ("numbers", "numpy"):
        inp = httpclient.InferInput("input-0", list(x.shape), "FP64")
        inp.set_data_from_numpy(x if model == "numbers" else np.round(x), binary_data=binary)
        result = triton.infer(model, inputs=[inp])
        want = x.sum(axis=1) if model == "numbers" else np.round(x).sum(axis=1)
        np.testing.assert_allclose(result.as_numpy("predict"), want)
    bad = x.copy()
    bad[1, 1] = 3.5
    inp = httpclient.InferInput("input-0", list(bad.shape), "FP64")
    inp.set_data_from_numpy(bad, binary_data=binary)
    with pytest.raises(InferenceServerException) as info:
        triton.infer("numbers", inputs=[inp])
    assert info.value.status() == "400"
    assert "column 'count': row 1: 3.5 is not an integer" in info.value.message()


# -- a live `kiln serve` ------------------------------------------------------------------


def test_live_server_takes_one_tensor_for_dataframe_and_numpy_models() -> None:
    """Triton's client, one FP64 tensor named input-0 (or after the first column)."""
    import pandas as pd
    import tritonclient.http as httpclient
    from _harness import serving
    from sklearn.linear_model import LinearRegression
    from tritonclient.utils import InferenceServerException

    import kiln

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "amount": rng.standard_normal(40),
            "count": rng.integers(0, 9, 40).astype(np.int64),
            "rate": rng.standard_normal(40),
        }
    )
    mixed = LinearRegression().fit(frame, frame["amount"] + 2 * frame["count"])
    kiln.models.register("mixed", mixed, input_example=frame.head(5))
    counts = rng.integers(0, 9, (40, 3)).astype(np.int64)
    from_numpy = LinearRegression().fit(counts, counts @ np.array([1.0, 2.0, 3.0]))
    kiln.models.register("counts", from_numpy, input_example=counts[:5])
    kiln.deployments.create("mixed-api", model="mixed/1")
    kiln.deployments.create("counts-api", model="counts/1")
    x = np.array([[0.5, 3.0, -1.0], [1.5, 7.0, 2.0]])
    cases = {
        "mixed-api": (
            x,
            mixed.predict(pd.DataFrame(x, columns=list(frame)).astype({"count": int})),
        ),
        "counts-api": (np.round(x), from_numpy.predict(np.round(x).astype(np.int64))),
    }
    with serving(["mixed-api", "counts-api"]) as server:
        client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
        for deployment, (data, want) in cases.items():
            for name in ("input-0", "amount", "anything"):
                for binary in (False, True):
                    inp = httpclient.InferInput(name, list(data.shape), "FP64")
                    inp.set_data_from_numpy(data, binary_data=binary)
                    out = httpclient.InferRequestedOutput("predict", binary_data=binary)
                    result = client.infer(deployment, inputs=[inp], outputs=[out])
                    np.testing.assert_allclose(result.as_numpy("predict"), want)
        for deployment, needle in (
            ("mixed-api", "input 'input-0' column 'count': row 1: 3.5 is not an integer"),
            ("counts-api", "input 'input-0': row 1, column 1: 3.5 is not an integer"),
        ):
            bad = cases[deployment][0].copy()
            bad[1, 1] = 3.5
            inp = httpclient.InferInput("input-0", list(bad.shape), "FP64")
            inp.set_data_from_numpy(bad, binary_data=True)
            with pytest.raises(InferenceServerException) as info:
                client.infer(deployment, inputs=[inp])
            assert info.value.status() == "400"
            assert needle in info.value.message()
        with server.client() as http:
            r = http.post(
                "/v2/models/mixed-api/infer",
                json={"inputs": [tensor("input-0", [2, 3], "FP64", x.ravel().tolist())]},
            )
            assert r.status_code == 200, r.text
            assert r.headers["kiln-model-version"] == "mixed/1"
            request = {"amount": 0.5, "count": 3, "rate": -1.0}
            r = http.post("/deployments/mixed-api/predict", json={"request": request})
            assert r.status_code == 200, r.text
            assert r.headers["kiln-model-version"] == r.json()["model"] == "mixed/1"
        client.close()


# -- the documented one-tensor form for mixed numbers, driven by schemathesis --------------

NUMBERS_SCHEMA = schemathesis.openapi.from_asgi(
    "/openapi.json", make_app([Served("numbers", NUMBERS), Served("counts", COUNTS)])
).include(path_regex="/infer$")


def test_the_document_offers_one_tensor_for_mixed_numbers() -> None:
    doc = NUMBERS_SCHEMA.raw_schema
    inputs = doc["components"]["schemas"]["V2InferRequest_numbers"]["properties"]["inputs"]
    one, _ = inputs["anyOf"]
    matrix = one["items"]
    assert matrix["properties"]["name"] == {"type": "string", "description": "Any name"}
    assert matrix["properties"]["datatype"] == {"enum": ["FP64"]}
    row = matrix["properties"]["data"]["anyOf"][0]
    assert [item["type"] for item in row["prefixItems"]] == ["number", "integer", "number"]
    assert row["prefixItems"][1]["maximum"] == 2**53 - 1  # FP64 holds every integer below 2**53


@NUMBERS_SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_schemathesis_one_tensor_for_mixed_numbers(case: Any) -> None:
    case.call_and_validate()
