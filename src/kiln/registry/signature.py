"""Model signatures: what a model takes and returns, inferred once and enforced on every call.

A signature is either *columns* (named, typed columns, from a DataFrame, a dict of columns
or an Arrow table) or a *tensor* (one array of a dtype and trailing shape, from a numpy
array). :func:`enforce` turns whatever the caller hands over (DataFrame, dict of columns,
list of records, Arrow table, numpy array) into a :class:`Batch` in signature order, with
only casts that lose no information: integers to floats, floats to a narrower float,
integers to a narrower integer when every value fits, and column reordering.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from kiln.core import InvalidInput

__all__ = [
    "Batch",
    "ColumnSpec",
    "Signature",
    "enforce",
    "infer_signature",
    "input_signature",
    "with_outputs",
]

COLUMNS = "columns"
TENSOR = "tensor"
_TEXT = ("string", "object")


@dataclass(frozen=True, kw_only=True)
class ColumnSpec:
    """One input or output: a column (``name``) or an unnamed tensor with a ``shape``.

    ``dtype`` is a numpy dtype name (``float64``, ``int32``, ``bool``, ``datetime64[ns]``)
    or ``string`` / ``category`` for text columns; ``-1`` in ``shape`` is any size.
    """

    name: str | None
    dtype: str
    shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSpec:
        shape = data.get("shape")
        return cls(
            name=data.get("name"),
            dtype=str(data["dtype"]),
            shape=tuple(int(s) for s in shape) if shape is not None else None,
        )

    def describe(self) -> str:
        shape = f" {list(self.shape)}" if self.shape is not None else ""
        return f"{self.name or '(tensor)'}: {self.dtype}{shape}"


@dataclass(frozen=True, kw_only=True)
class Signature:
    inputs: tuple[ColumnSpec, ...]
    outputs: tuple[ColumnSpec, ...]
    input_kind: str = COLUMNS

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.inputs if c.name is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_kind": self.input_kind,
            "inputs": [c.to_dict() for c in self.inputs],
            "outputs": [c.to_dict() for c in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            input_kind=str(data.get("input_kind", COLUMNS)),
            inputs=tuple(ColumnSpec.from_dict(c) for c in data["inputs"]),
            outputs=tuple(ColumnSpec.from_dict(c) for c in data["outputs"]),
        )


class Batch:
    """Model input in signature order, converted at the edge to what a flavor needs.

    It keeps a 2-D matrix when the caller sent one (no split and restack on the hot path)
    and named columns otherwise; :meth:`to_numpy` and :meth:`to_pandas` convert lazily.
    """

    __slots__ = ("columns", "matrix", "names", "rows")

    def __init__(
        self,
        *,
        names: tuple[str, ...] | None,
        columns: Mapping[str, Any] | None = None,
        matrix: np.ndarray | None = None,
    ) -> None:
        self.names = names
        self.columns = columns
        self.matrix = matrix
        if matrix is not None:
            self.rows = int(matrix.shape[0]) if matrix.ndim else 1
        elif columns:
            self.rows = len(next(iter(columns.values())))
        else:
            self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def to_numpy(self) -> np.ndarray:
        """A 2-D array (or the tensor as sent); columns of mixed types give an object array."""
        if self.matrix is not None:
            return self.matrix
        assert self.columns is not None
        arrays = [np.asarray(c) for c in self.columns.values()]
        if not arrays:
            return np.empty((0, 0))
        if all(a.dtype.kind in "fiub" for a in arrays):
            return np.column_stack(arrays)
        return np.column_stack([a.astype(object) for a in arrays])

    def to_pandas(self) -> Any:
        import pandas as pd

        if self.columns is not None:
            return pd.DataFrame(dict(self.columns), copy=False)
        assert self.matrix is not None
        matrix = self.matrix if self.matrix.ndim == 2 else self.matrix.reshape(len(self), -1)
        return pd.DataFrame(matrix, columns=list(self.names) if self.names else None, copy=False)


# -- inference ----------------------------------------------------------------------------


def _is_numeric(dtype: str) -> bool:
    return dtype not in (*_TEXT, "category") and not dtype.startswith("datetime")


def _spec_of_column(name: str, values: Any) -> ColumnSpec:
    import pandas as pd

    dtype = getattr(values, "dtype", None)
    if dtype is None:
        values = np.asarray(values)
        dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return ColumnSpec(name=name, dtype="category")
    if isinstance(dtype, pd.DatetimeTZDtype):
        raise InvalidInput(
            f"input_example column {name!r} is timezone-aware ({dtype}); convert it to UTC "
            "without a time zone (tz_convert('UTC').tz_localize(None)) before registering"
        )
    if isinstance(dtype, pd.StringDtype) or str(dtype) in ("object", "str") or dtype.kind == "U":
        return ColumnSpec(name=name, dtype="string")
    if isinstance(dtype, np.dtype):
        if dtype.kind == "M":
            return ColumnSpec(name=name, dtype=str(dtype))
        if dtype.kind in "fiub":
            return ColumnSpec(name=name, dtype=dtype.name)
    if hasattr(dtype, "numpy_dtype"):  # pandas nullable Int64, Float64, boolean
        return ColumnSpec(name=name, dtype=np.dtype(dtype.numpy_dtype).name)
    raise InvalidInput(
        f"input_example column {name!r} has type {dtype}, which a signature cannot describe; "
        "use numbers, booleans, strings, categories or datetimes"
    )


def _columns_of(data: Any, what: str) -> dict[str, Any] | None:
    """Named columns of a DataFrame, dict of columns, records or Arrow table; else None."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        if not all(isinstance(c, str) for c in data.columns):
            raise InvalidInput(f"{what} column names must be strings; got {list(data.columns)}")
        return {c: data[c] for c in data.columns}
    if isinstance(data, pd.Series):
        return {str(data.name or "0"): data}
    if type(data).__module__.startswith("pyarrow") and hasattr(data, "column_names"):
        return {n: data.column(n).to_numpy(zero_copy_only=False) for n in data.column_names}
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for key, value in data.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{what} keys must be column names (strings); got {key!r}")
            out[key] = value
        scalars = [k for k, v in out.items() if _is_scalar(v)]
        if out and len(scalars) == len(out):
            return {k: [v] for k, v in out.items()}  # one row given as a dict of scalars
        if scalars:
            raise InvalidInput(
                f"{what} column {scalars[0]!r} is a single value while other columns are "
                "lists; pass every column as a list, or one row as a dict of single values"
            )
        return out
    if isinstance(data, Sequence) and data and all(isinstance(r, Mapping) for r in data):
        names = list(dict.fromkeys(k for r in data for k in r))
        return {n: [r.get(n) for r in data] for n in names}
    return None


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bytes | numbers.Number | np.generic | datetime)


