"""The batched metric writer: logging a value appends to a buffer; a thread writes batches.

``log_metric`` costs an append under a lock. A daemon thread flushes the buffer every
``flush_interval_s`` and beats the heartbeat of every live run of this process; runs flush
synchronously when they end, and every writer flushes at interpreter exit. A batch that
cannot be written stays buffered and is retried, so a transient outage loses nothing.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any

from kiln.core import now_millis
from kiln.store import MetadataStore

__all__ = ["MetricWriter"]

_log = logging.getLogger("kiln.tracking")
Row = tuple[str, str, float, int, int]  # run_id, key, value, step, timestamp

_SQL = {
    "history": (
        "INSERT INTO kiln_metrics (run_id, key, step, value, is_nan, timestamp) "
        "VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
    ),
    "latest": (
        "INSERT INTO kiln_latest_metrics (run_id, key, value, is_nan, step, timestamp) "
        "VALUES ({p}, {p}, {p}, {p}, {p}, {p}) "
        "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, "
        "is_nan = excluded.is_nan, step = excluded.step, timestamp = excluded.timestamp "
        "WHERE excluded.step > kiln_latest_metrics.step OR (excluded.step = "
        "kiln_latest_metrics.step AND excluded.timestamp >= kiln_latest_metrics.timestamp)"
    ),
    "beat": "UPDATE kiln_runs SET heartbeat_at = {p} WHERE id = {p} AND status = 'RUNNING'",
}


def _sql(name: str, dialect: str) -> str:
    return _SQL[name].format(p="?" if dialect == "sqlite" else "%s")


class MetricWriter:
    """One per metadata store and process; shared by every run of that process."""

    def __init__(
        self, store: MetadataStore, *, flush_interval_s: float, heartbeat_interval_s: float
    ) -> None:
        self._store = store
        self._flush_interval = flush_interval_s
        self._beat_interval = heartbeat_interval_s
        self._buf: list[Row] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._live: dict[str, None] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_beat = 0
        self._sql = {name: _sql(name, store.dialect) for name in _SQL}
        _writers.add(self)

    def add(self, run_id: str, key: str, value: float, step: int, timestamp: int) -> None:
        with self._lock:
            self._buf.append((run_id, key, value, step, timestamp))

    def add_many(self, rows: list[Row]) -> None:
        with self._lock:
            self._buf.extend(rows)

    def pending(self) -> int:
        return len(self._buf)

    def track(self, run_id: str) -> None:
        """Beat ``run_id``'s heartbeat until :meth:`untrack`; starts the thread on first use."""
        with self._lock:
            self._live[run_id] = None
            if self._thread is None or not self._thread.is_alive():
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

    def flush(self) -> int:
        """Write everything logged before this call; return how many values were written."""
        with self._flush_lock:
            with self._lock:
                batch, self._buf = self._buf, []
            if not batch:
                return 0
            try:
                self._write(batch)
            except BaseException:
                with self._lock:
                    self._buf[:0] = batch
                raise
            return len(batch)

    def _write(self, batch: list[Row]) -> None:
        history: list[tuple[Any, ...]] = []
        latest: dict[tuple[str, str], tuple[Any, ...]] = {}
        for run_id, key, value, step, ts in batch:
            nan = value != value
            row = (run_id, key, step, 0.0 if nan else value, nan, ts)
            history.append(row)
            best = latest.get((run_id, key))
            if best is None or (step, ts) >= (best[4], best[5]):
                latest[(run_id, key)] = (run_id, key, row[3], nan, step, ts)
        with self._store.write() as conn:
            conn.exec_driver_sql(self._sql["history"], history)
            conn.exec_driver_sql(self._sql["latest"], list(latest.values()))

    def beat(self) -> None:
        runs = self.live_runs()
        if runs:
            now = now_millis()
            with self._store.write() as conn:
                conn.exec_driver_sql(self._sql["beat"], [(now, run_id) for run_id in runs])
        self._last_beat = now_millis()

    def _loop(self) -> None:
        wait = min(self._flush_interval, self._beat_interval)
        while not self._closed:
            self._wake.wait(wait)
            self._wake.clear()
            try:
                self.flush()
                if now_millis() - self._last_beat >= self._beat_interval * 1000:
                    self.beat()
            except Exception as exc:  # retried on the next tick; never kills the thread
                _log.warning("kiln: could not write metrics yet (%s); will retry", exc)

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
