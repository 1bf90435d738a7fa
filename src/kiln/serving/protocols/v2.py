"""The Open Inference Protocol v2 over REST (KServe, Triton): tensors in, tensors out.

A request names input tensors with a ``shape``, a ``datatype`` and row-major ``data``
(flat or nested exactly as ``shape``; its element count is the product of ``shape``). A
model with a *columns* signature of k columns takes either

- one tensor of shape ``[n, k]``, columns in signature order (any name), or
- one tensor per column, named as the column, of shape ``[n]`` or ``[n, 1]``;

a *tensor* signature takes one tensor of shape ``[n, ...]`` matching its trailing
dimensions. :func:`decode_infer_request` returns a 2-D array in signature order when
every column shares one numeric dtype (nothing is split and restacked on the hot path)
and a dict of columns otherwise. Float columns take FP16/FP32/FP64 and integer data,
integer columns integer datatypes, bool columns BOOL, string and datetime columns BYTES.

Triton's binary tensor extension is read and written too, so ``tritonclient.http`` works
with its defaults: a request whose JSON is followed by raw tensor bytes says how long
its JSON part is in the ``Inference-Header-Content-Length`` header (pass it as
``header_length``) and gives each binary input ``parameters.binary_data_size``. When the
request asks for binary output (``InferRequest.binary_output``), answer with
:func:`encode_infer_response_binary` and set that header from the length it returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from kiln.registry.signature import ColumnSpec, Signature
from kiln.serving.protocols._columns import (
    Columns,
    Plan,
    cast_numeric,
    check_int_range,
    datetimes,
    describe,
    family,
    has_bools,
    join,
    plan,
    stack,
)
from kiln.serving.protocols._json import ProtocolError, dumps, loads

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "InferRequest",
    "accepted_datatypes",
    "datatype_of",
    "decode_infer_request",
    "encode_infer_response",
    "encode_infer_response_binary",
    "model_metadata",
    "output_names",
    "server_metadata",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_NAMES = ", ".join(DATATYPES)
_FLOATS = ("FP16", "FP32", "FP64")
_INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_ACCEPTS: dict[str, tuple[str, ...]] = {
    "float": (*_FLOATS, *_INTS),
    "int": _INTS,
    "uint": _INTS,
    "bool": ("BOOL",),
    "text": ("BYTES",),
    "datetime": ("BYTES",),
}
_REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")
_INPUT_KEYS = ("name", "shape", "datatype", "parameters", "data")
_REQUEST_KEY_SET = frozenset(_REQUEST_KEYS)
_INPUT_KEY_SET = frozenset(_INPUT_KEYS)
_INT = {int}
_UNSUPPORTED = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
_TENSOR_NAME = "input"
_OUTPUT_NAME = "predict"


class InferRequest(NamedTuple):
    """A decoded inference request: ``id`` (or None), the model input, ``parameters``.

    ``inputs`` is a 2-D array in signature order or a dict of columns (see the module
    docstring). ``parameters`` holds the request's parameters with
    ``binary_data_output`` set to whether the output is wanted as binary data, per
    Triton's rule (an output's own ``binary_data`` wins over the request's).
    """

    id: str | None
    inputs: np.ndarray | Columns
    parameters: dict[str, Any]

    @property
    def binary_output(self) -> bool:
        return self.parameters.get("binary_data_output") is True

    @property
    def rows(self) -> int:
        if isinstance(self.inputs, np.ndarray):
            return int(self.inputs.shape[0])
        return len(next(iter(self.inputs.values()))) if self.inputs else 0


# -- datatypes ----------------------------------------------------------------------------


def datatype_of(dtype: np.dtype[Any] | str) -> str:
    """The protocol datatype of a numpy dtype or a signature dtype name."""
    if isinstance(dtype, str):
        if dtype in ("string", "object", "category") or dtype.startswith("datetime64"):
            return "BYTES"
        dtype = np.dtype(dtype)
    kind = dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'U' if kind == 'u' else ''}INT{dtype.itemsize * 8}"
    if kind == "f" and dtype.itemsize in (2, 4, 8):
        return f"FP{dtype.itemsize * 8}"
    return "BYTES"


def accepted_datatypes(spec: ColumnSpec) -> tuple[str, ...]:
    """The datatypes a tensor for this signature column may have."""
    return _ACCEPTS[family(spec)]


# -- metadata -----------------------------------------------------------------------------


def server_metadata(version: str, name: str = "kiln") -> dict[str, Any]:
    """The ``GET /v2`` answer."""
    return {"name": name, "version": version, "extensions": ["binary_tensor_data"]}


def output_names(signature: Signature) -> tuple[str, ...]:
    """The output tensor names a request may ask for (``predict`` for an unnamed output)."""
    names = tuple(s.name for s in signature.outputs if s.name)
    return names or (_OUTPUT_NAME,)


def model_metadata(
    name: str, versions: Sequence[str | int], signature: Signature, *, platform: str = "kiln"
) -> dict[str, Any]:
    """The ``GET /v2/models/{name}[/versions/{v}]`` answer.

    Columns are listed one tensor per column of shape ``[-1]`` (a single ``[-1, k]``
    tensor in signature order is accepted too); a tensor signature as one tensor.
    """
    inputs: list[dict[str, Any]]
    if signature.input_kind == "tensor":
        spec = signature.inputs[0]
        inputs = [
            {
                "name": spec.name or _TENSOR_NAME,
                "datatype": datatype_of(spec.dtype),
                "shape": list(spec.shape or (-1,)),
            }
        ]
    else:
        inputs = [
            {"name": s.name, "datatype": datatype_of(s.dtype), "shape": [-1]}
            for s in signature.inputs
        ]
    outputs = [
        {
            "name": s.name or _OUTPUT_NAME,
            "datatype": datatype_of(s.dtype),
            "shape": list(s.shape or (-1,)),
        }
        for s in signature.outputs
    ]
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": platform,
        "inputs": inputs,
        "outputs": outputs,
    }


# -- decoding -----------------------------------------------------------------------------


def decode_infer_request(
    body: bytes,
    signature: Signature,
    *,
    header_length: int | str | None = None,
    outputs: Sequence[str] | None = None,
) -> InferRequest:
    """Decode an ``/infer`` body into the model's input, or raise ProtocolError (400).

    ``header_length`` is the ``Inference-Header-Content-Length`` header when the request
    has one (binary tensor data follows the JSON); ``outputs`` are the output names a
    request may ask for (default: :func:`output_names`).
    """
    json_part, binary = _split(body, header_length)
    try:
        doc = loads(json_part, "inference request body")
    except ProtocolError:
        if binary is None and b'"binary_data_size"' in body:
            raise ProtocolError(
                "the body holds binary tensor data (binary_data_size) but no "
                f"{HEADER_LENGTH} header says where its JSON part ends"
            ) from None
        raise
    if not isinstance(doc, dict):
        raise ProtocolError(
            f"inference request body must be a JSON object with 'inputs'; got {describe(doc)}"
        )
    if not doc.keys() <= _REQUEST_KEY_SET:
        extra = next(k for k in doc if k not in _REQUEST_KEY_SET)
        raise ProtocolError(
            f"unexpected field {extra!r} in the inference request; allowed: "
            f"{', '.join(_REQUEST_KEYS)}"
        )
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"'id' must be a string; got {describe(request_id)}")
    parameters = _parameters(doc.get("parameters"), "parameters")
    binary_out = parameters.get("binary_data_output")
    if binary_out is not None and not isinstance(binary_out, bool):
        raise ProtocolError(
            f"parameters.binary_data_output must be true or false; got {describe(binary_out)}"
        )
    requested = doc.get("outputs")
    if requested is not None:
        wanted = _requested_outputs(requested, outputs or output_names(signature))
        if wanted is not None:
            parameters = {**parameters, "binary_data_output": wanted}
    raw = doc.get("inputs")
    if raw is None:
        raise ProtocolError(
            "the inference request has no 'inputs'; send "
            '{"inputs": [{"name", "shape", "datatype", "data"}, ...]}'
        )
    if not isinstance(raw, list) or not raw:
        raise ProtocolError(f"'inputs' must be a non-empty list of tensors; got {describe(raw)}")
    bools = has_bools(json_part)
    tensors = _Tensors(raw, binary, bools)
    if signature.input_kind == "tensor":
        data: np.ndarray | Columns = _as_tensor(tensors, signature)
    else:
        data = _as_columns(tensors, signature)
    tensors.finish()
    return InferRequest(request_id, data, parameters)


def _split(body: bytes, header_length: int | str | None) -> tuple[bytes, bytes | None]:
    if header_length is None:
        return body, None
    try:
        n = int(header_length)
    except (TypeError, ValueError):
        n = -1
    if not 0 < n <= len(body):
        raise ProtocolError(
            f"the {HEADER_LENGTH} header must be the length of the JSON part of the body "
            f"(1 to {len(body)}); got {header_length!r}"
        )
    return body[:n], body[n:]


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} must be an object of parameters; got {describe(value)}")
    for key, v in value.items():
        if not isinstance(v, str | int | float):  # bool is an int
            raise ProtocolError(
                f"{where}.{key} must be a string, number or boolean; got {describe(v)}"
            )
    return value


def _requested_outputs(value: Any, names: Sequence[str]) -> bool | None:
    """Check requested outputs; the binary_data choice one of them makes, if any."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ProtocolError(
            f"'outputs' must be a list of {{\"name\"}} objects; got {describe(value)}"
        )
    choice: bool | None = None
    for i, out in enumerate(value):
        where = f"outputs[{i}]"
        if not isinstance(out, dict):
            raise ProtocolError(f"{where} must be an object with a 'name'; got {describe(out)}")
        for key in out:
            if key not in ("name", "parameters"):
                raise ProtocolError(
                    f"unexpected field {key!r} in {where}; allowed: name, parameters"
                )
        name = out.get("name")
        if not isinstance(name, str):
            raise ProtocolError(f"{where}.name must be a string; got {describe(name)}")
        if name not in names:
            raise ProtocolError(
                f"{where}.name: unknown output {name!r}; this model's outputs: {join(names)}"
            )
        params = _parameters(out.get("parameters"), f"{where}.parameters")
        for key, v in params.items():
            if key != "binary_data":
                raise ProtocolError(
                    f"{where}.parameters.{key} is not supported by this server; "
                    "supported: binary_data"
                )
            if not isinstance(v, bool):
                raise ProtocolError(
                    f"{where}.parameters.binary_data must be true or false; got {describe(v)}"
                )
            choice = v
    return choice


