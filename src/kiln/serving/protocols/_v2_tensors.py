"""One request's input tensors: each head (name, shape, datatype) checked, data read.

:class:`Tensors` validates every tensor's head up front (the mapping to the model's
columns needs them all) and reads a tensor's data only when asked, from JSON (flat
row-major or nested exactly as the shape) or from the binary data after the JSON.
Numbers come back as float64/int64/uint64 (or the binary datatype's own dtype), checked
against the declared datatype: an INT8 tensor's values fit int8, a FP32 tensor's are
numbers, a BOOL tensor's are booleans.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.serving.protocols._columns import cast_numeric, check_int_range, describe, inexact
from kiln.serving.protocols._json import ProtocolError
from kiln.serving.protocols._v2_binary import HEADER_LENGTH, BinaryData
from kiln.serving.protocols._v2_datatypes import DATATYPES, FLOATS, NAMES, datatype_of

__all__ = ["Head", "Tensors", "parameters"]

Head = tuple[str, list[int], str]  # name, shape, datatype

_INPUT_KEYS = ("name", "shape", "datatype", "parameters", "data")
_INPUT_KEY_SET = frozenset(_INPUT_KEYS)
_INT = {int}
_UNSUPPORTED = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def parameters(value: Any, where: str) -> dict[str, Any]:
    """A ``parameters`` object: scalars by name (empty when absent)."""
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


class Tensors:
    """The request's input tensors, validated one by one; binary data consumed in order."""

    def __init__(self, raw: list[Any], binary: bytes | None, bools: bool) -> None:
        self.raw = raw
        self.binary = None if binary is None else BinaryData(binary)
        self.bools = bools
        self.heads: list[Head] = []
        for i, item in enumerate(raw):
            self.heads.append(self._head(i, item))

    def _head(self, i: int, item: Any) -> Head:
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
                f"use one of {NAMES}"
            )
        return name, shape, datatype

    def tensor(self, i: int) -> np.ndarray:
        """Input ``i`` as an array of its shape (numbers as float64/int64/uint64)."""
        name, shape, datatype = self.heads[i]
        item = self.raw[i]
        where = f"input {name!r}"
        params = parameters(item.get("parameters"), f"inputs[{i}].parameters")
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
            if self.binary is None:
                raise ProtocolError(
                    f"{where}: binary_data_size needs binary data after the JSON and the "
                    f"{HEADER_LENGTH} header; or send the values in 'data'"
                )
            return self.binary.take(where, shape, datatype, size, count)
        if "data" not in item:
            raise ProtocolError(f"{where} has no 'data'")
        data = item["data"]
        if not isinstance(data, list):
            raise ProtocolError(f"{where}: data must be a list (row-major); got {describe(data)}")
        if datatype == "BYTES":
            return _bytes(data, shape, count, where)
        return _numbers(data, shape, count, datatype, where, self.bools)

    def finish(self) -> None:
        """Refuse binary data no tensor claimed."""
        if self.binary is not None:
            self.binary.finish()


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
    floats = datatype in FLOATS
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
        if inexact(arr):  # big integers among floats: numpy rounded them; read them exactly
            return _nested_ok(_whole(_flatten(data), target, where), shape, count, where)
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