def infer_signature(input_example: Any, output: Any) -> Signature:
    """The signature of a model that maps ``input_example`` to ``output``."""
    return with_outputs(input_signature(input_example), output)


def with_outputs(signature: Signature, output: Any) -> Signature:
    """``signature`` with its outputs inferred from one model output."""
    return Signature(
        inputs=signature.inputs, outputs=_output_specs(output), input_kind=signature.input_kind
    )


def input_signature(input_example: Any) -> Signature:
    """The input half of a signature (no outputs yet), inferred from an example."""
    columns = _columns_of(input_example, "input_example")
    if columns is not None:
        if not columns:
            raise InvalidInput("input_example has no columns; pass at least one row of input")
        inputs = tuple(_spec_of_column(n, v) for n, v in columns.items())
        kind = COLUMNS
    else:
        arr = np.asarray(input_example)
        if arr.dtype.kind not in "fiub":
            raise InvalidInput(
                f"input_example must be a DataFrame, a dict of columns, records, an Arrow "
                f"table or a numeric numpy array; got {type(input_example).__name__} "
                f"of dtype {arr.dtype}"
            )
        if arr.ndim == 0:
            raise InvalidInput("input_example must hold at least one row, got a scalar")
        inputs = (ColumnSpec(name=None, dtype=arr.dtype.name, shape=(-1, *arr.shape[1:])),)
        kind = TENSOR
    return Signature(inputs=inputs, outputs=(), input_kind=kind)


