"""Schedules: flows started on a cron schedule, once per due time, by any number of schedulers.

:func:`schedule` stores a schedule after checking everything a run would need (the flow
imports, its parameters convert, the cron expression fires). A :class:`Scheduler`
(``kiln scheduler``) starts each due run as its own ``kiln flows run`` process, so a long
run never delays the others and outlives the scheduler.

Exactly once across replicas: a due time is claimed in one write transaction that moves
the schedule's ``next_due_at`` on with a compare-and-set (``UPDATE ... WHERE id = :id AND
next_due_at = :due``) and inserts the due time's row into ``kiln_flow_schedule_runs``,
keyed by (schedule, due time). Of two schedulers racing, the second's update matches no
row (SQLite runs write transactions one at a time; PostgreSQL makes the second wait on
the row lock and re-check its condition against the committed row), so it inserts nothing
and starts nothing; the key would refuse a second row anyway. The run is started after
the claim commits: a scheduler killed between the two leaves the due time ``starting``
without a run, never a run started twice.

Missed due times (no scheduler was running) follow the schedule's policy: ``skip`` starts
none, ``run-once`` starts one for the latest; either way the schedule moves on to its next
future time and the passed-over times are recorded, so ``kiln flows schedules`` says so.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from kiln.core import Conflict, InvalidInput, NotFound, get_settings, new_id, now_millis, to_millis
from kiln.flows import _cron
from kiln.flows._flow import load_flow
from kiln.flows._launch import check_executor, flow_command, launch, text_params
from kiln.flows._tables import flow_runs, flow_schedule_runs, flow_schedules
from kiln.flows.records import Schedule, ScheduledRun
from kiln.tracking import TrackingClient, default_client

__all__ = [
    "MISSED_POLICIES",
    "Scheduler",
    "get_schedule",
    "record_started",
    "schedule",
    "scheduled_runs",
    "schedules",
    "unschedule",
]

MISSED_POLICIES = ("skip", "run-once")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_COUNT_LIMIT = 10_000  # missed due times counted one by one before the count stops
_log = logging.getLogger(__name__)


# -- schedules --------------------------------------------------------------------------------


def schedule(
    target: str,
    cron: str,
    params: Mapping[str, str | int | float | bool] | None = None,
    *,
    executor: str = "processes",
    max_parallel: int | None = None,
    missed: str = "skip",
    name: str | None = None,
    client: TrackingClient | None = None,
) -> Schedule:
    """Run the flow ``target`` ("pkg.module:function") whenever ``cron`` fires (in UTC).

    ``params`` are the flow's parameters as text, as ``--param NAME=VALUE`` takes them
    (numbers and bools are written as text); they are converted by the flow's type hints
    now, so a mistake is reported here rather than at 3 a.m. ``missed`` says what a
    scheduler does with due times that passed while none ran: ``skip`` them or
    ``run-once`` for the latest. ``name`` defaults to the flow's name and must be unique.
    The target is imported from the current directory, and so are the scheduled runs.
    """
    client = client or default_client()
    now = now_millis()
    cron_text = _cron.check(cron, now)
    if missed not in MISSED_POLICIES:
        known = ", ".join(MISSED_POLICIES)
        raise InvalidInput(f"missed: unknown policy {missed!r}; known: {known}")
    _check_executor(executor)
    if max_parallel is not None and (
        isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1
    ):
        raise InvalidInput(f"max_parallel must be an integer >= 1; got {max_parallel!r}")
    text = text_params(params)
    flow = load_flow(target)
    flow.params(text, from_text=True)  # converted as the run will convert them
    label = _check_name(name if name is not None else flow.name, given=name is not None)
    schedule_id = new_id()
    row: dict[str, Any] = {
        "id": schedule_id,
        "name": label,
        "flow": flow.name,
        "target": target,
        "cron": cron_text,
        "params": orjson.dumps(text).decode(),
        "executor": executor,
        "max_parallel": max_parallel,
        "missed": missed,
        "workdir": str(Path.cwd()),
        "next_due_at": _cron.next_after(cron_text, now),
        "created_at": now,
        "updated_at": now,
    }
    try:
        with client.meta.write() as conn:
            conn.execute(sa.insert(flow_schedules).values(**row))
    except sa.exc.IntegrityError:  # the name is taken: the unique key says so atomically
        taken = get_schedule(label, client=client)
        raise Conflict(
            f"name: a schedule named {label!r} exists (id {taken.id}, flow {taken.flow!r}); "
            "unschedule it first or pick another name"
        ) from None
    return get_schedule(schedule_id, client=client)


def schedules(*, client: TrackingClient | None = None) -> list[Schedule]:
    """Every schedule, by name, each with its next due time and the latest one acted on."""
    client = client or default_client()
    with client.meta.read() as conn:
        return _read(conn)


def get_schedule(id_or_name: str, *, client: TrackingClient | None = None) -> Schedule:
    """The schedule with this id or name; NotFound lists the known names."""
    client = client or default_client()
    with client.meta.read() as conn:
        found = _read(conn, id_or_name)
        if not found:
            known = conn.execute(
                sa.select(flow_schedules.c.name).order_by(flow_schedules.c.name)
            ).scalars()
            names = ", ".join(known) or "none yet"
    if not found:
        raise NotFound(f"no schedule {id_or_name!r}; known schedules: {names}")
    return found[0]


def unschedule(id_or_name: str, *, client: TrackingClient | None = None) -> Schedule:
    """Delete a schedule and its record of due times; runs it started stay as they are.
    Returns the deleted schedule."""
    client = client or default_client()
    gone = get_schedule(id_or_name, client=client)
    with client.meta.write() as conn:
        # Lock the schedule's row first: a scheduler claiming a due time now either commits
        # before (its claim row is deleted here) or finds the schedule gone.
        conn.execute(
            sa.update(flow_schedules)
            .where(flow_schedules.c.id == gone.id)
            .values(updated_at=now_millis())
        )
        conn.execute(
            sa.delete(flow_schedule_runs).where(flow_schedule_runs.c.schedule_id == gone.id)
        )
        conn.execute(sa.delete(flow_schedules).where(flow_schedules.c.id == gone.id))
    return gone


def scheduled_runs(
    id_or_name: str, *, limit: int = 50, client: TrackingClient | None = None
) -> list[ScheduledRun]:
    """The due times a schedule's schedulers acted on, latest first."""
    client = client or default_client()
    found = get_schedule(id_or_name, client=client)
    with client.meta.read() as conn:
        rows = conn.execute(
            _claims_query()
            .where(flow_schedule_runs.c.schedule_id == found.id)
            .order_by(flow_schedule_runs.c.due_at.desc())
            .limit(limit)
        ).all()
    return [_claim(r, found.name) for r in rows]


