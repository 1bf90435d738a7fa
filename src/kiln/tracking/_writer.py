"""The batched metric writer: logging a value appends to a buffer; a thread writes batches.

``log_metric`` costs one append to a deque (atomic, no lock). A daemon thread flushes the
buffer every ``flush_interval_s`` and beats the heartbeat of every live run of this
process, and stops when the process has no live run. Runs flush synchronously when they
end, and every writer flushes at interpreter exit. A batch that cannot be written stays
buffered and is retried, so a transient outage loses nothing.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from itertools import chain
from operator import itemgetter
from typing import Any

from kiln.core import now_millis
from kiln.store import MetadataStore
from kiln.tracking._statements import metric_insert_rows_sqlite, sql

__all__ = ["MetricWriter"]

_log = logging.getLogger("kiln.tracking")
Row = tuple[str, str, float, int, int]  # run_id, key, value, step, timestamp
_STEP_TS = itemgetter(3, 4)
# Rows per multi-row INSERT on SQLite: measured fastest between 32 and 100 (1,000 rows
# per statement is slower than one at a time: the statement outgrows its cache use).
_CHUNK = 64


def _pg_row(r: Row) -> tuple[Any, ...]:
    nan = r[2] != r[2]
    return (r[0], r[1], r[3], 0.0 if nan else r[2], nan, r[4])


def _pg_latest(r: Row) -> tuple[Any, ...]:
    nan = r[2] != r[2]
    return (r[0], r[1], 0.0 if nan else r[2], nan, r[3], r[4])


class MetricWriter:
    """One per metadata store and process; shared by every run of that process."""

    def __init__(
        self, store: MetadataStore, *, flush_interval_s: float, heartbeat_interval_s: float
    ) -> None:
        self._store = store
        self._flush_interval = flush_interval_s
        self._beat_interval = heartbeat_interval_s
        self.buffer: deque[Row] = deque()  # append is atomic: producers take no lock
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._live: dict[str, None] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_beat = 0
        self._sqlite = store.dialect == "sqlite"
        suffix = "_sqlite" if self._sqlite else ""
        self._history_sql = sql(f"metric_insert{suffix}", store.dialect)
        self._chunk_sql = metric_insert_rows_sqlite(_CHUNK)
        self._latest_sql = sql(f"latest_upsert{suffix}", store.dialect)
        self._beat_sql = sql("heartbeat", store.dialect)
        _writers.add(self)

    def add(self, run_id: str, key: str, value: float, step: int, timestamp: int) -> None:
        self.buffer.append((run_id, key, value, step, timestamp))

    def pending(self) -> int:
        return len(self.buffer)

    def track(self, run_id: str) -> None:
        """Beat ``run_id``'s heartbeat until :meth:`untrack`; starts the thread on first use."""
        with self._lock:
            self._live[run_id] = None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="kiln-metric-writer", daemon=True
                )
                self._thread.start()

    def untrack(self, run_id: str) -> None:
        with self._lock:
            self._live.pop(run_id, None)

    def live_runs(self) -> list[str]:
        with self._lock:
            return list(self._live)

    def flush(self, also: Callable[[Any], object] | None = None) -> int:
        """Write everything logged before this call; return how many values were written.

        ``also`` runs in the same transaction, so ending a run costs one commit.
        """
        with self._flush_lock:
            buffer = self.buffer
            batch = [buffer.popleft() for _ in range(len(buffer))]
            if not batch and also is None:
                return 0
            try:
                with self._store.write_cursor() as cursor:
                    if batch:
                        self._write(cursor, batch)
                    if also is not None:
                        also(cursor)
            except BaseException:
                self.buffer.extendleft(reversed(batch))
                raise
            return len(batch)

    def _write(self, cursor: Any, batch: list[Row]) -> None:
        # The latest value per (run, key) is the one with the highest (step, timestamp),
        # the later-logged on ties: a stable sort then a dict keeps exactly that row.
        ordered = sorted(batch, key=_STEP_TS)
        latest = list({(row[0], row[1]): row for row in ordered}.values())
        if self._sqlite:
            self._insert_history_sqlite(cursor, batch)
            cursor.executemany(self._latest_sql, latest)
            return
        cursor.executemany(self._history_sql, [_pg_row(r) for r in batch])
        cursor.executemany(self._latest_sql, [_pg_latest(r) for r in latest])

    def _insert_history_sqlite(self, cursor: Any, batch: list[Row]) -> None:
        """Whole chunks as multi-row INSERTs, the rest row by row, all in logging order."""
        whole = len(batch) - len(batch) % _CHUNK
        if whole:
            flat = list(chain.from_iterable(batch[:whole]))
            width = 5 * _CHUNK
            for i in range(0, len(flat), width):
                cursor.execute(self._chunk_sql, flat[i : i + width])
        if whole < len(batch):
            cursor.executemany(self._history_sql, batch[whole:])

    def beat(self) -> None:
        runs = self.live_runs()
        if runs:
            now = now_millis()
            with self._store.write_cursor() as cursor:
                cursor.executemany(self._beat_sql, [(now, run_id) for run_id in runs])
        self._last_beat = now_millis()

    def _loop(self) -> None:
        wait = min(self._flush_interval, self._beat_interval)
        while not self._closed:
            self._wake.wait(wait)
            self._wake.clear()
            healthy = True
            try:
                self.flush()
            except Exception as exc:  # retried on the next tick; never kills the thread
                _log.warning("kiln: could not write metrics yet (%s); will retry", exc)
                healthy = False
            try:  # a live process keeps beating even while its metrics wait
                if now_millis() - self._last_beat >= self._beat_interval * 1000:
                    self.beat()
            except Exception as exc:
                _log.warning("kiln: could not record the heartbeat (%s); will retry", exc)
                healthy = False
            if not healthy:
                continue
            with self._lock:  # idle: no live run, nothing buffered; track() restarts us
                if not self._live and not self.buffer:
                    self._thread = None
                    return

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        try:
            self.flush()
        except Exception as exc:
            _log.error("kiln: %d metric values could not be written: %s", self.pending(), exc)


_writers: weakref.WeakSet[MetricWriter] = weakref.WeakSet()


@atexit.register
def _flush_all_at_exit() -> None:
    for writer in list(_writers):
        writer.close()