def _output_specs(output: Any) -> tuple[ColumnSpec, ...]:
    columns = _columns_of(output, "model output") if not isinstance(output, np.ndarray) else None
    if columns is not None:
        return tuple(_spec_of_column(n, v) for n, v in columns.items())
    arr = np.asarray(output)
    # An object array is text only when it holds text; otherwise "object" says what is
    # known (any Python values) instead of claiming strings.
    text = arr.dtype.kind in "US" or (
        arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr.ravel())
    )
    dtype = "string" if text else str(arr.dtype)
    return (ColumnSpec(name=None, dtype=dtype, shape=(-1, *arr.shape[1:])),)


# -- enforcement --------------------------------------------------------------------------


def _kind_name(values: Any) -> str:
    import pandas as pd

    dtype = getattr(values, "dtype", None)
    if dtype is None:
        return type(values).__name__
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if isinstance(dtype, pd.StringDtype) or str(dtype) == "str":
        return "string"
    if isinstance(dtype, np.dtype) and dtype.kind == "O":
        sample = next((x for x in values if x is not None), None)
        return f"object ({type(sample).__name__} values)" if sample is not None else "object"
    return str(dtype)


def _mismatch(name: str | None, expected: str, values: Any) -> InvalidInput:
    where = f"column {name!r}" if name else "input tensor"
    return InvalidInput(
        f"{where}: expected {expected}, received {_kind_name(values)}, which cannot be safely cast"
    )


def _numeric(values: Any, name: str | None, expected: str) -> np.ndarray:
    """``values`` as numpy of dtype ``expected``, or InvalidInput if that would lose data."""
    import pandas as pd

    if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        raise _mismatch(name, expected, values)
    if hasattr(values, "dtype") and hasattr(values.dtype, "numpy_dtype"):  # nullable pandas
        if values.isna().any() and np.dtype(expected).kind != "f":
            raise InvalidInput(f"column {name!r}: expected {expected} but it holds nulls")
        values = values.to_numpy(dtype="float64" if values.isna().any() else None)
    arr = np.asarray(values)
    if arr.dtype.kind == "O":
        if not all(
            x is None or (isinstance(x, numbers.Number | np.generic) and not isinstance(x, str))
            for x in arr.ravel()
        ):
            raise _mismatch(name, expected, arr)
        if any(x is None for x in arr.ravel()) and np.dtype(expected).kind != "f":
            raise InvalidInput(f"column {name!r}: expected {expected} but it holds nulls")
        arr = np.asarray(arr.tolist(), dtype="float64" if np.dtype(expected).kind == "f" else None)
    target = np.dtype(expected)
    src = arr.dtype
    if src == target:
        return arr
    if np.can_cast(src, target, casting="safe") or (src.kind == "f" and target.kind == "f"):
        return arr.astype(target)
    if src.kind in "iu" and target.kind in "iu" and arr.size:
        info = np.iinfo(target)
        if info.min <= arr.min() and arr.max() <= info.max:
            return arr.astype(target)
    if src.kind == "b" and target.kind in "iuf":
        return arr.astype(target)
    raise _mismatch(name, expected, arr)


def _text(values: Any, name: str, expected: str) -> Any:
    import pandas as pd

    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, pd.CategoricalDtype):
        return values
    arr = values if isinstance(values, pd.Series) else np.asarray(values, dtype=object)
    if getattr(arr, "dtype", None) is not None and arr.dtype.kind == "U":
        arr = arr.astype(object)
    if not all(x is None or isinstance(x, str) for x in arr):
        raise _mismatch(name, expected, arr)
    if expected == "category":
        return pd.Categorical(arr)
    return np.asarray(arr, dtype=object)