def record_started(
    schedule_id: str, due_at: int, run_id: str, *, client: TrackingClient | None = None
) -> bool:
    """Link the flow run a scheduler started for one due time to its claim, and tag the
    run with the schedule's name; ``kiln flows run`` calls it once the run exists.

    It never raises: the run is already going and must not fail for its bookkeeping. A
    failure is one line on stderr (the run's log) and the claim stays ``starting``.
    """
    try:
        client = client or default_client()
        with client.meta.write() as conn:
            name = conn.execute(
                sa.select(flow_schedules.c.name).where(flow_schedules.c.id == schedule_id)
            ).scalar()
            if name is None:  # unscheduled since
                return False
            conn.execute(
                sa.update(flow_schedule_runs)
                .where(
                    flow_schedule_runs.c.schedule_id == schedule_id,
                    flow_schedule_runs.c.due_at == due_at,
                )
                .values(status="started", run_id=run_id, error=None)
            )
            conn.execute(sa.update(flow_runs).where(flow_runs.c.id == run_id).values(schedule=name))
        return True
    except Exception as exc:
        print(
            f"kiln: warning: flow run {run_id} could not be recorded on schedule "
            f"{schedule_id} (due {_iso(due_at)}): {exc}",
            file=sys.stderr,
        )
        return False


# -- the scheduler ----------------------------------------------------------------------------

Launcher = Callable[[Schedule, ScheduledRun], object]
"""Starts the run of a claimed due time; the default spawns ``kiln flows run``."""


@dataclass(frozen=True)
class _Child:
    process: subprocess.Popen[bytes]
    schedule_id: str
    due_at: int
    log: Path