class _Tensors:
    """The request's input tensors, validated one by one; binary data consumed in order."""

    def __init__(self, raw: list[Any], binary: bytes | None, bools: bool) -> None:
        self.raw = raw
        self.binary = binary
        self.offset = 0
        self.bools = bools
        self.heads: list[tuple[str, list[int], str]] = []
        for i, item in enumerate(raw):
            self.heads.append(self._head(i, item))

    def _head(self, i: int, item: Any) -> tuple[str, list[int], str]:
        if type(item) is not dict:
            raise ProtocolError(
                f"inputs[{i}] must be an object with name, shape, datatype and data; "
                f"got {describe(item)}"
            )
        if not item.keys() <= _INPUT_KEY_SET:
            extra = next(k for k in item if k not in _INPUT_KEY_SET)
            raise ProtocolError(
                f"unexpected field {extra!r} in inputs[{i}]; allowed: {', '.join(_INPUT_KEYS)}"
            )
        name = item.get("name")
        if type(name) is not str:
            raise ProtocolError(f"inputs[{i}].name must be a string; got {describe(name)}")
        shape = item.get("shape")
        # every dimension an int (a bool is no dimension), none negative
        if (
            type(shape) is not list
            or not set(map(type, shape)) <= _INT
            or min(shape, default=0) < 0
        ):
            raise ProtocolError(
                f"input {name!r}: shape must be a list of non-negative integers; "
                f"got {describe(shape) if not isinstance(shape, list) else shape}"
            )
        datatype = item.get("datatype")
        if type(datatype) is not str or datatype not in DATATYPES:
            shown = repr(datatype) if isinstance(datatype, str) else describe(datatype)
            raise ProtocolError(
                f"input {name!r}: datatype {shown} is not a datatype of the protocol; "
                f"use one of {_NAMES}"
            )
        return name, shape, datatype

    def tensor(self, i: int) -> np.ndarray:
        """Input ``i`` as an array of its shape (numbers as float64/int64/uint64)."""
        name, shape, datatype = self.heads[i]
        item = self.raw[i]
        where = f"input {name!r}"
        params = _parameters(item.get("parameters"), f"inputs[{i}].parameters")
        for key in _UNSUPPORTED:
            if key in params:
                raise ProtocolError(
                    f"{where}: shared memory ({key}) is not supported by this server; "
                    "send the data in JSON or as binary data"
                )
        count = math.prod(shape)
        size = params.get("binary_data_size")
        if size is not None:
            if "data" in item:
                raise ProtocolError(f"{where}: give either 'data' or binary_data_size, not both")
            return self._binary(where, shape, datatype, size, count)
        if "data" not in item:
            raise ProtocolError(f"{where} has no 'data'")
        data = item["data"]
        if not isinstance(data, list):
            raise ProtocolError(f"{where}: data must be a list (row-major); got {describe(data)}")
        if datatype == "BYTES":
            return _bytes(data, shape, count, where)
        return _numbers(data, shape, count, datatype, where, self.bools)

    def _binary(
        self, where: str, shape: list[int], datatype: str, size: Any, count: int
    ) -> np.ndarray:
        if self.binary is None:
            raise ProtocolError(
                f"{where}: binary_data_size needs binary data after the JSON and the "
                f"{HEADER_LENGTH} header; or send the values in 'data'"
            )
        if type(size) is not int or size < 0:
            raise ProtocolError(f"{where}: binary_data_size must be a non-negative integer")
        chunk = self.binary[self.offset : self.offset + size]
        if len(chunk) != size:
            raise ProtocolError(
                f"{where}: binary_data_size is {size} but only {len(chunk)} bytes remain "
                "after the JSON"
            )
        self.offset += size
        if datatype == "BYTES":
            return _unpack_bytes(chunk, shape, count, where)
        dtype = DATATYPES[datatype].newbyteorder("<")
        if size != count * dtype.itemsize:
            raise ProtocolError(
                f"{where}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes; "
                f"binary_data_size is {size}"
            )
        return np.frombuffer(chunk, dtype=dtype).reshape(shape).astype(DATATYPES[datatype])

    def finish(self) -> None:
        if self.binary is not None and self.offset != len(self.binary):
            raise ProtocolError(
                f"{len(self.binary) - self.offset} bytes of binary data after the JSON belong "
                "to no input (check binary_data_size)"
            )


