"""The MLflow scoring protocol: ``POST /invocations`` as ``mlflow models serve`` answers it.

A JSON body (``Content-Type: application/json``) holds exactly one of

- ``dataframe_split``: ``{"columns": [...], "data": [[...], ...], "index"?: [...]}``;
- ``dataframe_records``: ``[{"column": value, ...}, ...]``;
- ``instances`` or ``inputs`` (TF-serving style): a list of rows in signature order, a
  list of records, or an object of columns (``{"column": [values]}``, or single values
  for one row); for a tensor model, the nested list of the tensor.

A ``text/csv`` body has a header row naming the columns. Columns may come in any order
but must be exactly the model's; values follow the shared column rules (``null`` or an
empty CSV field is a missing value in a float or string column). The answer is
``{"predictions": [...]}``. No pandas on this path: numpy throughout, csv for CSV.

Errors are answered as MLflow's scoring server answers them, so MLflow's REST client
parses them (``RestException``): ``{"error_code": "BAD_REQUEST", "message": "..."}``,
the code one of MLflow's ``ErrorCode`` names (see :func:`error_body`). A Content-Type
other than JSON or CSV, or a charset other than UTF-8, is a 415.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from kiln.registry.signature import Signature
from kiln.serving.protocols._columns import (
    Columns,
    Plan,
    cast_numeric,
    column_from_json,
    column_from_text,
    describe,
    has_bools,
    join,
    jsonable,
    plan,
    stack,
)
from kiln.serving.protocols._json import ProtocolError, dumps, loads

__all__ = [
    "CONTENT_TYPES",
    "ERROR_CODES",
    "FORMATS",
    "decode_invocation",
    "encode_predictions",
    "error_body",
    "error_code",
]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CONTENT_TYPES = ("application/json", "text/csv")
_SPLIT_KEYS = ("columns", "data", "index")

#: MLflow ``ErrorCode`` names by HTTP status; MLflow maps each back to the same status
#: class (a 4xx code for a 4xx). Other 4xx are BAD_REQUEST, other 5xx INTERNAL_ERROR.
ERROR_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_code(status: int) -> str:
    """The MLflow ``ErrorCode`` name for an HTTP error status."""
    return ERROR_CODES.get(status) or ("BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")


def error_body(status: int, message: str) -> bytes:
    """An ``/invocations`` error as MLflow answers it: ``{"error_code", "message"}``."""
    return orjson.dumps({"error_code": error_code(status), "message": message})


def encode_predictions(predictions: Any) -> bytes:
    """``{"predictions": [...]}``; a dict of output columns is answered as records."""
    if isinstance(predictions, Mapping):
        names = list(predictions)
        cols = [np.asarray(predictions[n]).tolist() for n in names]
        records = [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]
        return dumps({"predictions": records})
    return dumps({"predictions": jsonable(np.asarray(predictions))})


def decode_invocation(
    body: bytes, content_type: str | None, signature: Signature
) -> np.ndarray | Columns:
    """Decode an ``/invocations`` body into the model's input, or raise ProtocolError.

    Returns a 2-D array in signature order when every column shares one numeric dtype,
    else a dict of columns in signature order; the tensor for a tensor model.
    """
    media, _, params = (content_type or "").partition(";")
    media = media.strip().lower()
    if params:
        _check_charset(params, content_type)
    if media == "text/csv":
        return _csv(body, signature)
    if media != "application/json":
        raise ProtocolError(
            f"Content-Type {content_type or '(none)'!r} is not supported on /invocations; "
            f"use {' or '.join(CONTENT_TYPES)}",
            status=415,
        )
    doc = loads(body, "request body")
    if not isinstance(doc, dict):
        raise ProtocolError(
            f"request body must be a JSON object with one of {', '.join(FORMATS)}; "
            f"got {describe(doc)}"
        )
    found = [k for k in FORMATS if k in doc]
    if len(found) != 1:
        got = f"got {', '.join(found)}" if found else f"got keys {join(list(doc))}"
        raise ProtocolError(f"request body must hold exactly one of {', '.join(FORMATS)}; {got}")
    key = found[0]
    for other in doc:
        if other == key:
            continue
        if other == "params":
            if doc["params"]:
                raise ProtocolError("'params' are not supported by Kiln deployments; omit them")
            continue
        raise ProtocolError(
            f"unexpected field {other!r}; the body holds one of {', '.join(FORMATS)}"
        )
    value = doc[key]
    bools = has_bools(body)
    if signature.input_kind == "tensor":
        return _tensor(key, value, signature)
    layout = plan(signature, signature.inputs)
    if key == "dataframe_split":
        return _split(value, layout, bools)
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise ProtocolError(
                f"dataframe_records must be a list of objects (one per row); got {describe(value)}"
            )
        return _records(value, layout, key, bools)
    return _tf_serving(key, value, layout, bools)


def _check_charset(params: str, content_type: str | None) -> None:
    """Refuse a charset other than UTF-8 (415), as MLflow's scoring server does."""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            if charset not in ("utf-8", "utf8"):
                raise ProtocolError(
                    f"Content-Type {content_type!r}: charset {value.strip()!r} is not "
                    "supported on /invocations; send UTF-8",
                    status=415,
                )