class Scheduler:
    """Starts the due runs of every schedule in the metadata store.

    Run as many as you like against one store (two for availability): each due time is
    claimed by exactly one. ``interval_s`` is how often :meth:`serve` looks; a due time
    older than ``max(60 s, 2 x interval_s)`` when first seen counts as missed. Runs are
    spawned with this process's settings (same stores) from the directory each schedule
    was created in, their output appended to ``<log_dir>/<schedule>.log`` (default
    ``KILN_HOME/scheduler``). ``launcher`` replaces the spawning (tests, other runners);
    ``on_event`` sees every due time acted on.
    """

    def __init__(
        self,
        *,
        interval_s: float = 10.0,
        client: TrackingClient | None = None,
        log_dir: str | Path | None = None,
        launcher: Launcher | None = None,
        on_event: Callable[[ScheduledRun], None] | None = None,
    ) -> None:
        if (
            isinstance(interval_s, bool)
            or not isinstance(interval_s, int | float)
            or not (interval_s > 0)
        ):
            raise InvalidInput(
                f"interval_s must be a positive number of seconds; got {interval_s!r}"
            )
        self.interval_s = float(interval_s)
        self.grace_ms = int(max(60.0, 2 * self.interval_s) * 1000)
        self._client = client
        self.log_dir = Path(log_dir) if log_dir is not None else get_settings().home / "scheduler"
        self._launch: Launcher = launcher or self._spawn
        self._on_event = on_event
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self.identity = f"{socket.gethostname()}:{os.getpid()}"

    def __repr__(self) -> str:
        return f"<Scheduler {self.identity} every {self.interval_s:g} s>"

    @property
    def client(self) -> TrackingClient:
        return self._client or default_client()

    def tick(self, now: datetime | int | None = None) -> list[ScheduledRun]:
        """Act on every due time up to ``now`` (default: the clock; a datetime or epoch
        ms): claim it, then start its run or record it skipped. Returns what this
        scheduler claimed; due times another replica claimed first are not in it."""
        now_ms = now_millis() if now is None else to_millis(now)
        self.reap()
        acted: list[ScheduledRun] = self._recover(now_ms)
        for due in self._due(now_ms):
            try:
                claim = self._claim(due, now_ms)
                if claim is None:
                    continue
                if claim.status == "starting":
                    claim = self._start(due, claim)
            except Exception as exc:  # one broken schedule never stops the others
                _log.warning("schedule %r: %s", due.name, exc)
                continue
            acted.append(claim)
            if self._on_event is not None:
                self._on_event(claim)
        return acted

    def serve(self, stop_event: threading.Event | None = None) -> None:
        """Tick every ``interval_s`` until ``stop_event`` is set (forever without one).

        A tick that fails (the store unreachable for a while) is logged and the next one
        tries again: a scheduler is meant to outlast outages of what it depends on.
        """
        stop = stop_event or threading.Event()
        while not stop.is_set():
            began = time.monotonic()
            try:
                self.tick()
            except Exception as exc:
                _log.warning("kiln scheduler: tick failed: %s", exc)
            stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))
        self.reap()

    def reap(self) -> int:
        """Collect the run processes that ended; one that ended before its run started
        marks its due time ``failed``, naming its log. Returns how many still run."""
        with self._lock:
            ended = [c for c in self._children if c.process.poll() is not None]
            self._children = [c for c in self._children if c not in ended]
            running = len(self._children)
        for child in ended:
            code = child.process.returncode
            if code == 0:
                continue
            error = f"its process exited with status {code} before the run started; see {child.log}"
            with self.client.meta.write() as conn:
                conn.execute(
                    sa.update(flow_schedule_runs)
                    .where(
                        flow_schedule_runs.c.schedule_id == child.schedule_id,
                        flow_schedule_runs.c.due_at == child.due_at,
                        flow_schedule_runs.c.run_id.is_(None),
                    )
                    .values(status="failed", error=error)
                )
        return running

    def wait_started(self, timeout_s: float = 60.0) -> int:
        """Wait until every run this scheduler launched has recorded its flow run or its
        process has ended (then :meth:`reap` marks the due time failed); how many are
        still neither after ``timeout_s``. ``kiln scheduler --once`` calls it before it
        exits, since nobody would reap a run that cannot start after that."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.reap()
            with self._lock:
                pending = list(self._children)
            with self.client.meta.read() as conn:
                unlinked = [
                    c
                    for c in pending
                    if conn.execute(
                        sa.select(flow_schedule_runs.c.run_id).where(
                            flow_schedule_runs.c.schedule_id == c.schedule_id,
                            flow_schedule_runs.c.due_at == c.due_at,
                        )
                    ).scalar()
                    is None
                ]
            if not unlinked or time.monotonic() > deadline:
                return len(unlinked)
            time.sleep(0.05)

    def command(self, schedule: Schedule, due_at: int) -> list[str]:
        """The ``kiln flows run`` command line that starts ``schedule``'s run for ``due_at``."""
        argv = flow_command(
            schedule.target, schedule.params, schedule.executor, schedule.max_parallel
        )
        return [*argv, "--schedule-id", schedule.id, "--due-at", str(due_at)]

    def log_path(self, schedule: Schedule) -> Path:
        return self.log_dir / f"{schedule.name}.log"

    # -- claiming -------------------------------------------------------------------------

    def _due(self, now_ms: int) -> list[Schedule]:
        with self.client.meta.read() as conn:
            rows = conn.execute(
                sa.select(flow_schedules)
                .where(flow_schedules.c.next_due_at <= now_ms)
                .order_by(flow_schedules.c.next_due_at, flow_schedules.c.id)
            ).all()
        return [_schedule(r, None) for r in rows]

    def _claim(self, due: Schedule, now_ms: int) -> ScheduledRun | None:
        """Claim ``due``'s due time for this scheduler, or None when another has it."""
        first = due.next_due_at
        latest = max(first, _cron.latest_due(due.cron, now_ms))
        following = _cron.next_after(due.cron, now_ms)
        status, due_at, skipped, skipped_from = "starting", first, 0, None
        if latest > first or now_ms - first > self.grace_ms:  # missed while none ran
            count = _cron.count_due(due.cron, first, now_ms, _COUNT_LIMIT)
            due_at, skipped_from = latest, first
            if due.missed == "skip":
                status, skipped = "skipped", count
            else:
                skipped = count - 1
                skipped_from = first if skipped else None
        claim = ScheduledRun(
            schedule_id=due.id,
            schedule=due.name,
            due_at=due_at,
            status=status,
            run_id=None,
            run_status=None,
            skipped=skipped,
            skipped_from=skipped_from,
            claimed_at=now_millis(),
            claimed_by=self.identity,
            error=None,
        )
        with self.client.meta.write() as conn:
            moved = conn.execute(
                sa.update(flow_schedules)
                .where(flow_schedules.c.id == due.id, flow_schedules.c.next_due_at == first)
                .values(next_due_at=following, updated_at=claim.claimed_at)
            ).rowcount
            if moved != 1:
                return None  # another scheduler claimed it (or it was unscheduled)
            row = {c.name: getattr(claim, c.name) for c in flow_schedule_runs.columns}
            conn.execute(sa.insert(flow_schedule_runs).values(**row))
        return claim

    def _start(self, due: Schedule, claim: ScheduledRun) -> ScheduledRun:
        try:
            self._launch(due, claim)
        except Exception as exc:
            error = f"could not start the run: {type(exc).__name__}: {exc}"
            with self.client.meta.write() as conn:
                conn.execute(
                    sa.update(flow_schedule_runs)
                    .where(
                        flow_schedule_runs.c.schedule_id == claim.schedule_id,
                        flow_schedule_runs.c.due_at == claim.due_at,
                    )
                    .values(status="failed", error=error)
                )
            return replace(claim, status="failed", error=error)
        return claim

    def _recover(self, now_ms: int) -> list[ScheduledRun]:
        """Start the runs of due times whose scheduler died between claiming and starting.

        Such a claim stays ``starting`` with no run. One claimed by a scheduler on this
        machine whose process is gone, more than the grace period ago (a run that was
        started links itself within seconds, even if its scheduler died right after), is
        taken over with a compare-and-set on ``claimed_by``, so of two replicas finding
        it, one starts it. A claim from another machine cannot be judged from here and
        is left as it is (``kiln flows schedules`` shows it ``starting``).
        """
        host = self.identity.rpartition(":")[0]
        with self.client.meta.read() as conn:
            rows = conn.execute(
                _claims_query().where(
                    flow_schedule_runs.c.status == "starting",
                    flow_schedule_runs.c.run_id.is_(None),
                    flow_schedule_runs.c.claimed_at < now_ms - self.grace_ms,
                    flow_schedule_runs.c.claimed_by.like(f"{host}:%"),
                    flow_schedule_runs.c.claimed_by != self.identity,
                )
            ).all()
        recovered = []
        for row in rows:
            if _alive(row.claimed_by.rpartition(":")[2]):
                continue
            with self.client.meta.write() as conn:
                taken = conn.execute(
                    sa.update(flow_schedule_runs)
                    .where(
                        flow_schedule_runs.c.schedule_id == row.schedule_id,
                        flow_schedule_runs.c.due_at == row.due_at,
                        flow_schedule_runs.c.claimed_by == row.claimed_by,
                        flow_schedule_runs.c.run_id.is_(None),
                    )
                    .values(claimed_by=self.identity, claimed_at=now_millis())
                ).rowcount
            if taken != 1:
                continue  # another replica took it over first
            try:
                due = get_schedule(row.schedule_id, client=self.client)
            except NotFound:
                continue  # unscheduled since
            claim = replace(_claim(row, due.name), claimed_by=self.identity)
            _log.warning(
                "schedule %r: the run due %s was claimed by %s, which is gone; starting it",
                due.name,
                _iso(row.due_at),
                row.claimed_by,
            )
            recovered.append(self._start(due, claim))
        return recovered

    # -- spawning ---------------------------------------------------------------------------

    def _spawn(self, schedule: Schedule, claim: ScheduledRun) -> None:
        """``kiln flows run`` in a session of its own (a Ctrl-C or SIGTERM to the scheduler
        does not reach it), output appended to the schedule's log."""
        argv = self.command(schedule, claim.due_at)
        log = self.log_path(schedule)
        process = launch(
            argv,
            log,
            schedule.workdir,
            client=self.client,
            note=f"{self.identity} starts the run due {_iso(claim.due_at)}",
        )
        with self._lock:
            self._children.append(_Child(process, schedule.id, claim.due_at, log))


