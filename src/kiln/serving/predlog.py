"""The prediction log: every answer the server gives, appended to Parquet with no loss.

A :class:`PredictionLog` buffers answers in memory, one entry per request holding
references to its numpy arrays, and a background thread writes them out every
``flush_interval_s`` seconds, or as soon as ``flush_rows`` rows are waiting. Each write
makes one Parquet file per deployment, hour, model version and input layout, so every file
has exactly one schema::

    <root>/deployment=<name>/hour=<YYYY-MM-DDTHH>/part-<worker>-<seq>-<schema>.parquet

(``<schema>`` is 8 hex digits naming the file's schema, so a reader inspects one file per
schema, not every file.) ``root`` defaults to ``<offline_dir>/predictions`` from the Kiln
settings (``KILN_HOME/offline/predictions``). The layout is hive-style:
:func:`read_predictions`, pyarrow datasets with a unified schema, and DuckDB
(``read_parquet('<root>/**/*.parquet', hive_partitioning = true, union_by_name = true)``)
read a deployment's files across model versions as one table with ``deployment`` and
``hour`` columns.

Appending is columnar: :meth:`PredictionLog.append_batch` (and
:meth:`~PredictionLog.append_batch_async`) takes one request's inputs and outputs as
numpy arrays and does O(1) Python work per request, whatever its row count; the writer
builds each file from whole arrays (``np.concatenate``, ``pa.array``) and never loops over
rows in Python. :meth:`PredictionLog.append` and friends (one :class:`Prediction` per row,
plain Python values) remain for other callers and are built on the same path.

Safety:

- Each file is written to a hidden temporary name (``.part-...parquet.tmp``) in its
  partition directory, fsynced, then published under its final name in one atomic step
  (a hard link that never replaces an existing file, or ``os.replace`` where the file
  system has no hard links). Readers never see a half-written file and a crash never
  leaves a corrupt one; a crash can leave a ``.tmp`` file, which readers ignore.
- Backpressure, not loss: when ``max_buffered_rows`` rows are waiting (the disk is slow or
  failing), the synchronous appenders block and the ``*_async`` ones await, without
  holding a thread or the event loop, until the writer catches up. Rows are never
  dropped; a failed write keeps its rows buffered and is retried.
- Everything is checked when appended (names, shapes, dtypes, JSON-serializable objects),
  so a buffered request can always be written.
- :meth:`PredictionLog.close` writes everything still buffered; an unclosed log is closed
  at interpreter exit (kill -9 loses what was not yet written, and nothing already written).

File schema. Every file has these columns (``deployment`` and ``hour`` live in the path):

=================  ======================  ==============================================
column             type                    content
=================  ======================  ==============================================
``request_id``     string                  the request's id, the same on each of its rows
``row``            int32                   the row's index within its request (0, 1, ...)
``model``          string                  the reference that answered, e.g. ``fraud/3``
``version``        int64                   model version
``arm``            string                  traffic-policy arm (``champion``, ``canary``...)
``latency_ms``     double                  the request's latency, on each of its rows
``at``             timestamp[us, UTC]      when the answer was given
``fallback``       bool                    a fallback answered (breaker open, failure)
``shadow``         bool                    a shadow challenger's answer, never returned
=================  ======================  ==============================================

and then, typed by what was served:

- ``features``: a struct with one field per model input, named as the model names it and
  typed as served (``float64``, ``int64``, ``string``...; a 2-D input column is a
  ``fixed_size_list``). Values are exactly what the model was given: a missing float
  input is NaN, as the model saw it. Absent when the model takes no inputs. Query it as
  ``features.amount`` (DuckDB) or ``pc.struct_field`` / ``table["features"].flatten()``
  (Arrow). Across versions the struct gains and loses fields; both readers fill the
  missing ones with null.
- the answer: ``output`` (double) when the model gives one number per row, or
  ``output_0``, ``output_1``, ... (double) when it gives several (class probabilities:
  ``output_1`` is the positive class of a binary classifier). Separate top-level columns,
  not a list, so a deployment whose versions answer in different shapes still reads as
  one table in DuckDB and Arrow. Text answers are ``output`` (string); other objects
  (:meth:`~PredictionLog.append` only) are typed by Arrow, or JSON text where they mix
  types.

The same column with different types in different files (an input that was ``int64``
and became ``float64``) reads as the wider type, or as string where there is none.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import logging
import math
import numbers
import os
import re
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from kiln.core import InvalidInput, get_settings
from kiln.serving.specs import check_name

__all__ = [
    "PREDICTION_SCHEMA",
    "BatchInputs",
    "Prediction",
    "PredictionLog",
    "read_predictions",
]

_log = logging.getLogger(__name__)

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("fallback", pa.bool_(), nullable=False),
        pa.field("shadow", pa.bool_(), nullable=False),
    ]
)
"""The columns every file has; ``features`` and the output columns follow, typed per file."""

_PARTITION_FIELDS = [pa.field("deployment", pa.string()), pa.field("hour", pa.string())]
_PARTITIONING = ds.partitioning(pa.schema(_PARTITION_FIELDS), flavor="hive")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_HOUR_US = 3_600_000_000
_WORKER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,63}$")
_FILE_RE = re.compile(r"^part-.+-\d+-([0-9a-f]{8})\.parquet$")
_OUTPUT_RE = re.compile(r"^output(?:_(\d+))?$")
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
_DTYPE_KEYS: dict[np.dtype[Any], str] = {}  # storable dtypes seen, by their key
_NUMERIC: set[str] = set()  # keys of numeric dtypes: outputs stored as double
_CONCAT_SLICE = 512  # arrays per np.concatenate call: lets other threads take the GIL between

BatchInputs: TypeAlias = Mapping[str, np.ndarray] | tuple[Sequence[str], np.ndarray]
"""A request's inputs: columns by name, or ``(names, matrix)`` with one column per name."""