def _datetime(values: Any, name: str, expected: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind == "O" and all(
        x is None
        or (isinstance(x, datetime | np.datetime64) and getattr(x, "tzinfo", None) is None)
        for x in arr.ravel()
    ):
        return np.array(arr.tolist(), dtype=expected)
    if arr.dtype.kind != "M":
        raise _mismatch(name, expected, arr)
    return arr.astype(expected)


def _cast_column(values: Any, spec: ColumnSpec) -> Any:
    name = spec.name or ""
    if spec.dtype in (*_TEXT, "category"):
        return _text(values, name, spec.dtype)
    if spec.dtype.startswith("datetime64"):
        return _datetime(values, name, spec.dtype)
    return _numeric(values, name, spec.dtype)


def enforce(signature: Signature, data: Any) -> Batch:
    """Check ``data`` against the signature and return it as a :class:`Batch`.

    Raises InvalidInput naming the missing, unexpected or mistyped column.
    """
    if signature.input_kind == TENSOR:
        return _enforce_tensor(signature.inputs[0], data)
    specs = signature.inputs
    names = tuple(s.name for s in specs if s.name is not None)
    if isinstance(data, np.ndarray) or (
        isinstance(data, list) and data and isinstance(data[0], list)
    ):
        return _enforce_matrix(specs, names, np.asarray(data))
    columns = _columns_of(data, "input")
    if columns is None:
        raise InvalidInput(
            "model input must be a pandas DataFrame, a dict of columns, a list of records, "
            f"an Arrow table or a 2-D numpy array with columns {list(names)}; "
            f"got {type(data).__name__}"
        )
    missing = [n for n in names if n not in columns]
    if missing:
        raise InvalidInput(
            f"missing column {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f"; the model's signature expects columns {list(names)}"
        )
    extra = [n for n in columns if n not in names]
    if extra:
        raise InvalidInput(
            f"unexpected column {extra[0]!r}; the model's signature expects columns {list(names)}"
        )
    out = {s.name: _cast_column(columns[s.name], s) for s in specs if s.name is not None}
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1:
        raise InvalidInput(f"input columns have different lengths: {sorted(lengths)}")
    return Batch(names=names, columns=out)


def _enforce_matrix(
    specs: tuple[ColumnSpec, ...], names: tuple[str, ...], arr: np.ndarray
) -> Batch:
    if arr.ndim == 1 and arr.shape[0] == len(specs):
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != len(specs):
        raise InvalidInput(
            f"a numpy input must be 2-D with {len(specs)} columns in the order {list(names)}; "
            f"got shape {arr.shape}"
        )
    dtypes = {s.dtype for s in specs}
    if len(dtypes) == 1 and _is_numeric(next(iter(dtypes))):
        return Batch(names=names, matrix=_numeric(arr, None, next(iter(dtypes))))
    columns = {s.name: _cast_column(arr[:, i], s) for i, s in enumerate(specs) if s.name}
    return Batch(names=names, columns=columns)


def _enforce_tensor(spec: ColumnSpec, data: Any) -> Batch:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        data = data.to_numpy()
    arr = np.asarray(data)
    shape = spec.shape or (-1,)
    if arr.ndim == len(shape) - 1 and arr.ndim >= 1:
        arr = arr.reshape(1, *arr.shape)  # one example without the batch axis
    ok = arr.ndim == len(shape) and all(
        want in (-1, got) for want, got in zip(shape[1:], arr.shape[1:], strict=True)
    )
    if not ok:
        raise InvalidInput(
            f"input tensor: expected shape {list(shape)} (-1 is any size), received "
            f"{list(arr.shape)}"
        )
    return Batch(names=None, matrix=_numeric(arr, None, spec.dtype))