# -- formats -------------------------------------------------------------------------------


def _split(value: Any, layout: Plan, bools: bool) -> np.ndarray | Columns:
    if not isinstance(value, dict):
        raise ProtocolError(
            'dataframe_split must be an object {"columns": [...], "data": [[...], ...]}; '
            f"got {describe(value)}"
        )
    for key in value:
        if key not in _SPLIT_KEYS:
            raise ProtocolError(
                f"unexpected field {key!r} in dataframe_split; allowed: {', '.join(_SPLIT_KEYS)}"
            )
    columns = value.get("columns")
    if columns is None:
        raise ProtocolError(
            f"dataframe_split needs 'columns': the model's columns are {join(layout.names)}"
        )
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise ProtocolError(
            f"dataframe_split.columns must be a list of column names; got {describe(columns)}"
        )
    order = _order(columns, layout, "dataframe_split.columns")
    data = value.get("data")
    if not isinstance(data, list):
        raise ProtocolError(
            f"dataframe_split.data must be a list of rows (lists); got {describe(data)}"
        )
    index = value.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(data)):
        raise ProtocolError(
            f"dataframe_split.index must be a list with one label per row ({len(data)})"
        )
    return _rows(data, order, layout, "dataframe_split.data", bools)


def _order(columns: list[str], layout: Plan, where: str) -> list[int]:
    """For each model column, its position in ``columns`` (which must be exactly them)."""
    if tuple(columns) == layout.names and len(layout.index) == len(columns):
        return list(range(len(columns)))  # distinct, in the model's order: the common case
    seen: dict[str, int] = {}
    for i, c in enumerate(columns):
        if c in seen:
            raise ProtocolError(f"{where}: column {c!r} is given twice")
        seen[c] = i
    missing = [n for n in layout.names if n not in seen]
    if missing:
        raise ProtocolError(
            f"{where}: missing column{'s' if len(missing) > 1 else ''} {join(missing)}; "
            f"the model's columns are {join(layout.names)}"
        )
    extra = [c for c in columns if c not in layout.index]
    if extra:
        raise ProtocolError(
            f"{where}: unexpected column {extra[0]!r}; the model's columns are {join(layout.names)}"
        )
    return [seen[n] for n in layout.names]


def _rows(
    data: list[Any], order: list[int], layout: Plan, where: str, bools: bool
) -> np.ndarray | Columns:
    """Rows of values (lists), columns at ``order``, as the model's input."""
    if not data:
        raise ProtocolError(f"{where} has no rows; send at least one")
    k = len(order)
    for i, row in enumerate(data):
        if type(row) is not list or len(row) != k:
            shown = f"a list of {len(row)}" if isinstance(row, list) else describe(row)
            raise ProtocolError(f"{where}[{i}] must be a list of {k} values; got {shown}")
    uniform = layout.uniform
    if uniform is not None and layout.families[0] != "bool":
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError):
            arr = None
        if (
            arr is not None
            and arr.dtype.kind in "fiu"
            and arr.ndim == 2
            and not (bools and any(v is True or v is False for row in data for v in row))
        ):
            if order != list(range(k)):
                arr = arr[:, order]
            try:
                return cast_numeric(arr, uniform, where)
            except ProtocolError:
                pass  # the column path names the column
    columns = {
        name: column_from_json(
            [row[j] for row in data], layout.specs[c], f"{where} column {name!r}", bools=bools
        )
        for c, (name, j) in enumerate(zip(layout.names, order, strict=True))
    }
    return stack(columns, layout)


def _records(records: list[Any], layout: Plan, where: str, bools: bool) -> np.ndarray | Columns:
    if not records:
        raise ProtocolError(f"{where} has no rows; send at least one")
    names = layout.names
    wanted = layout.index.keys()
    for i, rec in enumerate(records):
        if type(rec) is not dict:
            raise ProtocolError(
                f"{where}[{i}] must be an object of column values; got {describe(rec)}"
            )
        if rec.keys() != wanted:
            _record_mismatch(rec, layout, f"{where}[{i}]")
    pick = itemgetter(*names)
    if len(names) == 1:
        rows: list[Any] = [[pick(r)] for r in records]
    else:
        rows = [list(pick(r)) for r in records]
    return _rows(rows, list(range(len(names))), layout, where, bools)


def _record_mismatch(rec: Mapping[str, Any], layout: Plan, where: str) -> None:
    missing = [n for n in layout.names if n not in rec]
    if missing:
        raise ProtocolError(
            f"{where}: missing column{'s' if len(missing) > 1 else ''} {join(missing)}; "
            f"the model's columns are {join(layout.names)}"
        )
    extra = next(k for k in rec if k not in layout.index)
    raise ProtocolError(
        f"{where}: unexpected column {extra!r}; the model's columns are {join(layout.names)}"
    )


