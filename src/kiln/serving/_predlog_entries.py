"""Checking and keying what is appended to the prediction log, before it is buffered.

Everything a write needs is checked here (names, shapes, dtypes, JSON-serializable
objects), so a buffered request can always be written; each request gets the key of the
file it goes to (deployment, hour, model version, input and output layout). The work is
O(1) Python per request (O(inputs) for columns, O(keys) for entity keys), whatever its
row count.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import numpy as np
import orjson

from kiln.core import InvalidInput
from kiln.serving._predlog_files import Entry, InKey, Key, OutKey
from kiln.serving._predlog_format import HOUR_US, JSON_OPTS, epoch_us
from kiln.serving.specs import check_name

BatchInputs: TypeAlias = Mapping[str, np.ndarray] | tuple[Sequence[str], np.ndarray]
"""A request's inputs: columns by name, or ``(names, matrix)`` with one column per name."""

Entities: TypeAlias = Mapping[str, np.ndarray]
"""A request's entity keys: one column per key, one value per row, as given for lookup."""

Item: TypeAlias = tuple[Key, Entry]
"""One checked request: the key of its file and its buffered entry."""

_DTYPE_KEYS: dict[np.dtype[Any], str] = {}  # storable dtypes seen, by their key
_NUMERIC: set[str] = set()  # keys of numeric dtypes: outputs stored as double
_WITH_ENTITIES = {"matrix": "matrix+entities", "columns": "columns+entities"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """One answer, as logged. ``at`` is an aware datetime (naive means UTC) or epoch µs.

    ``features``, ``entities`` and ``output`` are plain JSON-serializable values (numbers,
    strings, None, lists, dicts, numpy scalars and arrays). ``entities`` holds the entity
    keys the features were looked up with, when there were any.
    """

    request_id: str
    deployment: str
    model: str
    version: int
    arm: str
    features: dict[str, Any]
    output: Any
    latency_ms: float
    at: datetime | int
    fallback: bool = False
    shadow: bool = False
    entities: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AnsweredRequests:
    """Several requests answered by one model call, logged as one entry.

    ``inputs`` and ``outputs`` hold the requests' rows one request after the other
    (``counts`` rows each); ``request_ids``, ``arms``, ``shadows`` and ``latency_ms``
    one value per request. ``at`` as in :class:`Prediction`. ``entities``, when the
    requests looked features up, holds their entity keys as ``inputs`` holds columns.
    """

    deployment: str
    model: str
    version: int
    request_ids: Sequence[str]
    arms: Sequence[str]
    shadows: Sequence[bool]
    counts: Sequence[int]
    inputs: BatchInputs
    outputs: np.ndarray
    latency_ms: np.ndarray
    at: datetime | int
    entities: Entities | None = None


class EntryChecker:
    """Checks requests and keys them; remembers the names it has checked already."""

    def __init__(self) -> None:
        self._known_deployments: set[str] = set()
        self._known_names: set[tuple[str, ...]] = set()  # matrix input names checked

    def batch(
        self,
        deployment: str,
        model: str,
        version: int,
        arm: str,
        request_id: str,
        inputs: BatchInputs,
        outputs: np.ndarray | Sequence[Any],
        latency_ms: float,
        at: datetime | int,
        fallback: bool,
        shadow: bool,
        copy: bool,
        entities: Entities | None = None,
    ) -> Item | None:
        """Checks and keys one request: O(1) Python work per request (O(inputs) for columns,
        O(keys) for ``entities``, the entity key columns).

        A request with entities has the layout ``"<layout>+entities"``: its key's third
        item is ``(the inputs' key, entity names, entity column keys)`` and its data
        ``(the inputs' data, entity columns)``, so the inputs are kept as they came.
        """
        rid = request_id if type(request_id) is str else str(request_id)
        if deployment not in self._known_deployments:
            check_name(deployment)
            self._known_deployments.add(deployment)
        at_us = at if type(at) is int else epoch_us(at, rid)
        out = outputs if type(outputs) is np.ndarray else _as_array(outputs)
        shape = out.shape
        if not shape:
            raise _refused(rid, "'outputs' must have one entry per row")
        rows = shape[0]
        width = 0
        if len(shape) > 1:
            out = out.reshape(rows, -1)
            width = out.shape[1]
            if width == 1:
                out, width = out.reshape(rows), 0
        out_dtype = _column_key(out, "'outputs'", rid)
        out_key: OutKey = ("num" if out_dtype in _NUMERIC else "obj", out_dtype, width)
        in_key: InKey
        data: Any
        if isinstance(inputs, tuple):
            names, matrix = inputs
            if type(names) is not tuple:
                names = tuple(names)
            if type(matrix) is not np.ndarray:
                matrix = _as_array(matrix)
            if matrix.shape != (rows, len(names)):
                raise _refused(
                    rid,
                    f"the input matrix has shape {matrix.shape}; it "
                    f"must be 2-D with one row per output ({rows}) and one column per name "
                    f"({len(names)})",
                )
            if names not in self._known_names:
                if len(set(names)) != len(names) or not all(type(n) is str for n in names):
                    raise _refused(
                        rid, f"input names must be distinct strings; got {list(names)!r}"
                    )
                self._known_names.add(names)
            in_key = ("matrix", names, _column_key(matrix, "'inputs'", rid))
            data = matrix.copy() if copy else matrix
        else:
            names = tuple(inputs)
            columns = []
            keys = []
            for name in names:
                if type(name) is not str:
                    raise _refused(rid, f"input names must be strings; got {name!r}")
                col = inputs[name]
                if type(col) is not np.ndarray:
                    col = _as_array(col)
                if col.ndim == 0 or col.shape[0] != rows:
                    raise _refused(
                        rid,
                        f"input {name!r} has shape {col.shape}; it "
                        f"must have one entry per row ({rows})",
                    )
                if col.ndim > 2:
                    col = col.reshape(rows, -1)
                keys.append((_column_key(col, f"input {name!r}", rid), col.shape[1:]))
                columns.append(col.copy() if copy else col)
            in_key = ("columns", names, tuple(keys))
            data = tuple(columns)
        if entities:
            entity_names, entity_keys, entity_columns = _entity_columns(entities, rows, rid, copy)
            in_key = (_WITH_ENTITIES[in_key[0]], in_key[1], (in_key[2], entity_names, entity_keys))
            data = (data, entity_columns)
        if rows == 0:
            return None
        if copy:
            out = out.copy()
        key: Key = (
            deployment,
            at_us // HOUR_US,
            model if type(model) is str else str(model),
            version if type(version) is int else int(version),
            in_key,
            out_key,
        )
        entry: Entry = (
            rid,
            arm if type(arm) is str else str(arm),
            latency_ms if type(latency_ms) is float else float(latency_ms),
            at_us,
            fallback is True or bool(fallback),
            shadow is True or bool(shadow),
            rows,
            data,
            out,
        )
        return key, entry

    def requests(self, answered: AnsweredRequests) -> Item | None:
        """Checks and keys several requests answered together, as one entry.

        The arrays are checked once, as :meth:`batch` checks one request's.
        """
        a = answered
        request_ids, arms, shadows, counts = a.request_ids, a.arms, a.shadows, a.counts
        latency_ms = a.latency_ms
        n = len(request_ids)
        if not (len(arms) == len(shadows) == len(counts) == len(latency_ms) == n) or not n:
            raise _refused(
                str(request_ids[0]) if n else "",
                "request ids, arms, shadow flags, row counts and latencies must be "
                "non-empty and of one length",
            )
        item = self.batch(
            a.deployment, a.model, a.version, str(arms[0]), str(request_ids[0]), a.inputs,
            a.outputs, 0.0, a.at, False, False, False, a.entities,
        )  # fmt: skip
        if item is None:
            return None
        key, one = item
        sizes = np.asarray(counts, dtype=np.int64)
        if int(sizes.sum()) != one[6] or (sizes < 1).any():
            raise _refused(
                str(request_ids[0]),
                f"the requests' row counts {list(counts)} do not add up to the {one[6]} rows "
                "given, one or more each",
            )
        entry: Entry = (
            tuple(str(r) for r in request_ids),
            tuple(str(a) for a in arms),
            np.asarray(latency_ms, dtype=np.float64),
            one[3],
            False,
            np.asarray(shadows, dtype=np.bool_),
            one[6],
            one[7],
            one[8],
            sizes,
        )
        return key, entry

    def record(self, r: Prediction) -> Item:
        """One :class:`Prediction` as a one-row request (values typed by Arrow when written)."""
        if not isinstance(r.features, Mapping):
            raise _refused(
                r.request_id,
                f"'features' must be a dict of input values; got {type(r.features).__name__}",
            )
        if r.entities is not None and not isinstance(r.entities, Mapping):
            raise _refused(
                r.request_id,
                f"'entities' must be a dict of entity key values; got {type(r.entities).__name__}",
            )
        _check_json(r.features, "'features'", r.request_id)
        _check_json(r.entities, "'entities'", r.request_id)
        _check_json(r.output, "'output'", r.request_id)
        value = r.output.tolist() if isinstance(r.output, np.ndarray) else r.output
        output: np.ndarray
        if isinstance(value, numbers.Real):
            output = np.array([float(value)])
        elif (
            isinstance(value, list | tuple)
            and len(value) > 1
            and all(isinstance(v, numbers.Real) for v in value)
        ):
            output = np.array([value], dtype=np.float64)
        else:
            output = _object_cell(value)
        columns = {name: _object_cell(v) for name, v in r.features.items()}
        entities = {name: _object_cell(v) for name, v in r.entities.items()} if r.entities else None
        item = self.batch(
            r.deployment, r.model, r.version, r.arm, r.request_id, columns, output,
            r.latency_ms, r.at, r.fallback, r.shadow, False, entities,
        )  # fmt: skip
        assert item is not None
        return item


def _refused(request_id: str, problem: str) -> InvalidInput:
    return InvalidInput(f"prediction {request_id!r}: {problem}")


def _entity_columns(
    entities: Entities, rows: int, request_id: str, copy: bool
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[np.ndarray, ...]]:
    """Entity key names, column keys and 1-D columns of one row per input row: O(keys)."""
    if type(entities) is not dict and not isinstance(entities, Mapping):
        raise _refused(
            request_id,
            f"'entities' must map entity keys to columns; got {type(entities).__name__}",
        )
    names = tuple(entities)
    keys = []
    columns = []
    for name in names:
        if type(name) is not str:
            raise _refused(request_id, f"entity keys must be named by strings; got {name!r}")
        col = entities[name]
        if type(col) is not np.ndarray:
            col = _as_array(col)
        if col.shape != (rows,):
            raise _refused(
                request_id,
                f"entity key {name!r} has shape {col.shape}; it must have one value per row "
                f"({rows})",
            )
        key = _DTYPE_KEYS.get(col.dtype)  # known dtypes: no message to build
        keys.append(
            key if key is not None else _column_key(col, f"entity key {name!r}", request_id)
        )
        columns.append(col.copy() if copy else col)
    return names, tuple(keys), tuple(columns)


def _check_json(values: Any, what: str, request_id: str) -> None:
    try:
        orjson.dumps(values, option=JSON_OPTS)
    except TypeError as exc:
        raise _refused(request_id, f"{what} must be JSON-serializable ({exc})") from None


def _column_key(arr: np.ndarray, what: str, request_id: str) -> str:
    """How a column of this dtype is stored; refuses what cannot be stored."""
    dtype = arr.dtype
    key = _DTYPE_KEYS.get(dtype)
    if key is not None:
        return key
    kind = dtype.kind
    if kind == "O":
        _check_json(arr.tolist(), what, request_id)
        return "O"
    if kind not in "biufmMUS":
        raise _refused(
            request_id,
            f"{what} has dtype {dtype}, which the prediction log "
            "cannot store; use numbers, booleans, datetimes or strings",
        )
    # Text of any width shares one key: concatenation widens it.
    key = kind if kind in "US" else dtype.str
    if len(_DTYPE_KEYS) < 256:
        _DTYPE_KEYS[dtype] = key
    if kind in "biuf":
        _NUMERIC.add(key)
    return key


def _as_array(values: Any) -> np.ndarray:
    """``np.asarray``, or a 1-D object array where the values are ragged."""
    try:
        return np.asarray(values)
    except ValueError:
        items = list(values)
        arr = np.empty(len(items), dtype=object)
        for i, v in enumerate(items):
            arr[i] = v
        return arr


def _object_cell(value: Any) -> np.ndarray:
    cell = np.empty(1, dtype=object)
    cell[0] = value
    return cell
