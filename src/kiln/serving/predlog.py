"""The prediction log: every answer the server gives, appended to Parquet with no loss.

A :class:`PredictionLog` buffers :class:`Prediction` records in memory and a background
thread writes them out every ``flush_interval_s`` seconds, or as soon as ``flush_rows`` are
waiting, one Parquet file per deployment and hour::

    <root>/deployment=<name>/hour=<YYYY-MM-DDTHH>/part-<worker>-<seq>.parquet

``root`` defaults to ``<offline_dir>/predictions`` from the Kiln settings
(``KILN_HOME/offline/predictions``). The layout is hive-style, so pyarrow datasets and
DuckDB (``read_parquet('<root>/**/*.parquet', hive_partitioning = true)``) read it as one
table with ``deployment`` and ``hour`` columns; :func:`read_predictions` does that.

Safety:

- Each file is written to a hidden temporary name (``.part-...parquet.tmp``) in its
  partition directory, fsynced, then published under its final name in one atomic step
  (a hard link that never replaces an existing file, or ``os.replace`` where the file
  system has no hard links). Readers never see a half-written file and a crash never
  leaves a corrupt one; a crash can leave a ``.tmp`` file, which readers ignore.
- Backpressure, not loss: when ``max_buffered_rows`` rows are waiting (the disk is slow or
  failing), :meth:`PredictionLog.append` blocks and :meth:`PredictionLog.append_async`
  awaits, without holding a thread, until the writer catches up. Rows are never dropped;
  a failed write keeps its rows buffered and is retried.
- :meth:`PredictionLog.close` writes everything still buffered; an unclosed log is closed
  at interpreter exit (kill -9 loses what was not yet written, and nothing already written).

File schema (the same in every file, so a deployment's files always read as one table;
``deployment`` and ``hour`` live in the path, not in the file):

=================  ======================  ==============================================
column             type                    content
=================  ======================  ==============================================
``request_id``     string
``model``          string                  the reference that answered, e.g. ``fraud/3``
``version``        int64                   model version
``arm``            string                  traffic-policy arm (``champion``, ``canary``...)
``features``       string                  JSON object of the exact values served (NaN and
                                           infinities are written as ``null``)
``output``         string                  JSON of the answer, whatever its shape (NaN: null)
``output_number``  double (nullable)       the answer when it is one number, else null
``latency_ms``     double
``at``             timestamp[us, UTC]      when the answer was given
``fallback``       bool                    a fallback answered (breaker open, failure)
``shadow``         bool                    a shadow challenger's answer, never returned
=================  ======================  ==============================================
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import math
import numbers
import os
import re
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from kiln.core import InvalidInput, get_settings
from kiln.serving.specs import check_name

__all__ = ["PREDICTION_SCHEMA", "Prediction", "PredictionLog", "read_predictions"]

_log = logging.getLogger(__name__)

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("features", pa.string(), nullable=False),
        pa.field("output", pa.string(), nullable=False),
        pa.field("output_number", pa.float64()),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("fallback", pa.bool_(), nullable=False),
        pa.field("shadow", pa.bool_(), nullable=False),
    ]
)
_PARTITIONING = ds.partitioning(
    pa.schema([("deployment", pa.string()), ("hour", pa.string())]), flavor="hive"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_HOUR_US = 3_600_000_000
_WORKER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,63}$")
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
# One buffered row, already encoded: the columns of PREDICTION_SCHEMA in order.
_Row = tuple[str, str, int, str, bytes, bytes, float | None, float, int, bool, bool]
_Key = tuple[str, int]  # (deployment, hour number since the epoch)
_JSON_COLUMNS = frozenset({4, 5})  # features, output: orjson bytes until written


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """One answer, as logged. ``at`` is an aware datetime (naive means UTC) or epoch µs."""

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


def default_root() -> Path:
    """``<offline_dir>/predictions`` from the Kiln settings."""
    settings = get_settings()
    return (settings.offline_dir or settings.home / "offline") / "predictions"


def _epoch_us(value: datetime | int, request_id: str) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - _EPOCH) // _US
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidInput(
        f"prediction {request_id!r}: 'at' must be a datetime or epoch microseconds (int); "
        f"got {value!r}"
    )


def _hour_label(hour: int) -> str:
    return (_EPOCH + timedelta(hours=hour)).strftime("%Y-%m-%dT%H")


def _number(output: Any) -> float | None:
    kind = type(output)
    if kind is float or kind is int:
        return float(output)
    if kind is bool or not isinstance(output, numbers.Real):
        return None
    return float(output)


class PredictionLog:
    """Buffered, backpressured, crash-safe writer of :class:`Prediction` rows.

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
        self._pending: dict[_Key, list[_Row]] = {}
        self._pending_rows = 0  # rows in _pending
        self._buffered = 0  # rows appended and not yet written (pending or being written)
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._known_deployments: set[str] = set()
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

    def append(self, record: Prediction) -> None:
        """Buffer one prediction; blocks while ``max_buffered_rows`` are waiting."""
        self._put_blocking(self._encode([record]))

    def append_many(self, records: Iterable[Prediction]) -> None:
        """Buffer many predictions at once (all or none); blocks like :meth:`append`."""
        self._put_blocking(self._encode(records))

    async def append_async(self, record: Prediction) -> None:
        """:meth:`append` for event loops: awaits room without blocking the loop."""
        await self._put_async(self._encode([record]))

    async def append_many_async(self, records: Iterable[Prediction]) -> None:
        """:meth:`append_many` for event loops."""
        await self._put_async(self._encode(records))

    def _encode(self, records: Iterable[Prediction]) -> list[tuple[_Key, _Row]]:
        out: list[tuple[_Key, _Row]] = []
        known = self._known_deployments
        for r in records:
            if r.deployment not in known:
                check_name(r.deployment)
                known.add(r.deployment)
            try:
                features = orjson.dumps(r.features, option=_JSON_OPTS)
            except TypeError as exc:
                raise InvalidInput(
                    f"prediction {r.request_id!r}: 'features' must be JSON-serializable ({exc})"
                ) from None
            try:
                output = orjson.dumps(r.output, option=_JSON_OPTS)
            except TypeError as exc:
                raise InvalidInput(
                    f"prediction {r.request_id!r}: 'output' must be JSON-serializable ({exc})"
                ) from None
            at = _epoch_us(r.at, r.request_id)
            row: _Row = (
                str(r.request_id),
                str(r.model),
                int(r.version),
                str(r.arm),
                features,
                output,
                _number(r.output),
                float(r.latency_ms),
                at,
                bool(r.fallback),
                bool(r.shadow),
            )
            out.append(((r.deployment, at // _HOUR_US), row))
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput(f"the prediction log at {str(self.root)!r} is closed")

    def _has_room(self, n: int) -> bool:
        # A batch larger than the whole buffer still goes in once the buffer is empty.
        return self._buffered == 0 or self._buffered + n <= self.max_buffered_rows

    def _put_locked(self, rows: list[tuple[_Key, _Row]]) -> None:
        pending = self._pending
        for key, row in rows:
            group = pending.get(key)
            if group is None:
                pending[key] = [row]
            else:
                group.append(row)
        n = len(rows)
        self._pending_rows += n
        self._buffered += n
        self.rows_appended += n
        if self._pending_rows >= self.flush_rows:
            self._work.notify()

    def _put_blocking(self, rows: list[tuple[_Key, _Row]]) -> None:
        if not rows:
            return
        with self._lock:
            while True:
                self._check_open()
                if self._has_room(len(rows)):
                    self._put_locked(rows)
                    return
                self._work.notify()
                self._room.wait()

    async def _put_async(self, rows: list[tuple[_Key, _Row]]) -> None:
        if not rows:
            return
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                self._check_open()
                if self._has_room(len(rows)):
                    self._put_locked(rows)
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
        for i, (key, rows) in enumerate(groups):
            try:
                self._write_group(key, rows)
            except BaseException:
                with self._lock:
                    for back_key, back_rows in groups[i:]:
                        newer = self._pending.get(back_key)
                        self._pending[back_key] = back_rows + newer if newer else back_rows
                        self._pending_rows += len(back_rows)
                raise
            with self._lock:
                self._buffered -= len(rows)
                self.rows_written += len(rows)
                self.files_written += 1
                self._wake_appenders_locked()

    def _write_group(self, key: _Key, rows: Sequence[_Row]) -> None:
        deployment, hour = key
        arrays = []
        for i, field in enumerate(PREDICTION_SCHEMA):
            column = [row[i] for row in rows]
            if i in _JSON_COLUMNS:
                arrays.append(_json_array(column))
            else:
                arrays.append(pa.array(column, type=field.type))
        table = pa.Table.from_arrays(arrays, schema=PREDICTION_SCHEMA)
        directory = self.root / f"deployment={deployment}" / f"hour={_hour_label(hour)}"
        directory.mkdir(parents=True, exist_ok=True)
        while True:
            self._seq += 1
            name = f"part-{self.worker}-{self._seq:06d}.parquet"
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


def _json_array(values: list[Any]) -> pa.Array:
    """A string array from orjson output (valid UTF-8), without re-validating it."""
    data = b"".join(values)
    if len(data) >= 2**31 - 1:  # beyond 32-bit offsets: let Arrow chunk it
        return pa.array([v.decode() for v in values], type=pa.string())
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, values), dtype=np.int32, count=len(values)), out=offsets[1:])
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(data))


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


def read_predictions(
    root: str | os.PathLike[str] | None = None,
    *,
    deployment: str | None = None,
    since: datetime | int | None = None,
) -> pa.Table:
    """Read the published prediction files as one Arrow table.

    Columns: :data:`PREDICTION_SCHEMA` plus ``deployment`` and ``hour`` from the path.
    ``deployment`` keeps one deployment; ``since`` (aware datetime, naive meaning UTC, or
    epoch µs) keeps rows answered at or after it. Rows come in no particular order;
    temporary files of writes in progress are never read.
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
    dataset = ds.dataset(
        files,
        schema=_READ_SCHEMA,
        format="parquet",
        partitioning=_PARTITIONING,
        partition_base_dir=str(base),
    )
    if since_us is None:
        return dataset.to_table()
    bound = pa.scalar(since_us, type=pa.timestamp("us", tz="UTC"))
    return dataset.to_table(filter=ds.field("at") >= bound)


_READ_SCHEMA = pa.schema(
    [*PREDICTION_SCHEMA, pa.field("deployment", pa.string()), pa.field("hour", pa.string())]
)