def _tf_serving(key: str, value: Any, layout: Plan, bools: bool) -> np.ndarray | Columns:
    if isinstance(value, dict):
        return _column_object(key, value, layout, bools)
    if not isinstance(value, list):
        raise ProtocolError(
            f"{key} must be a list of rows or records, or an object of columns; "
            f"got {describe(value)}"
        )
    if not value:
        raise ProtocolError(f"{key} has no rows; send at least one")
    first = value[0]
    if isinstance(first, dict):
        return _records(value, layout, key, bools)
    if isinstance(first, list):
        return _rows(value, list(range(len(layout.names))), layout, key, bools)
    if len(layout.names) == 1:  # a list of values of the one column
        return _rows([[v] for v in value], [0], layout, key, bools)
    raise ProtocolError(
        f"{key} must be a list of rows (lists of {len(layout.names)} values in the order "
        f"{join(layout.names)}), a list of records, or an object of columns; "
        f"got a list of {describe(first)}"
    )


def _column_object(
    key: str, value: dict[str, Any], layout: Plan, bools: bool
) -> np.ndarray | Columns:
    if value.keys() != layout.index.keys():
        _record_mismatch(value, layout, key)
    lists = [isinstance(v, list) for v in value.values()]
    if not any(lists):  # one row given as single values
        return _records([value], layout, key, bools)
    if not all(lists):
        single = next(k for k, v in value.items() if not isinstance(v, list))
        raise ProtocolError(
            f"{key}: column {single!r} is a single value while others are lists; send every "
            "column as a list, or one row as single values"
        )
    lengths = {n: len(value[n]) for n in layout.names}
    if len(set(lengths.values())) > 1:
        raise ProtocolError(
            f"{key}: columns have different lengths: "
            + ", ".join(f"{k}={v}" for k, v in lengths.items())
        )
    if not next(iter(lengths.values())):
        raise ProtocolError(f"{key} has no rows; send at least one")
    columns = {
        name: column_from_json(value[name], spec, f"{key}.{name}", bools=bools)
        for name, spec in zip(layout.names, layout.specs, strict=True)
    }
    return stack(columns, layout)


def _tensor(key: str, value: Any, signature: Signature) -> np.ndarray:
    spec = signature.inputs[0]
    if key == "dataframe_split" and isinstance(value, dict):
        value = value.get("data")
    elif key == "dataframe_records":
        raise ProtocolError(
            "this model takes one tensor: send it as 'inputs' or 'instances' (a nested list)"
        )
    if not isinstance(value, list) or not value:
        raise ProtocolError(f"{key} must be a non-empty nested list (the tensor)")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise ProtocolError(f"{key}: nested lists are ragged (rows of different lengths)") from None
    if arr.dtype.kind not in "fiu" or any(
        v is True or v is False for v in (value if arr.ndim == 1 else arr.ravel().tolist())
    ):
        raise ProtocolError(f"{key}: a {spec.dtype} tensor takes numbers only")
    want = list(spec.shape or (-1,))
    if arr.ndim == len(want) - 1:
        arr = arr.reshape(1, *arr.shape)  # one example without the batch axis
    ok = arr.ndim == len(want) and all(
        w in (-1, g) for w, g in zip(want[1:], arr.shape[1:], strict=True)
    )
    if not ok:
        raise ProtocolError(
            f"{key}: shape {list(arr.shape)} does not match the model's {want} (-1 is any size)"
        )
    return cast_numeric(arr, np.dtype(spec.dtype), key)


# -- CSV -----------------------------------------------------------------------------------


def _csv(body: bytes, signature: Signature) -> np.ndarray | Columns:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"CSV body is not UTF-8 (byte {exc.start})") from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise ProtocolError(f"CSV body cannot be read: {exc}") from None
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise ProtocolError("CSV body needs a header row naming the columns and at least one row")
    header, data = rows[0], rows[1:]
    for i, row in enumerate(data):
        if len(row) != len(header):
            raise ProtocolError(
                f"CSV row {i + 1} has {len(row)} fields; the header has {len(header)}"
            )
    if signature.input_kind == "tensor":
        spec = signature.inputs[0]
        try:
            arr = np.array(data, dtype=str).astype(np.float64)
        except ValueError:
            raise ProtocolError(f"CSV: a {spec.dtype} tensor takes numbers only") from None
        return _tensor("inputs", arr.tolist(), signature)
    layout = plan(signature, signature.inputs)
    order = _order([h.strip() for h in header], layout, "CSV header")
    columns = {
        name: column_from_text([row[j] for row in data], spec, f"CSV column {name!r}")
        for name, spec, j in zip(layout.names, layout.specs, order, strict=True)
    }
    return stack(columns, layout)