def _nested_ok(arr: np.ndarray, shape: list[int], count: int, where: str) -> np.ndarray:
    if arr.size != count:
        raise ProtocolError(
            f"{where}: shape {shape} holds {count} elements but data has {arr.size}"
        )
    if arr.ndim > 1 and list(arr.shape) != shape:
        raise ProtocolError(
            f"{where}: nested data has shape {list(arr.shape)}, not {shape}; send it flat "
            "(row-major) or nested exactly as shape"
        )
    return arr.reshape(shape)


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack_: list[Any] = [iter(data)]
    while stack_:
        for v in stack_[-1]:
            if isinstance(v, list):
                stack_.append(iter(v))
                break
            out.append(v)
        else:
            stack_.pop()
    return out


def _ragged(where: str) -> ProtocolError:
    return ProtocolError(
        f"{where}: nested data is ragged (rows of different lengths); send it flat (row-major) "
        "or nested exactly as shape"
    )


def _numbers(
    data: list[Any], shape: list[int], count: int, datatype: str, where: str, bools: bool
) -> np.ndarray:
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        flat = _flatten(data)
        if any(isinstance(v, dict) for v in flat):
            arr = np.asarray(flat, dtype=object)
        else:
            raise _ragged(where) from None
    kind = arr.dtype.kind
    if datatype == "BOOL":
        if kind != "b" and arr.size:
            first = next((v for v in _flatten(data) if v is not True and v is not False), None)
            raise ProtocolError(f"{where}: BOOL data must be true or false; got {describe(first)}")
        return _nested_ok(arr.astype(bool, copy=False), shape, count, where)
    floats = datatype in _FLOATS
    if kind not in "fiu":
        flat = _flatten(data)
        for v in flat:
            if v is True or v is False or not isinstance(v, int | float):
                raise ProtocolError(f"{where}: {datatype} data must be numbers; got {describe(v)}")
        if floats:
            arr = np.asarray(flat, dtype=np.float64)
        else:
            arr = _whole(flat, DATATYPES[datatype], where)
        return _nested_ok(arr, shape, count, where)
    if bools:
        flat = _flatten(data) if arr.ndim > 1 else data
        for v in flat:
            if v is True or v is False:
                raise ProtocolError(f"{where}: {datatype} data must be numbers; got {describe(v)}")
    arr = _nested_ok(arr, shape, count, where)
    if floats:
        return arr if kind == "f" else arr.astype(np.float64)
    target = DATATYPES[datatype]
    if kind == "f":
        arr = cast_numeric(arr, target, f"{where} ({datatype})")
    else:
        check_int_range(arr, target, f"{where} ({datatype})")
    return arr


