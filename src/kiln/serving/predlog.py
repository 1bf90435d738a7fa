"""The prediction log: every answer the server gives, appended to Parquet with no loss.

A :class:`PredictionLog` buffers answers in memory, one entry per request (or per group
of requests answered together) holding references to its numpy arrays, and a background
thread writes them out every ``flush_interval_s`` seconds, or as soon as ``flush_rows``
rows are waiting. Each write makes one Parquet file per deployment, hour, model version
and input layout, so every file has exactly one schema::

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
rows in Python. :meth:`PredictionLog.try_append_requests` takes the requests of one
model call at once (the server's batches: the joined arrays, and a request id, arm,
shadow flag, row count and latency per request): one check and one entry for the batch,
and it never waits, so the event loop calls it as the batch is answered and falls back to
the per-request path only when the buffer is full. :meth:`PredictionLog.append` and
friends (one :class:`Prediction` per row, plain Python values) remain for other callers
and are built on the same path.

This module buffers and runs the writer thread; checking appended requests, building and
publishing files, and reading them back live in ``_predlog_entries``, ``_predlog_files``
and ``_predlog_read`` (with the on-disk format in ``_predlog_format``).

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
- ``entities``: a struct with one field per entity key the request's online features
  were looked up with (``user_id``...), holding the values the request gave (``int64``
  or ``string`` as sent). Written only for requests that carry entity keys (the native
  endpoint of a deployment with features, or ``entities=`` given to the appenders);
  absent from other files, so it reads as null for their rows. It is what
  :func:`kiln.monitoring.skew` recomputes the features from, point in time, at ``at``;
  entity keys that are also model inputs are in ``features`` too.
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
import os
import re
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kiln.core import InvalidInput
from kiln.serving._predlog_entries import (
    AnsweredRequests,
    BatchInputs,
    Entities,
    EntryChecker,
    Item,
    Prediction,
)
from kiln.serving._predlog_files import Entry, Key, build_table
from kiln.serving._predlog_format import PREDICTION_SCHEMA, default_root, hour_label
from kiln.serving._predlog_read import read_predictions
from kiln.store import write_atomically

__all__ = [
    "PREDICTION_SCHEMA",
    "AnsweredRequests",
    "BatchInputs",
    "Prediction",
    "PredictionLog",
    "default_root",
    "read_predictions",
]

_log = logging.getLogger(__name__)

_WORKER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,63}$")


@dataclass(slots=True)
class _Group:
    """Buffered requests that go to one file."""

    entries: list[Entry] = field(default_factory=list)
    rows: int = 0


def _is_count(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def _is_interval(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < math.inf


def _is_worker(value: object) -> bool:
    return value is None or (isinstance(value, str) and _WORKER_RE.match(value) is not None)


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
        checks = (
            ("flush_rows", flush_rows, "an integer >= 1", _is_count),
            ("max_buffered_rows", max_buffered_rows, "an integer >= 1", _is_count),
            ("flush_interval_s", flush_interval_s, "a number > 0", _is_interval),
            (
                "worker",
                worker,
                "1-64 letters, digits, '_' or '.', starting with a letter or digit",
                _is_worker,
            ),
        )
        for param, value, expected, valid in checks:
            if not valid(value):
                raise InvalidInput(
                    f"The {param!r} parameter of PredictionLog must be {expected}. Got {value!r}."
                )
        if worker is None:
            worker = f"{os.getpid()}.{secrets.token_hex(4)}"
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
        self._pending: dict[Key, _Group] = {}
        self._pending_rows = 0  # rows in _pending
        self._buffered = 0  # rows appended and not yet written (pending or being written)
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._checker = EntryChecker()
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
        entities: Entities | None = None,
    ) -> int:
        """Buffer one request's predictions, one row per input row; returns the row count.

        ``inputs`` are the values the model was given, either columns by name (1-D arrays
        of one length; a 2-D array is one list-valued input) or ``(names, matrix)`` with a
        2-D matrix whose columns are ``names`` in order. ``outputs`` has one entry (or one
        row of entries) per input row. ``at`` is an aware datetime (naive means UTC) or
        epoch µs. ``entities`` are the entity keys the request's features were looked up
        with (one column per key, one value per row), written to the ``entities`` struct
        so the features can be recomputed offline (training-serving skew).

        The arrays are kept by reference until written, not copied: the caller must not
        modify them afterwards, or pass ``copy=True`` (the server never modifies a
        request's arrays). Blocks while ``max_buffered_rows`` rows are waiting.
        """
        item = self._checker.batch(
            deployment, model, version, arm, request_id, inputs, outputs, latency_ms, at,
            fallback, shadow, copy, entities,
        )  # fmt: skip
        return 0 if item is None else self._put_blocking([item])

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
        entities: Entities | None = None,
    ) -> int:
        """:meth:`append_batch` for event loops: awaits room without blocking the loop."""
        item = self._checker.batch(
            deployment, model, version, arm, request_id, inputs, outputs, latency_ms, at,
            fallback, shadow, copy, entities,
        )  # fmt: skip
        if item is None:
            return 0
        items = [item]
        n: int = item[1][6]
        if n:
            with self._lock:  # room is the common case: no coroutine to wait in
                if self._put_if_room_locked(items, n):
                    return n
        return await self._put_async(items)

    def try_append_requests(self, answered: AnsweredRequests) -> int | None:
        """Buffer several requests answered together (one model call) as one entry.

        Never waits: returns the rows buffered, or None when the buffer has no room, so an
        event loop can fall back to :meth:`append_batch_async`, which awaits room. The
        arrays are kept by reference, as :meth:`append_batch` keeps them.
        """
        item = self._checker.requests(answered)
        if item is None:
            return 0
        n: int = item[1][6]
        with self._lock:
            return n if self._put_if_room_locked([item], n) else None

    def append(self, record: Prediction) -> None:
        """Buffer one prediction; blocks while ``max_buffered_rows`` are waiting."""
        self._put_blocking([self._checker.record(record)])

    def append_many(self, records: Iterable[Prediction]) -> None:
        """Buffer many predictions at once (all or none); blocks like :meth:`append`."""
        self._put_blocking([self._checker.record(r) for r in records])

    async def append_async(self, record: Prediction) -> None:
        """:meth:`append` for event loops: awaits room without blocking the loop."""
        await self._put_async([self._checker.record(record)])

    async def append_many_async(self, records: Iterable[Prediction]) -> None:
        """:meth:`append_many` for event loops."""
        await self._put_async([self._checker.record(r) for r in records])

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput(f"the prediction log at {str(self.root)!r} is closed")

    def _put_blocking(self, items: list[Item]) -> int:
        """Buffer ``items`` (all or none), waiting for room; returns their row count."""
        n = _rows(items)
        with self._lock:
            while n and not self._put_if_room_locked(items, n):
                self._room.wait()
        return n

    async def _put_async(self, items: list[Item]) -> int:
        """:meth:`_put_blocking` that awaits room without holding the event loop."""
        n = _rows(items)
        while n:
            with self._lock:
                if self._put_if_room_locked(items, n):
                    break
                loop = asyncio.get_running_loop()
                waiter: asyncio.Future[None] = loop.create_future()
                self._async_waiters.append((loop, waiter))
            await waiter
        return n

    def _put_if_room_locked(self, items: list[Item], n: int) -> bool:
        """Buffer ``items`` if there is room, else wake the writer and say so.

        Raises once the log is closed. A batch larger than the whole buffer still goes in
        once the buffer is empty.
        """
        self._check_open()
        if self._buffered and self._buffered + n > self.max_buffered_rows:
            self._work.notify()
            return False
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
        return True

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

    def _write_group(self, key: Key, entries: list[Entry]) -> None:
        deployment, hour = key[0], key[1]
        table = build_table(key, entries)
        digest = hashlib.blake2b(table.schema.serialize().to_pybytes(), digest_size=4)
        directory = self.root / f"deployment={deployment}" / f"hour={hour_label(hour)}"
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
        return write_atomically(directory, name, table)


def _rows(items: list[Item]) -> int:
    return items[0][1][6] if len(items) == 1 else sum(entry[6] for _, entry in items)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