# -- reading ----------------------------------------------------------------------------------


def _alive(pid: str) -> bool:
    """Whether process ``pid`` of this machine still runs (a pid that is not a number, or
    that this user may not signal, counts as running: never taken over on a guess)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError, OSError):
        return True
    return True


def _claims_query() -> sa.Select[Any]:
    return sa.select(flow_schedule_runs, flow_runs.c.status.label("run_status")).select_from(
        flow_schedule_runs.outerjoin(flow_runs, flow_runs.c.id == flow_schedule_runs.c.run_id)
    )


def _read(conn: Any, id_or_name: str | None = None) -> list[Schedule]:
    query = sa.select(flow_schedules).order_by(flow_schedules.c.name)
    if id_or_name is not None:
        query = query.where(
            sa.or_(flow_schedules.c.id == id_or_name, flow_schedules.c.name == id_or_name)
        )
    rows = conn.execute(query).all()
    if not rows:
        return []
    latest = (
        sa.select(
            flow_schedule_runs.c.schedule_id, sa.func.max(flow_schedule_runs.c.due_at).label("due")
        )
        .where(flow_schedule_runs.c.schedule_id.in_([r.id for r in rows]))
        .group_by(flow_schedule_runs.c.schedule_id)
        .subquery()
    )
    claims = conn.execute(
        _claims_query().join(
            latest,
            sa.and_(
                latest.c.schedule_id == flow_schedule_runs.c.schedule_id,
                latest.c.due == flow_schedule_runs.c.due_at,
            ),
        )
    ).all()
    last = {c.schedule_id: c for c in claims}
    return [_schedule(r, _claim(last[r.id], r.name) if r.id in last else None) for r in rows]


def _schedule(row: Any, last: ScheduledRun | None) -> Schedule:
    return Schedule(
        id=row.id,
        name=row.name,
        flow=row.flow,
        target=row.target,
        cron=row.cron,
        params=orjson.loads(row.params),
        executor=row.executor,
        max_parallel=row.max_parallel,
        missed=row.missed,
        workdir=row.workdir,
        next_due_at=row.next_due_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last=last,
    )


def _claim(row: Any, name: str) -> ScheduledRun:
    return ScheduledRun(
        schedule_id=row.schedule_id,
        schedule=name,
        due_at=row.due_at,
        status=row.status,
        run_id=row.run_id,
        run_status=row.run_status,
        skipped=row.skipped,
        skipped_from=row.skipped_from,
        claimed_at=row.claimed_at,
        claimed_by=row.claimed_by,
        error=row.error,
    )


# -- checks -----------------------------------------------------------------------------------


def _check_executor(executor: str) -> None:
    """The names :func:`kiln.flows.open_executor` takes, checked without starting one."""
    try:
        check_executor(executor)
    except InvalidInput as exc:
        raise InvalidInput(f"executor: {exc}") from None


def _check_name(name: str, *, given: bool) -> str:
    if isinstance(name, str) and _NAME.match(name):
        return name
    hint = "" if given else " (the flow's name); pass name="
    raise InvalidInput(
        f"name: a schedule name is 1-128 letters, digits, '_', '.' or '-', starting with a "
        f"letter or digit; got {name!r}{hint}"
    )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