def _whole(flat: list[Any], target: np.dtype[Any], where: str) -> np.ndarray:
    info = np.iinfo(target)
    for v in flat:
        if isinstance(v, float) and not v.is_integer():
            raise ProtocolError(
                f"{where}: {v!r} is not an integer; {datatype_of(target)} takes integers"
            )
        if not info.min <= v <= info.max or (isinstance(v, float) and v <= -(2.0**63)):
            raise ProtocolError(
                f"{where}: {int(v)} is out of range for {target.name} ([{info.min}, {info.max}])"
            )
    return np.array([int(v) for v in flat], dtype=target)


def _bytes(data: list[Any], shape: list[int], count: int, where: str) -> np.ndarray:
    flat = _flatten(data)
    for v in flat:
        if not isinstance(v, str):
            raise ProtocolError(f"{where}: BYTES data must be strings; got {describe(v)}")
    if len(flat) != count:
        raise ProtocolError(
            f"{where}: shape {shape} holds {count} elements but data has {len(flat)}"
        )
    if flat is not data:  # nested: it must nest exactly as shape
        try:
            nested = np.asarray(data, dtype=object)
        except ValueError:
            raise _ragged(where) from None
        if nested.ndim > 1 and list(nested.shape) != shape:
            raise ProtocolError(
                f"{where}: nested data has shape {list(nested.shape)}, not {shape}; send it "
                "flat (row-major) or nested exactly as shape"
            )
    out = np.empty(count, dtype=object)
    out[:] = flat
    return out.reshape(shape)


