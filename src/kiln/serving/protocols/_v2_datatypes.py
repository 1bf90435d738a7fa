"""Open Inference Protocol datatypes and names: the vocabulary the v2 modules share.

Which protocol datatype a numpy or signature dtype is, which datatypes a signature
column accepts, and the tensor names used when a signature has none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.registry.signature import ColumnSpec, Signature
from kiln.serving.protocols._columns import family

__all__ = [
    "ACCEPTS",
    "DATATYPES",
    "FLOATS",
    "INTS",
    "NAMES",
    "OUTPUT_NAME",
    "TENSOR_NAME",
    "accepted_datatypes",
    "datatype_of",
    "output_names",
]

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
NAMES = ", ".join(DATATYPES)
FLOATS = ("FP16", "FP32", "FP64")
INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
ACCEPTS: dict[str, tuple[str, ...]] = {
    "float": (*FLOATS, *INTS),
    "int": (*INTS, *FLOATS),  # float data must be integral: 3.0 is taken, 3.5 refused
    "uint": (*INTS, *FLOATS),
    "bool": ("BOOL",),
    "text": ("BYTES",),
    "datetime": ("BYTES",),
}
TENSOR_NAME = "input"
OUTPUT_NAME = "predict"


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
    return ACCEPTS[family(spec)]


def output_names(signature: Signature) -> tuple[str, ...]:
    """The output tensor names a request may ask for (``predict`` for an unnamed output)."""
    names = tuple(s.name for s in signature.outputs if s.name)
    return names or (OUTPUT_NAME,)
