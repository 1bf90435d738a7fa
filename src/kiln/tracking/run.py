"""The live run handle: the object you log into. Read it back as a frozen ``RunRecord``."""

from __future__ import annotations

import atexit
import contextvars
import os
import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from kiln.core import Conflict, InvalidInput, NotFound, new_id, now_millis
from kiln.tracking import _validate as v
from kiln.tracking._environment import current_environment
from kiln.tracking._params import encode
from kiln.tracking._queries import ensure_experiment, get_run
from kiln.tracking._statements import sql
from kiln.tracking.client import TrackingClient, default_client
from kiln.tracking.records import ArtifactRecord, RunRecord, RunStatus

__all__ = ["Run", "active_run", "reopen_run", "start_run"]

_stack: contextvars.ContextVar[tuple[Run, ...]] = contextvars.ContextVar("kiln_runs", default=())
_unended: dict[str, Run] = {}
_unended_lock = threading.Lock()
_env_written: set[tuple[str, str, int]] = set()
_INT64 = 1 << 63
_time_ns = time.time_ns


class Run:
    """A run in progress. Use it as a context manager, or call :meth:`end` yourself."""

    def __init__(
        self,
        *,
        client: TrackingClient,
        run_id: str,
        experiment: str,
        experiment_id: str,
        name: str,
        parent_id: str | None,
    ) -> None:
        self.client = client
        self.id = run_id
        self.experiment = experiment
        self.experiment_id = experiment_id
        self.name = name
        self.parent_id = parent_id
        self._status: str = RunStatus.RUNNING
        self._next_step: dict[str, int] = {}
        self._writer = client.writer
        self._append = self._writer.buffer.append
        self._token: contextvars.Token[tuple[Run, ...]] | None = None

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.experiment}/{self.name} {self._status}>"

    @property
    def status(self) -> str:
        return self._status

    # -- params and tags ------------------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record params; re-logging the same value is fine, a different one is a Conflict."""
        self._check_live("params")
        encoded = _encoded_params(params)
        if not encoded:
            return
        with self.client.meta.write_cursor() as cursor:
            self._insert_params(cursor, encoded)

    def _insert_params(self, cursor: Any, encoded: dict[str, tuple[str, str, Any]]) -> None:
        dialect = self.client.meta.dialect
        cursor.execute(sql("params_of_run", dialect), (self.id,))
        existing = {row[0]: (row[1], row[2]) for row in cursor.fetchall()}
        new = []
        for key, (text, kind, num) in encoded.items():
            old = existing.get(key)
            if old is None:
                new.append((self.id, key, text, kind, num))
            elif old != (text, kind):
                raise Conflict(
                    f"param {key!r} of run {self.id} is already {old[0]!r}; cannot change "
                    f"it to {text!r} (params are immutable: start a new run, or use a tag)"
                )
        if new:
            cursor.executemany(sql("param_insert", dialect), new)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Tags are mutable labels; setting a tag again replaces its value."""
        write_tags(self.client, self.id, tags)

    # -- metrics --------------------------------------------------------------------------

    def log_metric(
        self,
        key: str,
        value: float,
        step: int | None = None,
        timestamp: datetime | int | None = None,
    ) -> None:
        """Buffer one value (microseconds); it reaches the store within the flush interval.

        Without ``step`` the value gets the key's next step (0, 1, 2...).
        """
        next_step = self._next_step
        if self._status is not RunStatus.RUNNING or key not in next_step:
            self._check_live("metrics")
            v.check_key("metric", key)
        if step is None:
            step = next_step.get(key, 0)
        elif type(step) is not int or not -_INT64 <= step < _INT64:
            step = v.check_step(key, step)
        next_step[key] = step + 1
        if type(value) is not float:
            value = v.to_float(key, value)
        ts = _time_ns() // 1_000_000 if timestamp is None else v.check_timestamp(key, timestamp)
        self._append((self.id, key, value, step, ts))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not isinstance(metrics, Mapping):
            raise InvalidInput(
                f"metrics must be a mapping of key to number, got {type(metrics).__name__}"
            )
        for key, value in metrics.items():
            self.log_metric(key, value, step=step)

    def flush(self) -> None:
        """Write every buffered metric value now."""
        self._writer.flush()

    # -- artifacts and lineage ------------------------------------------------------------

    def log_artifact(
        self, local_path: str | os.PathLike[str], artifact_path: str = ""
    ) -> ArtifactRecord:
        """Store one file under ``artifact_path/<file name>``."""
        from kiln.tracking.artifacts import log_files

        self._check_live("artifacts")
        src = Path(local_path)
        if not src.is_file():
            raise NotFound(f"cannot log artifact {str(src)!r}: no such file")
        dest = v.artifact_path(f"{v.artifact_path(artifact_path)}/{src.name}")
        return log_files(self.client, self.id, [(src, dest)])[0]

    def log_artifacts(
        self, local_dir: str | os.PathLike[str], artifact_path: str = ""
    ) -> list[ArtifactRecord]:
        """Store every file under ``local_dir``, keeping the tree under ``artifact_path``."""
        from kiln.tracking.artifacts import log_files

        self._check_live("artifacts")
        root = Path(local_dir)
        if not root.is_dir():
            raise NotFound(f"cannot log artifacts from {str(root)!r}: no such directory")
        prefix = v.artifact_path(artifact_path)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        pairs = [(p, v.artifact_path(f"{prefix}/{p.relative_to(root).as_posix()}")) for p in files]
        return log_files(self.client, self.id, pairs)

    def log_text(self, text: str, artifact_file: str) -> ArtifactRecord:
        from kiln.tracking.artifacts import log_bytes

        self._check_live("artifacts")
        return log_bytes(self.client, self.id, text.encode("utf-8"), v.artifact_path(artifact_file))

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> ArtifactRecord:
        import json

        return self.log_text(json.dumps(data, indent=2, sort_keys=True, default=str), artifact_file)

    def log_input(self, kind: str, object_id: str, **properties: Any) -> None:
        """Declare that this run read ``kind``/``object_id`` (a dataset, a feature view...)."""
        from kiln.tracking.lineage import add_edge

        add_edge(kind, object_id, "input_to", "run", self.id, client=self.client, **properties)

    # -- lifecycle ------------------------------------------------------------------------

    def end(
        self,
        status: str = RunStatus.FINISHED,
        error: str | None = None,
        *,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Flush metrics and record the final status; ending twice is a no-op.

        ``tags`` and ``params`` are written in the same transaction: what is known only
        at the end is stored if and only if the end is, at the cost of one write.
        """
        if self._status != RunStatus.RUNNING:
            return
        if status not in RunStatus.TERMINAL:
            raise InvalidInput(
                f"a run ends as one of {', '.join(RunStatus.TERMINAL)}; got {status!r}"
            )
        dialect = self.client.meta.dialect
        tag_rows = _tag_rows(self.id, tags) if tags else []
        encoded = _encoded_params(params) if params else {}
        self._writer.untrack(self.id)
        end_sql, tag_sql = sql("run_end", dialect), sql("tag_upsert", dialect)

        def also(cursor: Any) -> None:
            if encoded:
                self._insert_params(cursor, encoded)
            if tag_rows:
                cursor.executemany(tag_sql, tag_rows)
            cursor.execute(end_sql, (status, now_millis(), error, self.id))

        self._writer.flush(also=also)
        self._status = status
        with _unended_lock:
            _unended.pop(self.id, None)

    def record(self) -> RunRecord:
        """A frozen snapshot of the run as stored now (flushes pending metrics first)."""
        self._writer.flush()
        return get_run(self.client, self.id)

    def __enter__(self) -> Run:
        self._token = _stack.set((*_stack.get(), self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _stack.reset(self._token)
            self._token = None
        if exc_type is None:
            self.end(RunStatus.FINISHED)
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end(RunStatus.KILLED, error="KeyboardInterrupt")
        else:
            self.end(RunStatus.FAILED, error=f"{exc_type.__name__}: {exc}")

    def _check_live(self, what: str) -> None:
        if self._status != RunStatus.RUNNING:
            raise Conflict(f"run {self.id} has ended ({self._status}); it takes no more {what}")


def _encoded_params(params: Mapping[str, Any]) -> dict[str, tuple[str, str, Any]]:
    if not isinstance(params, Mapping):
        raise InvalidInput(f"params must be a mapping of key to value, got {type(params).__name__}")
    return {v.check_key("param", k): encode(k, val) for k, val in params.items()}


def _tag_rows(run_id: str, tags: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    if not isinstance(tags, Mapping):
        raise InvalidInput(f"tags must be a mapping of key to value, got {type(tags).__name__}")
    return [
        (run_id, v.check_key("tag", k), v.check_text(f"tag {k!r}", str(val)))
        for k, val in tags.items()
    ]


def write_tags(client: TrackingClient, run_id: str, tags: Mapping[str, Any]) -> None:
    rows = _tag_rows(run_id, tags)
    if rows:
        with client.meta.write_cursor() as cursor:
            cursor.executemany(sql("tag_upsert", client.meta.dialect), rows)


def active_run() -> Run | None:
    """The innermost run started with ``with kiln.start_run(...)`` in this context."""
    stack = _stack.get()
    return stack[-1] if stack else None


def start_run(
    experiment: str | None = None,
    name: str | None = None,
    *,
    tags: Mapping[str, Any] | None = None,
    parent: Run | str | None = None,
    client: TrackingClient | None = None,
) -> Run:
    """Start a run in ``experiment`` (created on first use).

    Inside ``with kiln.start_run(...)`` a new run becomes a child of the active one and
    inherits its experiment unless ``experiment`` or ``parent`` say otherwise.
    """
    outer = active_run()
    if parent is None and outer is not None:
        parent = outer
    if client is None:
        client = parent.client if isinstance(parent, Run) else default_client()
    parent_id = parent.id if isinstance(parent, Run) else parent
    if experiment is None:
        experiment = parent.experiment if isinstance(parent, Run) else None
    if experiment is None and parent_id is not None:
        experiment = get_run(client, parent_id).experiment
    experiment = v.check_name("experiment", experiment or "default")
    run_id = new_id()
    name = v.check_name("run", name) if name is not None else f"run-{run_id[-6:]}"
    tag_rows = _tag_rows(run_id, tags or {})
    env_id, env_json = current_environment()
    now = now_millis()
    env_key = (client.meta.url, env_id, os.getpid())
    dialect = client.meta.dialect
    with client.meta.write_cursor() as cursor:
        exp_id = ensure_experiment(cursor, dialect, experiment)
        if parent_id is not None:
            cursor.execute(sql("run_exists", dialect), (parent_id,))
            if cursor.fetchone() is None:
                raise NotFound(f"parent run {parent_id!r} does not exist")
        if env_key not in _env_written:
            cursor.execute(sql("environment_insert", dialect), (env_id, env_json, now))
        cursor.execute(
            sql("run_insert", dialect), (run_id, exp_id, name, now, now, parent_id, env_id)
        )
        if tag_rows:
            cursor.executemany(sql("tag_upsert", dialect), tag_rows)
    _env_written.add(env_key)
    run = Run(
        client=client,
        run_id=run_id,
        experiment=experiment,
        experiment_id=exp_id,
        name=name,
        parent_id=parent_id,
    )
    client.writer.track(run_id)
    with _unended_lock:
        _unended[run_id] = run
    return run


def reopen_run(run_id: str, *, client: TrackingClient | None = None) -> Run:
    """A live handle on an ended run, running again: for work that resumes where it
    stopped (a flow run) and keeps logging into the same run rather than a new one."""
    client = client or default_client()
    record = get_run(client, run_id)
    with client.meta.write_cursor() as cursor:
        cursor.execute(sql("run_reopen", client.meta.dialect), (now_millis(), run_id))
    run = Run(
        client=client,
        run_id=run_id,
        experiment=record.experiment,
        experiment_id=record.experiment_id,
        name=record.name,
        parent_id=record.parent_id,
    )
    client.writer.track(run_id)
    with _unended_lock:
        _unended[run_id] = run
    return run


@atexit.register
def _end_unended_runs() -> None:
    """Runs left open at a normal exit end FINISHED, or FAILED after an uncaught exception."""
    failed = getattr(sys, "last_value", None)
    for run in list(_unended.values()):
        try:
            if failed is not None:
                run.end(RunStatus.FAILED, error=f"{type(failed).__name__}: {failed}")
            else:
                run.end(RunStatus.FINISHED)
        except Exception:
            continue