def _unpack_bytes(chunk: bytes, shape: list[int], count: int, where: str) -> np.ndarray:
    values: list[str] = []
    pos = 0
    try:
        while pos < len(chunk):
            n = int.from_bytes(chunk[pos : pos + 4], "little")
            if pos + 4 + n > len(chunk):
                raise ValueError("truncated")
            values.append(chunk[pos + 4 : pos + 4 + n].decode("utf-8"))
            pos += 4 + n
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(
            f"{where}: binary BYTES data must be 4-byte little-endian lengths each followed "
            "by that many UTF-8 bytes"
        ) from None
    if len(values) != count:
        raise ProtocolError(
            f"{where}: shape {shape} holds {count} elements but the binary data has {len(values)}"
        )
    out = np.empty(count, dtype=object)
    out[:] = values
    return out.reshape(shape)


def _convert(arr: np.ndarray, datatype: str, layout: Plan, j: int, where: str) -> np.ndarray:
    """A decoded tensor (or one column of it) as the dtype of column ``j``."""
    fam = layout.families[j]
    if datatype not in _ACCEPTS[fam]:
        spec = layout.specs[j]
        col = f"column {spec.name!r}" if spec.name else "the model's input"
        raise ProtocolError(
            f"{where} has datatype {datatype} but {col} is {spec.dtype}; send "
            f"{datatype_of(spec.dtype)} (accepted: {', '.join(_ACCEPTS[fam])})"
        )
    dtype = layout.dtypes[j]
    if dtype is None:  # text as sent; datetimes parsed
        if fam == "datetime":
            return datetimes(arr.tolist(), layout.specs[j].dtype, where, nullable=False)
        return arr
    return cast_numeric(arr, dtype, where)