# Inputs: ("matrix", names, dtype key) or ("columns", names, column keys).
_InKey = tuple[str, tuple[str, ...], Any]
# Output: category ("num": as double, "obj": typed by Arrow), dtype key, width (0: one value).
_OutKey = tuple[str, str, int]
# Where a request's rows go: one file per key per write.
_Key = tuple[str, int, str, int, _InKey, _OutKey]  # deployment, hour, model, version, ...
# One buffered request: request_id, arm, latency_ms, at (µs), fallback, shadow, rows,
# inputs (the matrix, or a tuple of columns in name order), outputs.
_Entry = tuple[str, str, float, int, bool, bool, int, Any, np.ndarray]


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """One answer, as logged. ``at`` is an aware datetime (naive means UTC) or epoch µs.

    ``features`` and ``output`` are plain JSON-serializable values (numbers, strings,
    None, lists, dicts, numpy scalars and arrays).
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


@dataclass(slots=True)
class _Group:
    """Buffered requests that go to one file."""

    entries: list[_Entry] = field(default_factory=list)
    rows: int = 0


def default_root() -> Path:
    """``<offline_dir>/predictions`` from the Kiln settings."""
    settings = get_settings()
    return (settings.offline_dir or settings.home / "offline") / "predictions"


def _epoch_us(value: datetime | int, request_id: str) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - _EPOCH) // _US
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return int(value)
    raise InvalidInput(
        f"prediction {request_id!r}: 'at' must be a datetime or epoch microseconds (int); "
        f"got {value!r}"
    )


def _hour_label(hour: int) -> str:
    return (_EPOCH + timedelta(hours=hour)).strftime("%Y-%m-%dT%H")


def _check_json(values: Any, what: str, request_id: str) -> None:
    try:
        orjson.dumps(values, option=_JSON_OPTS)
    except TypeError as exc:
        raise InvalidInput(
            f"prediction {request_id!r}: {what} must be JSON-serializable ({exc})"
        ) from None


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
        raise InvalidInput(
            f"prediction {request_id!r}: {what} has dtype {dtype}, which the prediction log "
            "cannot store; use numbers, booleans, datetimes or strings"
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


class PredictionLog:
    """Buffered, backpressured, crash-safe, columnar writer of predictions.

    ``flush_rows`` rows waiting (in all deployments together) or ``flush_interval_s``
    seconds since the last write start a write; appenders block once ``max_buffered_rows``
    rows are waiting to be written. ``worker`` names this writer in file names (default: the
    process id and a random suffix); two live logs must not share one.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        flush_rows: int = 10_000,
        flush_interval_s: float = 1.0,
        max_buffered_rows: int = 200_000,
        worker: str | None = None,
    ) -> None:
        for param, value, lo in (
            ("flush_rows", flush_rows, 1),
            ("max_buffered_rows", max_buffered_rows, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise InvalidInput(
                    f"The {param!r} parameter of PredictionLog must be an integer >= {lo}. "
                    f"Got {value!r}."
                )
        if (
            isinstance(flush_interval_s, bool)
            or not isinstance(flush_interval_s, int | float)
            or not (0 < flush_interval_s < math.inf)
        ):
            raise InvalidInput(
                "The 'flush_interval_s' parameter of PredictionLog must be a number > 0. "
                f"Got {flush_interval_s!r}."
            )
        if worker is None:
            worker = f"{os.getpid()}.{secrets.token_hex(4)}"
        elif not isinstance(worker, str) or not _WORKER_RE.match(worker):
            raise InvalidInput(
                "The 'worker' parameter of PredictionLog must be 1-64 letters, digits, '_' or "
                f"'.', starting with a letter or digit. Got {worker!r}."
            )
        self.root = Path(root) if root is not None else default_root()
        self.flush_rows = flush_rows
        self.flush_interval_s = float(flush_interval_s)
        self.max_buffered_rows = max_buffered_rows
        self.worker = worker
        self.rows_appended = 0
        self.rows_written = 0
        self.files_written = 0

        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # appenders wait here
        self._work = threading.Condition(self._lock)  # the flusher waits here
        self._write_lock = threading.Lock()  # one write cycle at a time
        self._pending: dict[_Key, _Group] = {}
        self._pending_rows = 0  # rows in _pending
        self._buffered = 0  # rows appended and not yet written (pending or being written)
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._known_deployments: set[str] = set()
        self._known_names: set[tuple[str, ...]] = set()  # matrix input names checked
        self._seq = 0
        self._closed = False
        self._failing = False
        self._thread = threading.Thread(
            target=self._run, name=f"kiln-predlog-{worker}", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    # -- appending -------------------------------------------------------------------------

    @property
    def buffered_rows(self) -> int:
        """Rows appended and not yet written to a published file."""
        return self._buffered

    def append_batch(
        self,
        *,
        deployment: str,
        model: str,
        version: int,
        arm: str,
        request_id: str,
        inputs: BatchInputs,
        outputs: np.ndarray | Sequence[Any],
        latency_ms: float,
        at: datetime | int,
        fallback: bool = False,
        shadow: bool = False,
        copy: bool = False,
    ) -> int:
        """Buffer one request's predictions, one row per input row; returns the row count.

        ``inputs`` are the values the model was given, either columns by name (1-D arrays
        of one length; a 2-D array is one list-valued input) or ``(names, matrix)`` with a
        2-D matrix whose columns are ``names`` in order. ``outputs`` has one entry (or one
        row of entries) per input row. ``at`` is an aware datetime (naive means UTC) or
        epoch µs.

        The arrays are kept by reference until written, not copied: the caller must not
        modify them afterwards, or pass ``copy=True`` (the server never modifies a
        request's arrays). Blocks while ``max_buffered_rows`` rows are waiting.
        """
        item = self._entry(
            deployment, model, version, arm, request_id, inputs, outputs, latency_ms, at,
            fallback, shadow, copy,
        )  # fmt: skip
        if item is None:
            return 0
        rows = item[1][6]
        self._put_blocking([item], rows)
        return rows

    async def append_batch_async(
        self,
        *,
        deployment: str,
        model: str,
        version: int,
        arm: str,
        request_id: str,
        inputs: BatchInputs,
        outputs: np.ndarray | Sequence[Any],
        latency_ms: float,
        at: datetime | int,
        fallback: bool = False,
        shadow: bool = False,
        copy: bool = False,
    ) -> int:
        """:meth:`append_batch` for event loops: awaits room without blocking the loop."""
        item = self._entry(
            deployment, model, version, arm, request_id, inputs, outputs, latency_ms, at,
            fallback, shadow, copy,
        )  # fmt: skip
        if item is None:
            return 0
        rows = item[1][6]
        await self._put_async([item], rows)
        return rows

    def append(self, record: Prediction) -> None:
        """Buffer one prediction; blocks while ``max_buffered_rows`` are waiting."""
        self._put_blocking([self._record_entry(record)])

    def append_many(self, records: Iterable[Prediction]) -> None:
        """Buffer many predictions at once (all or none); blocks like :meth:`append`."""
        self._put_blocking([self._record_entry(r) for r in records])

    async def append_async(self, record: Prediction) -> None:
        """:meth:`append` for event loops: awaits room without blocking the loop."""
        await self._put_async([self._record_entry(record)])

    async def append_many_async(self, records: Iterable[Prediction]) -> None:
        """:meth:`append_many` for event loops."""
        await self._put_async([self._record_entry(r) for r in records])

    def _check_deployment(self, deployment: str) -> None:
        if deployment not in self._known_deployments:
            check_name(deployment)
            self._known_deployments.add(deployment)

    def _entry(
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
    ) -> tuple[_Key, _Entry] | None:
        """Checks and keys one request: O(1) Python work per request (O(inputs) for columns)."""
        rid = request_id if type(request_id) is str else str(request_id)
        if deployment not in self._known_deployments:
            self._check_deployment(deployment)
        at_us = at if type(at) is int else _epoch_us(at, rid)
        out = outputs if type(outputs) is np.ndarray else _as_array(outputs)
        shape = out.shape
        if not shape:
            raise InvalidInput(f"prediction {rid!r}: 'outputs' must have one entry per row")
        rows = shape[0]
        width = 0
        if len(shape) > 1:
            out = out.reshape(rows, -1)
            width = out.shape[1]
            if width == 1:
                out, width = out.reshape(rows), 0
        out_dtype = _column_key(out, "'outputs'", rid)
        out_key: _OutKey = ("num" if out_dtype in _NUMERIC else "obj", out_dtype, width)
        in_key: _InKey
        data: Any
        if isinstance(inputs, tuple):
            names, matrix = inputs
            if type(names) is not tuple:
                names = tuple(names)
            if type(matrix) is not np.ndarray:
                matrix = _as_array(matrix)
            if matrix.shape != (rows, len(names)):
                raise InvalidInput(
                    f"prediction {rid!r}: the input matrix has shape {matrix.shape}; it "
                    f"must be 2-D with one row per output ({rows}) and one column per name "
                    f"({len(names)})"
                )
            if names not in self._known_names:
                if len(set(names)) != len(names) or not all(type(n) is str for n in names):
                    raise InvalidInput(
                        f"prediction {rid!r}: input names must be distinct strings; got "
                        f"{list(names)!r}"
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
                    raise InvalidInput(
                        f"prediction {rid!r}: input names must be strings; got {name!r}"
                    )
                col = inputs[name]
                if type(col) is not np.ndarray:
                    col = _as_array(col)
                if col.ndim == 0 or col.shape[0] != rows:
                    raise InvalidInput(
                        f"prediction {rid!r}: input {name!r} has shape {col.shape}; it "
                        f"must have one entry per row ({rows})"
                    )
                if col.ndim > 2:
                    col = col.reshape(rows, -1)
                keys.append((_column_key(col, f"input {name!r}", rid), col.shape[1:]))
                columns.append(col.copy() if copy else col)
            in_key = ("columns", names, tuple(keys))
            data = tuple(columns)
        if rows == 0:
            return None
        if copy:
            out = out.copy()
        key: _Key = (
            deployment,
            at_us // _HOUR_US,
            model if type(model) is str else str(model),
            version if type(version) is int else int(version),
            in_key,
            out_key,
        )
        entry: _Entry = (
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

    def _record_entry(self, r: Prediction) -> tuple[_Key, _Entry]:
        """One :class:`Prediction` as a one-row request (values typed by Arrow when written)."""
        if not isinstance(r.features, Mapping):
            raise InvalidInput(
                f"prediction {r.request_id!r}: 'features' must be a dict of input values; "
                f"got {type(r.features).__name__}"
            )
        _check_json(r.features, "'features'", r.request_id)
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
        item = self._entry(
            r.deployment, r.model, r.version, r.arm, r.request_id, columns, output,
            r.latency_ms, r.at, r.fallback, r.shadow, False,
        )  # fmt: skip
        assert item is not None
        return item

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput(f"the prediction log at {str(self.root)!r} is closed")

    def _has_room(self, n: int) -> bool:
        # A batch larger than the whole buffer still goes in once the buffer is empty.
        return self._buffered == 0 or self._buffered + n <= self.max_buffered_rows

    def _put_locked(self, items: list[tuple[_Key, _Entry]], n: int) -> None:
        pending = self._pending
        for key, entry in items:
            group = pending.get(key)
            if group is None:
                group = pending[key] = _Group()
            group.entries.append(entry)
            group.rows += entry[6]
        self._pending_rows += n
        self._buffered += n
        self.rows_appended += n
        if self._pending_rows >= self.flush_rows:
            self._work.notify()

    def _put_blocking(self, items: list[tuple[_Key, _Entry]], n: int | None = None) -> None:
        if n is None:
            n = sum(entry[6] for _, entry in items)
        if not n:
            return
        with self._lock:
            while True:
                self._check_open()
                if self._has_room(n):
                    self._put_locked(items, n)
                    return
                self._work.notify()
                self._room.wait()

    async def _put_async(self, items: list[tuple[_Key, _Entry]], n: int | None = None) -> None:
        if n is None:
            n = sum(entry[6] for _, entry in items)
        if not n:
            return
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                self._check_open()
                if self._has_room(n):
                    self._put_locked(items, n)
                    return
                waiter: asyncio.Future[None] = loop.create_future()
                self._async_waiters.append((loop, waiter))
                self._work.notify()
            await waiter

    def _wake_appenders_locked(self) -> None:
        self._room.notify_all()
        waiters, self._async_waiters = self._async_waiters, []
        for loop, waiter in waiters:
            # A closed event loop raises RuntimeError: nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, waiter)

    # -- writing ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every row appended before this call; raises if the disk refuses them."""
        with self._write_lock:
            self._write_pending()

    def close(self) -> None:
        """Write everything buffered and stop the writer thread. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._work.notify_all()
            self._wake_appenders_locked()
        atexit.unregister(self.close)
        if self._thread is not threading.current_thread():
            self._thread.join()
        self.flush()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._closed and self._pending_rows < self.flush_rows:
                    self._work.wait(self.flush_interval_s)
                if self._closed:
                    return
                if not self._pending_rows:
                    continue
            try:
                with self._write_lock:
                    self._write_pending()
                if self._failing:
                    self._failing = False
                    _log.warning("prediction log at %s is writing again", self.root)
            except Exception:
                if not self._failing:
                    _log.exception(
                        "prediction log at %s cannot write; rows stay buffered and are "
                        "retried every %.3g s",
                        self.root,
                        self.flush_interval_s,
                    )
                    self._failing = True
                with self._lock:  # back off instead of spinning on a failing disk
                    if not self._closed:
                        self._work.wait(self.flush_interval_s)

    def _write_pending(self) -> None:
        """Write all pending groups; on failure put the unwritten rows back and raise."""
        with self._lock:
            taken, self._pending = self._pending, {}
            self._pending_rows = 0
        groups = list(taken.items())
        for i, (key, group) in enumerate(groups):
            try:
                self._write_group(key, group.entries)
            except BaseException:
                with self._lock:
                    for back_key, back in groups[i:]:
                        newer = self._pending.get(back_key)
                        if newer is not None:
                            back.entries.extend(newer.entries)
                            back.rows += newer.rows
                        self._pending[back_key] = back
                        self._pending_rows += back.rows - (newer.rows if newer else 0)
                raise
            with self._lock:
                self._buffered -= group.rows
                self.rows_written += group.rows
                self.files_written += 1
                self._wake_appenders_locked()

    def _write_group(self, key: _Key, entries: list[_Entry]) -> None:
        deployment, hour = key[0], key[1]
        table = _build_table(key, entries)
        digest = hashlib.blake2b(table.schema.serialize().to_pybytes(), digest_size=4)
        directory = self.root / f"deployment={deployment}" / f"hour={_hour_label(hour)}"
        directory.mkdir(parents=True, exist_ok=True)
        while True:
            self._seq += 1
            name = f"part-{self.worker}-{self._seq:06d}-{digest.hexdigest()}.parquet"
            if self._write_file(directory, name, table):
                return

    def _write_file(self, directory: Path, name: str, table: pa.Table) -> bool:
        """Write ``table`` as ``directory/name`` atomically; False if that name is taken.

        Subclasses may wrap this (tests slow it down to exercise backpressure).
        """
        target = directory / name
        tmp = directory / f".{name}.tmp"
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, target)  # publishes without ever replacing another file
            except FileExistsError:
                return False
            except OSError:  # no hard links on this file system
                if target.exists():
                    return False
                os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(directory)
        return True


# -- building a file's table from whole arrays ---------------------------------------------


def _build_table(key: _Key, entries: list[_Entry]) -> pa.Table:
    """One file's table: per-request values repeated, arrays concatenated, no row loop."""
    _, _, model, version, in_key, out_key = key
    ids, arms, latencies, ats, fallbacks, shadows, counts_t, inputs, outputs = zip(
        *entries, strict=True
    )
    n_requests = len(entries)
    counts = np.array(counts_t, dtype=np.int64)
    total = int(counts.sum())
    take: np.ndarray | None = None  # request index of each row; None when one row each
    if total == n_requests:
        row = np.zeros(total, dtype=np.int32)
    else:
        take = np.repeat(np.arange(n_requests, dtype=np.int64), counts)
        starts = np.cumsum(counts) - counts
        row = (np.arange(total, dtype=np.int64) - np.repeat(starts, counts)).astype(np.int32)

    def per_request(values: np.ndarray) -> np.ndarray:
        return values if take is None else values[take]

    def per_request_text(values: tuple[str, ...]) -> pa.Array:
        arr = pa.array(values, type=pa.string())
        return arr if take is None else arr.take(pa.array(take))

    text_constant = pa.array([model], type=pa.string()).take(pa.array(np.zeros(total, np.int32)))
    fields: list[pa.Field] = list(PREDICTION_SCHEMA)
    arrays: list[pa.Array] = [
        per_request_text(ids),
        pa.array(row),
        text_constant,
        pa.array(np.full(total, version, dtype=np.int64)),
        per_request_text(arms),
        pa.array(per_request(np.array(latencies, dtype=np.float64))),
        pa.array(per_request(np.array(ats, dtype=np.int64)), type=pa.timestamp("us", tz="UTC")),
        pa.array(per_request(np.array(fallbacks, dtype=np.bool_))),
        pa.array(per_request(np.array(shadows, dtype=np.bool_))),
    ]
    layout, names, _ = in_key
    if names:
        if layout == "matrix":
            matrix = _concat(inputs)
            by_column = np.ascontiguousarray(matrix.T)  # each input contiguous for Arrow
            children = [_to_arrow(by_column[j]) for j in range(len(names))]
        else:
            children = [_to_arrow(_concat(col)) for col in zip(*inputs, strict=True)]
        features = pa.StructArray.from_arrays(children, names=list(names))
        fields.append(pa.field("features", features.type))
        arrays.append(features)
    category, _, width = out_key
    out = _concat(outputs)
    if category == "num":
        out = out.astype(np.float64, copy=False)
    if width == 0:
        output = _to_arrow(out)
        fields.append(pa.field("output", output.type))
        arrays.append(output)
    else:
        by_column = np.ascontiguousarray(out.T)
        for j in range(width):
            output = _to_arrow(by_column[j])
            fields.append(pa.field(f"output_{j}", output.type))
            arrays.append(output)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``np.concatenate`` in slices, so one call never holds the GIL for long."""
    if len(arrays) == 1:
        return arrays[0]
    if len(arrays) <= _CONCAT_SLICE:
        return np.concatenate(arrays)
    return np.concatenate(
        [
            np.concatenate(arrays[i : i + _CONCAT_SLICE])
            for i in range(0, len(arrays), _CONCAT_SLICE)
        ]
    )


def _to_arrow(values: np.ndarray) -> pa.Array:
    """A column as Arrow: numbers and text whole; objects typed by Arrow, else JSON text."""
    if values.ndim == 2:
        flat = _to_arrow(np.ascontiguousarray(values).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    if values.dtype.kind != "O":
        return pa.array(values)
    try:
        return pa.array(values, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # Mixed kinds (a number here, text there): text as is, anything else as JSON.
        return pa.array([_text(v) for v in values], type=pa.string())


def _text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    return orjson.dumps(value, option=_JSON_OPTS).decode()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- reading -------------------------------------------------------------------------------


def read_predictions(
    root: str | os.PathLike[str] | None = None,
    *,
    deployment: str | None = None,
    since: datetime | int | None = None,
) -> pa.Table:
    """Read the published prediction files as one Arrow table.

    Columns: :data:`PREDICTION_SCHEMA`, then ``features`` (a struct with every input any
    file has, null where a file lacks it) and the output columns, then ``deployment`` and
    ``hour`` from the path. ``deployment`` keeps one deployment; ``since`` (aware datetime,
    naive meaning UTC, or epoch µs) keeps rows answered at or after it. Rows come in no
    particular order; temporary files of writes in progress are never read.
    """
    base = Path(root) if root is not None else default_root()
    if deployment is not None:
        check_name(deployment)
    since_us = None if since is None else _epoch_us(since, "since")
    first_hour = None if since_us is None else _hour_label(since_us // _HOUR_US)
    files: list[str] = []
    if base.is_dir():
        dep_dirs = (
            [base / f"deployment={deployment}"]
            if deployment is not None
            else sorted(base.glob("deployment=*"))
        )
        for dep_dir in dep_dirs:
            for hour_dir in sorted(dep_dir.glob("hour=*")):
                if first_hour is not None and hour_dir.name[len("hour=") :] < first_hour:
                    continue
                files.extend(str(p) for p in sorted(hour_dir.glob("*.parquet")) if p.name[0] != ".")
    groups = _schema_groups(files)
    schema = _merged_schema([file_schema for _, file_schema in groups])
    where = None
    if since_us is not None:
        where = ds.field("at") >= pa.scalar(since_us, type=pa.timestamp("us", tz="UTC"))
    try:
        return _scan(files, schema, base, where)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        # A column whose types Arrow cannot cast to one (a list here, a number there):
        # read each schema by itself and write what does not cast as JSON text.
        tables = []
        for group, file_schema in groups:
            own = pa.schema([*file_schema, *_PARTITION_FIELDS])
            tables.append(_conform(_scan(group, own, base, where), schema))
        return pa.concat_tables(tables) if tables else schema.empty_table()


def _scan(
    files: Sequence[str], schema: pa.Schema, base: Path, where: ds.Expression | None
) -> pa.Table:
    dataset = ds.dataset(
        files,
        schema=schema,
        format="parquet",
        partitioning=_PARTITIONING,
        partition_base_dir=str(base),
    )
    return dataset.to_table(filter=where)


def _schema_groups(files: Sequence[str]) -> list[tuple[list[str], pa.Schema]]:
    """Files by schema, read from one file per schema the file names name."""
    by_schema: dict[str, list[str]] = {}
    for path in files:
        match = _FILE_RE.match(os.path.basename(path))
        by_schema.setdefault(match.group(1) if match else path, []).append(path)
    return [(group, pq.read_schema(group[0])) for group in by_schema.values()]


def _merged_schema(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """One schema all ``schemas`` read as: every column, each of a type all its types fit."""
    merged: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            if f.name in PREDICTION_SCHEMA.names:
                continue
            known = merged.get(f.name)
            merged[f.name] = f.type if known is None else _merge_type(known, f.type)
    names = sorted(merged, key=_column_order)
    return pa.schema(
        [*PREDICTION_SCHEMA, *(pa.field(n, merged[n]) for n in names), *_PARTITION_FIELDS]
    )


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = []
    for f in schema:
        if f.name in table.column_names:
            columns.append(_conform_array(table[f.name].combine_chunks(), f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _conform_array(arr: pa.Array, to: pa.DataType) -> pa.Array:
    if arr.type.equals(to):
        return arr
    if pa.types.is_struct(to) and pa.types.is_struct(arr.type):
        names = {arr.type.field(i).name for i in range(arr.type.num_fields)}
        children = [
            _conform_array(arr.field(f.name), f.type)
            if f.name in names
            else pa.nulls(len(arr), f.type)
            for f in to
        ]
        return pa.StructArray.from_arrays(children, fields=list(to), mask=arr.is_null())
    try:
        return arr.cast(to)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        if not pa.types.is_string(to):
            raise
        return pa.array([_text(v) for v in arr.to_pylist()], type=to)  # JSON text


def _column_order(name: str) -> tuple[int, int, str]:
    if name == "features":
        return (0, 0, name)
    match = _OUTPUT_RE.match(name)
    if match:
        return (1, -1 if match.group(1) is None else int(match.group(1)), name)
    return (2, 0, name)


def _merge_type(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """A type both ``a`` and ``b`` read as: the same, the wider, or string."""
    if a.equals(b) or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        children: dict[str, pa.DataType] = {f.name: f.type for f in a}
        for f in b:
            known = children.get(f.name)
            children[f.name] = f.type if known is None else _merge_type(known, f.type)
        return pa.struct([pa.field(n, t) for n, t in children.items()])
    try:
        unified = pa.unify_schemas(
            [pa.schema([pa.field("x", a)]), pa.schema([pa.field("x", b)])],
            promote_options="permissive",
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.string()
    return unified.field("x").type
