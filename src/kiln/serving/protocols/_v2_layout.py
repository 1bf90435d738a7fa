"""A request's tensors as the model's input, in signature order.

A *columns* signature of k columns takes one ``[n, k]`` tensor (columns in signature
order, any name) or one tensor per column named as the column (``[n]`` or ``[n, 1]``);
a *tensor* signature takes one tensor matching its trailing dimensions. The answer is a
2-D array when every column shares one numeric dtype, else a dict of columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.registry.signature import Signature
from kiln.serving.protocols._columns import (
    Columns,
    Plan,
    cast_numeric,
    datetimes,
    has_bools,
    join,
    plan,
    stack,
)
from kiln.serving.protocols._json import ProtocolError
from kiln.serving.protocols._v2_datatypes import ACCEPTS, FLOATS, datatype_of
from kiln.serving.protocols._v2_tensors import Tensors

__all__ = ["as_columns", "as_tensor", "plain_matrix"]

_PLAIN_KEYS = frozenset(("name", "shape", "datatype", "data"))


def _convert(
    arr: np.ndarray,
    datatype: str,
    layout: Plan,
    j: int,
    where: str,
    columns: tuple[str, ...] | None = None,
) -> np.ndarray:
    """A decoded tensor (or one column of it) as the dtype of column ``j``.

    ``columns`` names the columns of a 2-D ``arr`` for error messages.
    """
    fam = layout.families[j]
    if datatype not in ACCEPTS[fam]:
        spec = layout.specs[j]
        col = f"column {spec.name!r}" if spec.name else "the model's input"
        raise ProtocolError(
            f"{where} has datatype {datatype} but {col} is {spec.dtype}; send "
            f"{datatype_of(spec.dtype)} (accepted: {', '.join(ACCEPTS[fam])})"
        )
    dtype = layout.dtypes[j]
    if dtype is None:  # text as sent; datetimes parsed
        if fam == "datetime":
            return datetimes(arr.tolist(), layout.specs[j].dtype, where, nullable=False)
        return arr
    return cast_numeric(arr, dtype, where, columns)


def _no_rows(where: str) -> ProtocolError:
    return ProtocolError(f"{where} has no rows; send at least one")


def as_tensor(tensors: Tensors, signature: Signature) -> np.ndarray:
    """The one tensor of a tensor signature, of its shape and dtype."""
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


def as_columns(tensors: Tensors, signature: Signature) -> np.ndarray | Columns:
    """The columns of a columns signature: a matrix or a dict, in signature order."""
    layout = plan(signature, signature.inputs)
    names = layout.names
    heads = tensors.heads
    if len(heads) == 1:
        name, shape, _ = heads[0]
        # one [n, k] tensor, whatever its name (clients call it input-0, x, or after the
        # first column); [n, 1] named as a column is that column
        if len(shape) == 2 and (shape[1] != 1 or name not in layout.index):
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


def plain_matrix(raw: list[Any], signature: Signature, body: bytes) -> np.ndarray | None:
    """The request most clients send, one flat ``[n, k]`` float tensor for a model of k
    float columns, decoded without the per-tensor bookkeeping of :class:`Tensors`.

    The result is what :func:`as_columns` gives for it; None sends every other request,
    and every mistake (which the general path names), down that path.
    """
    if len(raw) != 1 or signature.input_kind == "tensor":
        return None
    item = raw[0]
    if type(item) is not dict or item.keys() != _PLAIN_KEYS:
        return None
    shape, data, datatype = item["shape"], item["data"], item["datatype"]
    if type(shape) is not list or len(shape) != 2 or type(data) is not list:
        return None
    layout = plan(signature, signature.inputs)
    if layout.uniform is None or layout.families[0] != "float" or datatype not in FLOATS:
        return None
    rows, width = shape
    if (
        type(rows) is not int
        or type(width) is not int
        or rows < 1
        or width != len(layout.names)
        or len(data) != rows * width
        or type(item["name"]) is not str
        or (width == 1 and item["name"] in layout.index)  # [n, 1] named as its column
        or has_bools(body)  # numpy would take true as 1.0; the general path refuses it
    ):
        return None
    arr = np.asarray(data)
    if arr.dtype.kind != "f" or arr.ndim != 1:
        return None
    try:
        return cast_numeric(arr.reshape(rows, width), layout.uniform, "inputs")
    except ProtocolError:  # out of range: the general path names the column
        return None


def _float_columns(tensors: Tensors, layout: Plan) -> np.ndarray | None:
    """One input per float column, all FP, plain: stacked in one numpy call, else None.

    None sends the request down the general path, which names whatever is wrong.
    """
    index = layout.index
    order: list[Any] = [None] * len(index)
    rows = -1
    for i, (name, shape, datatype) in enumerate(tensors.heads):
        j = index.get(name)
        if j is None or order[j] is not None or datatype not in FLOATS or len(shape) != 1:
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


def _matrix(tensors: Tensors, layout: Plan) -> np.ndarray | Columns:
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
        return _convert(arr, datatype, layout, 0, where, names)
    columns = {
        n: _convert(arr[:, j], datatype, layout, j, f"{where} column {n!r}")
        for j, n in enumerate(names)
    }
    return stack(columns, layout)