def _no_rows(where: str) -> ProtocolError:
    return ProtocolError(f"{where} has no rows; send at least one")


def _as_tensor(tensors: _Tensors, signature: Signature) -> np.ndarray:
    layout = plan(signature, signature.inputs)
    spec = layout.specs[0]
    if len(tensors.heads) != 1:
        names = [h[0] for h in tensors.heads]
        raise ProtocolError(f"this model takes one input tensor; got {len(names)} ({join(names)})")
    name, shape, datatype = tensors.heads[0]
    where = f"input {name!r}"
    want = list(spec.shape or (-1,))
    ok = len(shape) == len(want) and all(
        w in (-1, g) for w, g in zip(want[1:], shape[1:], strict=True)
    )
    if not ok:
        raise ProtocolError(
            f"{where}: shape {shape} does not match the model's {want} (-1 is any size)"
        )
    if shape[0] == 0:
        raise _no_rows(where)
    return _convert(tensors.tensor(0), datatype, layout, 0, where)


def _as_columns(tensors: _Tensors, signature: Signature) -> np.ndarray | Columns:
    layout = plan(signature, signature.inputs)
    names = layout.names
    heads = tensors.heads
    if len(heads) == 1:
        name, shape, datatype = heads[0]
        if len(shape) == 2 and name not in layout.index:
            return _matrix(tensors, layout)
    if layout.uniform is not None and layout.families[0] == "float" and tensors.binary is None:
        fast = _float_columns(tensors, layout)
        if fast is not None:
            return fast
    by_name: dict[str, int] = {}
    for i, (name, _, _) in enumerate(heads):
        if name in by_name:
            raise ProtocolError(f"input {name!r} is given twice")
        if name not in layout.index:
            raise ProtocolError(
                f"unknown input {name!r}; this model takes one input per column ({join(names)}) "
                f"or one [n, {len(names)}] tensor with the columns in that order"
            )
        by_name[name] = i
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ProtocolError(
            f"missing input{'s' if len(missing) > 1 else ''} {join(missing)}; this model takes "
            f"one input per column ({join(names)})"
        )
    rows: dict[str, int] = {}
    columns: Columns = {}
    for j, column in enumerate(names):
        i = by_name[column]
        name, shape, datatype = heads[i]
        where = f"input {name!r}"
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise ProtocolError(f"{where}: shape {shape} must be [n] or [n, 1] for one column")
        if shape[0] == 0:
            raise _no_rows(where)
        rows[name] = shape[0]
        columns[column] = _convert(tensors.tensor(i).reshape(-1), datatype, layout, j, where)
    if len(set(rows.values())) > 1:
        raise ProtocolError(
            "inputs have different numbers of rows: "
            + ", ".join(f"{k}={v}" for k, v in rows.items())
        )
    return stack(columns, layout)


def _float_columns(tensors: _Tensors, layout: Plan) -> np.ndarray | None:
    """One input per float column, all FP, plain: stacked in one numpy call, else None.

    None sends the request down the general path, which names whatever is wrong.
    """
    index = layout.index
    order: list[Any] = [None] * len(index)
    rows = -1
    for i, (name, shape, datatype) in enumerate(tensors.heads):
        j = index.get(name)
        if j is None or order[j] is not None or datatype not in _FLOATS or len(shape) != 1:
            return None
        if rows != shape[0]:
            if rows != -1 or shape[0] == 0:
                return None
            rows = shape[0]
        item = tensors.raw[i]
        data = item.get("data")
        if type(data) is not list or len(data) != rows or "parameters" in item:
            return None
        order[j] = data
    if any(d is None for d in order):
        return None
    try:
        arr = np.asarray(order)
    except (ValueError, TypeError):
        return None
    if arr.dtype.kind not in "fiu" or arr.ndim != 2:
        return None
    if tensors.bools and any(v is True or v is False for d in order for v in d):
        return None
    uniform = layout.uniform
    assert uniform is not None
    try:
        return np.ascontiguousarray(cast_numeric(arr, uniform, "inputs").T)
    except ProtocolError:  # out of range: the general path names the column
        return None


def _matrix(tensors: _Tensors, layout: Plan) -> np.ndarray | Columns:
    name, shape, datatype = tensors.heads[0]
    names = layout.names
    where = f"input {name!r}"
    if shape[1] != len(names):
        raise ProtocolError(
            f"{where}: shape {shape} has {shape[1]} columns but the model takes {len(names)} "
            f"({join(names)}), in that order"
        )
    if shape[0] == 0:
        raise _no_rows(where)
    if layout.text is not None:
        raise ProtocolError(
            f"{where}: one [n, k] tensor holds one datatype, but column {layout.text.name!r} is "
            f"{layout.text.dtype}; send one input per column ({join(names)})"
        )
    arr = tensors.tensor(0)
    if layout.uniform is not None:
        return _convert(arr, datatype, layout, 0, where)
    columns = {
        n: _convert(arr[:, j], datatype, layout, j, f"{where} column {n!r}")
        for j, n in enumerate(names)
    }
    return stack(columns, layout)


# -- encoding -----------------------------------------------------------------------------


def _output(outputs: Any) -> tuple[np.ndarray, str]:
    arr = np.asarray(outputs)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    datatype = datatype_of(arr.dtype)
    return arr, datatype


def _response_head(
    model_name: str,
    model_version: str | int | None,
    request_id: str | None,
    parameters: Mapping[str, Any] | None,
) -> dict[str, Any]:
    head: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        head["model_version"] = str(model_version)
    if request_id is not None:
        head["id"] = request_id
    if parameters:
        head["parameters"] = dict(parameters)
    return head


def encode_infer_response(
    model_name: str,
    model_version: str | int | None,
    request_id: str | None,
    outputs: Any,
    output_name: str = _OUTPUT_NAME,
    *,
    parameters: Mapping[str, Any] | None = None,
) -> bytes:
    """The JSON inference response for one output array (datatype from its dtype)."""
    arr, datatype = _output(outputs)
    if datatype == "BYTES":
        data: Any = [v if isinstance(v, str) else _text(v) for v in arr.ravel().tolist()]
    else:
        data = np.ascontiguousarray(arr).reshape(-1)
    head = _response_head(model_name, model_version, request_id, parameters)
    head["outputs"] = [
        {"name": output_name, "shape": list(arr.shape), "datatype": datatype, "data": data}
    ]
    return dumps(head)


def encode_infer_response_binary(
    model_name: str,
    model_version: str | int | None,
    request_id: str | None,
    outputs: Any,
    output_name: str = _OUTPUT_NAME,
    *,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, int]:
    """The response with the output as binary data: the body and its JSON part's length.

    Send the length as the ``Inference-Header-Content-Length`` header, with
    ``Content-Type: application/octet-stream``.
    """
    arr, datatype = _output(outputs)
    if datatype == "BYTES":
        parts = []
        for v in arr.ravel().tolist():
            raw = (v if isinstance(v, str) else _text(v)).encode("utf-8")
            parts.append(len(raw).to_bytes(4, "little") + raw)
        payload = b"".join(parts)
    else:
        payload = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    head = _response_head(model_name, model_version, request_id, parameters)
    head["outputs"] = [
        {
            "name": output_name,
            "shape": list(arr.shape),
            "datatype": datatype,
            "parameters": {"binary_data_size": len(payload)},
        }
    ]
    json_part = dumps(head)
    return json_part + payload, len(json_part)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
