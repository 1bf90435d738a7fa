"""Flow schedules: checked at creation, listed and deleted, due times acted on once across
scheduler replicas (real `kiln scheduler` processes on SQLite, racing threads on SQLite
and PostgreSQL), missed due times skipped or run once, and runs started as processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _pipelines import ran

import kiln
from kiln.cli import main
from kiln.cli._format import console
from kiln.core import Conflict, InvalidInput, NotFound, now_millis
from kiln.flows import Schedule, ScheduledRun, Scheduler, _cron
from kiln.flows._tables import flow_schedule_runs, flow_schedules
from kiln.tracking import default_client

HERE = Path(__file__).parent
MINUTE = 60_000


def utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


class Launches:
    """A launcher that records what it would start, from any number of threads."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, schedule: Schedule, claim: ScheduledRun) -> None:
        with self._lock:
            self.started.append((schedule.name, claim.due_at))


def set_next_due(ms: int) -> None:
    """Move every schedule's next due time to ``ms``, as the clock reaching it would."""
    with default_client().meta.write() as conn:
        conn.execute(sa.update(flow_schedules).values(next_due_at=ms))


def claims() -> list[tuple[str, int, str]]:
    with default_client().meta.read() as conn:
        rows = conn.execute(
            sa.select(
                flow_schedules.c.name, flow_schedule_runs.c.due_at, flow_schedule_runs.c.status
            )
            .join(flow_schedules, flow_schedules.c.id == flow_schedule_runs.c.schedule_id)
            .order_by(flow_schedules.c.name, flow_schedule_runs.c.due_at)
        ).all()
    return [(r.name, r.due_at, r.status) for r in rows]


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def linear(name: str, work: Path, cron: str = "*/5 * * * *", **options: Any) -> Schedule:
    work.mkdir(parents=True, exist_ok=True)
    return kiln.flows.schedule(
        "_pipelines:linear",
        cron,
        {"work": str(work), "n": 3},
        executor="inline",
        name=name,
        **options,
    )


# -- creation ---------------------------------------------------------------------------------


def test_creation_checks_the_cron_the_flow_its_params_and_the_policy(tmp_path: Path) -> None:
    work = str(tmp_path)
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"cron": "0 3 * *"}, InvalidInput, "cron '0 3 * *' has 4 fields; expected five fields"),
        ({"cron": "0 3 * * * *"}, InvalidInput, "cron '0 3 * * * *' has 6 fields"),
        ({"cron": "61 3 * * *"}, InvalidInput, "cron '61 3 * * *' is not a valid cron"),
        ({"cron": "@fortnightly"}, InvalidInput, "cron '@fortnightly': unknown alias"),
        ({"cron": "0 0 31 2 *"}, InvalidInput, "cron '0 0 31 2 *' never fires"),
        ({"target": "_pipelines:nothing_here"}, InvalidInput, "is nothing, not a @kiln.flow"),
        ({"target": "no_such_module:f"}, InvalidInput, "cannot import 'no_such_module'"),
        ({"target": "linear"}, InvalidInput, "name a flow as pkg.module:function; got 'linear'"),
        ({"params": {"work": work, "n": "four"}}, InvalidInput, "--param n=four: int expected"),
        ({"params": {"work": work, "m": "1"}}, InvalidInput, "no parameter 'm'"),
        ({"params": {}}, InvalidInput, "flow 'linear' needs parameter 'work'"),
        ({"params": {"work": [1]}}, InvalidInput, "params['work'] must be text"),
        ({"missed": "catch-up"}, InvalidInput, "missed: unknown policy 'catch-up'; known: skip"),
        ({"executor": "threads"}, InvalidInput, "executor: unknown executor 'threads'"),
        ({"max_parallel": 0}, InvalidInput, "max_parallel must be an integer >= 1; got 0"),
        ({"name": "my schedule"}, InvalidInput, "name: a schedule name is 1-128 letters"),
    ]
    for change, error, message in cases:
        args: dict[str, Any] = {
            "target": "_pipelines:linear",
            "cron": "0 3 * * *",
            "params": {"work": work},
            **change,
        }
        with pytest.raises(error) as info:
            kiln.flows.schedule(args.pop("target"), args.pop("cron"), args.pop("params"), **args)
        assert message in str(info.value), (change, str(info.value))
    assert kiln.flows.schedules() == []  # nothing was stored by a refused schedule

    made = kiln.flows.schedule("_pipelines:linear", "0  3 * * *", {"work": work, "n": 7})
    assert (made.name, made.cron, made.missed) == ("linear", "0 3 * * *", "skip")
    assert made.params == {"work": work, "n": "7"}  # stored as the command line takes them
    with pytest.raises(Conflict, match=r"name: a schedule named 'linear' exists \(id \w+"):
        kiln.flows.schedule("_pipelines:linear", "@daily", {"work": work})


def test_schedules_are_listed_found_by_id_or_name_and_deleted(tmp_path: Path) -> None:
    before = now_millis()
    nightly = linear("nightly", tmp_path / "a", cron="0 3 * * *", missed="run-once")
    hourly = linear("hourly", tmp_path / "b", cron="@hourly", max_parallel=2)
    assert [s.name for s in kiln.flows.schedules()] == ["hourly", "nightly"]
    assert kiln.flows.get_schedule(nightly.id) == kiln.flows.get_schedule("nightly") == nightly
    assert (nightly.missed, nightly.last, hourly.max_parallel) == ("run-once", None, 2)
    # the next due time is the first after creation: 03:00 UTC, and the next whole hour
    assert nightly.next_due_at == _cron.next_after("0 3 * * *", nightly.created_at)
    assert datetime.fromtimestamp(nightly.next_due_at / 1000, UTC).strftime("%H:%M") == "03:00"
    assert before < hourly.next_due_at <= before + 60 * MINUTE
    assert hourly.next_due_at % (60 * MINUTE) == 0

    assert kiln.flows.unschedule("nightly").id == nightly.id
    assert kiln.flows.unschedule(hourly.id).name == "hourly"
    assert kiln.flows.schedules() == []
    with pytest.raises(NotFound, match="no schedule 'nightly'; known schedules: none yet"):
        kiln.flows.unschedule("nightly")


def test_next_due_times_follow_the_cron_in_utc() -> None:
    at = utc_ms(2024, 1, 1, 3, 0)
    assert _cron.next_after("0 3 * * *", at - 1) == at
    assert _cron.next_after("0 3 * * *", at) == utc_ms(2024, 1, 2, 3, 0)  # strictly after
    assert _cron.next_after("0 3 * * MON-FRI", utc_ms(2024, 1, 5, 4, 0)) == utc_ms(2024, 1, 8, 3)
    assert _cron.next_after("@monthly", utc_ms(2024, 2, 10)) == utc_ms(2024, 3, 1)
    assert _cron.latest_due("*/5 * * * *", utc_ms(2024, 1, 1, 3, 7)) == utc_ms(2024, 1, 1, 3, 5)
    assert _cron.latest_due("*/5 * * * *", utc_ms(2024, 1, 1, 3, 5)) == utc_ms(2024, 1, 1, 3, 5)
    assert _cron.count_due("*/5 * * * *", at, at + 17 * MINUTE, 100) == 4  # :00 :05 :10 :15
    assert _cron.count_due("* * * * *", at, at + 10**9, 50) == 50  # a long outage stops counting


# -- ticks with explicit times ----------------------------------------------------------------


def test_a_due_time_starts_one_run_and_the_schedule_moves_on(tmp_path: Path) -> None:
    made = linear("every5", tmp_path / "w")
    first = made.next_due_at
    launches = Launches()
    scheduler = Scheduler(interval_s=10, launcher=launches)
    assert scheduler.tick(first - 1) == []  # not yet due
    acted = scheduler.tick(first + 1_000)
    assert [(c.schedule, c.due_at, c.status, c.skipped) for c in acted] == [
        ("every5", first, "starting", 0)
    ]
    assert launches.started == [("every5", first)]
    assert scheduler.tick(first + 2_000) == []  # claimed already: nothing twice
    after = kiln.flows.get_schedule("every5")
    assert after.next_due_at == first + 5 * MINUTE
    assert after.last is not None and (after.last.due_at, after.last.status) == (first, "starting")
    # a due time seen within the grace (max(60 s, 2 x interval)) is on time, not missed
    late = Scheduler(interval_s=45, launcher=launches).tick(first + 5 * MINUTE + 89_000)
    assert [(c.due_at, c.status) for c in late] == [(first + 5 * MINUTE, "starting")]


def test_missed_due_times_are_skipped_under_the_skip_policy(tmp_path: Path) -> None:
    made = linear("skipper", tmp_path / "w", missed="skip")
    first = made.next_due_at
    launches = Launches()
    scheduler = Scheduler(interval_s=10, launcher=launches)
    # down from before the first due time until after the fourth: none runs
    acted = scheduler.tick(first + 15 * MINUTE + 10_000)
    assert [(c.due_at, c.status, c.skipped, c.skipped_from) for c in acted] == [
        (first + 15 * MINUTE, "skipped", 4, first)
    ]
    assert launches.started == []
    found = kiln.flows.get_schedule("skipper")
    assert found.next_due_at == first + 20 * MINUTE  # the next future time
    assert found.last is not None and (found.last.status, found.last.skipped) == ("skipped", 4)
    # one due time, but older than the grace (60 s here) when first seen: skipped too
    acted = scheduler.tick(first + 20 * MINUTE + 61_000)
    assert [(c.status, c.skipped) for c in acted] == [("skipped", 1)]
    assert launches.started == []
    assert [r.status for r in kiln.flows.scheduled_runs("skipper")] == ["skipped", "skipped"]


def test_missed_due_times_start_one_run_for_the_latest_under_run_once(tmp_path: Path) -> None:
    made = linear("catcher", tmp_path / "w", missed="run-once")
    first = made.next_due_at
    launches = Launches()
    scheduler = Scheduler(interval_s=10, launcher=launches)
    acted = scheduler.tick(first + 15 * MINUTE + 10_000)
    assert [(c.due_at, c.status, c.skipped, c.skipped_from) for c in acted] == [
        (first + 15 * MINUTE, "starting", 3, first)
    ]
    assert launches.started == [("catcher", first + 15 * MINUTE)]
    assert kiln.flows.get_schedule("catcher").next_due_at == first + 20 * MINUTE
    # the single late due time runs once as well
    acted = scheduler.tick(first + 20 * MINUTE + 5 * 60_000 - 1)
    assert [(c.due_at, c.status, c.skipped) for c in acted] == [
        (first + 20 * MINUTE, "starting", 0)
    ]
    assert len(launches.started) == 2


def test_a_run_that_cannot_be_launched_marks_its_due_time_failed(tmp_path: Path) -> None:
    made = linear("broken", tmp_path / "w")

    def refuse(schedule: Schedule, claim: ScheduledRun) -> None:
        raise OSError("no more processes")

    acted = Scheduler(launcher=refuse).tick(made.next_due_at)
    assert [(c.status, c.error) for c in acted] == [
        ("failed", "could not start the run: OSError: no more processes")
    ]
    last = kiln.flows.get_schedule("broken").last
    assert last is not None and last.status == "failed" and "no more processes" in str(last.error)


def _clear_of_a_minute_turn() -> None:
    """Wait out the last 10 s of a minute, so that schedules made next, each due at the
    next whole minute, are all due at the same one."""
    into = now_millis() % MINUTE
    if into > MINUTE - 10_000:
        time.sleep((MINUTE - into) / 1000 + 0.1)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_many_schedulers_racing_for_the_same_due_times_start_each_once(
    db_url: str, tmp_path: Path
) -> None:
    """Eight replicas (threads, each its own scheduler) tick at the same instant, three
    rounds over three schedules: every due time is claimed and started exactly once."""
    kiln.configure(db_url=db_url, artifact_uri=str(tmp_path / "artifacts"))
    names = [f"race-{i}" for i in range(3)]
    _clear_of_a_minute_turn()  # the three must share their first due minute
    for name in names:
        linear(name, tmp_path / name, cron="* * * * *")
    launches = Launches()
    replicas = [Scheduler(launcher=launches) for _ in range(8)]
    base = kiln.flows.get_schedule(names[0]).next_due_at
    acted: list[ScheduledRun] = []
    lock = threading.Lock()
    for round_ in range(3):
        now = base + round_ * MINUTE + 500
        gate = threading.Barrier(len(replicas))

        def tick(replica: Scheduler, now: int = now, gate: threading.Barrier = gate) -> None:
            gate.wait()
            done = replica.tick(now)
            with lock:
                acted.extend(done)

        threads = [threading.Thread(target=tick, args=(r,)) for r in replicas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    expected = sorted((n, base + r * MINUTE) for n in names for r in range(3))
    assert sorted(launches.started) == expected
    assert sorted((c.schedule, c.due_at) for c in acted) == expected
    assert claims() == [(n, due, "starting") for n, due in expected]


# -- real processes ---------------------------------------------------------------------------


def test_a_due_run_is_its_own_process_tagged_with_its_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(HERE)  # where the target imports from, as a user would schedule it
    work = tmp_path / "w"
    made = linear("nightly", work, cron="0 3 * * *")
    scheduler = Scheduler()
    [claim] = scheduler.tick(made.next_due_at + 1_000)
    assert claim.status == "starting" and claim.run_id is None

    def linked() -> Any:
        last = kiln.flows.get_schedule("nightly").last
        return last if last is not None and last.run_status == "finished" else None

    last = wait_for(linked, what="the scheduled run to finish")
    assert (last.status, last.due_at) == ("started", made.next_due_at)
    record = kiln.flows.get_run(str(last.run_id))
    assert (record.schedule, record.flow, record.executor) == ("nightly", "linear", "inline")
    assert record.params["n"] == 3  # converted by the flow's type hints, as on the CLI
    assert ran(work) == ["load", "features", "summarize", "report"]
    log = (scheduler.log_dir / "nightly.log").read_text()
    assert f"flow run {last.run_id} (linear) started" in log and "--schedule-id" in log
    wait_for(lambda: scheduler.reap() == 0, what="the run's process to be reaped")

    listed = subprocess.run(
        [sys.executable, "-m", "kiln", "flows", "list", "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert [(r["id"], r["schedule"]) for r in json.loads(listed.stdout)] == [
        (last.run_id, "nightly")
    ]


def test_a_run_whose_process_dies_before_starting_marks_its_due_time_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kiln scheduler --once` waits for the run it launched to start or fail, so a run
    that cannot start is recorded failed, naming its log."""
    monkeypatch.chdir(tmp_path)
    module = tmp_path / "nightly_jobs.py"
    module.write_text(
        "import kiln\n\n@kiln.flow\ndef job(days: int = 1) -> None:\n    return None\n"
    )
    kiln.flows.schedule("nightly_jobs.py:job", "0 3 * * *", {"days": "2"}, name="jobs")
    module.unlink()  # the code moved away since it was scheduled
    set_next_due(now_millis() - 1_000)
    done = subprocess.run(
        [sys.executable, "-m", "kiln", "scheduler", "--once", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["event"], e.get("schedule")) for e in events] == [
        ("ready", None),
        ("starting", "jobs"),
    ]
    last = kiln.flows.get_schedule("jobs").last
    log = Path(kiln.get_settings().home) / "scheduler" / "jobs.log"
    assert last is not None and last.status == "failed" and last.run_id is None
    assert f"exited with status 2 before the run started; see {log}" in str(last.error)
    assert "cannot import 'nightly_jobs.py'" in log.read_text()


def test_two_scheduler_processes_racing_start_each_due_run_once(tmp_path: Path) -> None:
    """Two `kiln scheduler` processes on one SQLite store, both watching when four
    schedules fall due at once: four runs, each started by one of them."""
    names = [f"job-{i}" for i in range(4)]
    for name in names:
        linear(name, tmp_path / name, cron="0 3 * * *")
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    command = [sys.executable, "-m", "kiln", "scheduler", "--interval", "0.05", "--json"]
    replicas = [
        subprocess.Popen(command, cwd=HERE, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for replica in replicas:  # both watch before anything is due
            assert replica.stdout is not None
            assert json.loads(replica.stdout.readline())["event"] == "ready"
        due = now_millis() + 300
        set_next_due(due)

        def all_finished() -> bool:
            found = kiln.flows.schedules()
            return all(s.last is not None and s.last.run_status == "finished" for s in found)

        wait_for(all_finished, what="four scheduled runs to finish")
    finally:
        for replica in replicas:
            replica.send_signal(signal.SIGTERM)
        outputs = [replica.communicate(timeout=60)[0] for replica in replicas]
    assert [replica.returncode for replica in replicas] == [0, 0]
    events = [json.loads(line) for out in outputs for line in out.splitlines()]
    started = sorted((e["schedule"], e["due_at"]) for e in events if e["event"] == "starting")
    assert started == [(name, due) for name in names]
    assert [e["event"] for e in events].count("stopped") == 2
    assert claims() == [(name, due, "started") for name in names]
    runs = kiln.flows.list_runs()
    assert sorted(r.schedule or "" for r in runs) == names
    for name in names:
        assert ran(tmp_path / name).count("load") == 1


# -- the command line -------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_schedule_schedules_and_unschedule_from_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 160)  # a table row on one line
    work = f"work={tmp_path}"
    code, out, err = run_cli(
        capsys, "flows", "schedule", "_pipelines:linear", "--cron", "0 3 * * *",
        "--param", work, "--param", "n=30", "--missed", "run-once", "--json",
    )  # fmt: skip
    assert code == 0, err
    made = json.loads(out)
    assert made["action"] == "scheduled"
    assert (made["schedule"]["name"], made["schedule"]["params"]["n"]) == ("linear", "30")
    assert made["schedule"]["next_run"].endswith("03:00:00")

    code, out, err = run_cli(capsys, "flows", "schedules")
    assert code == 0, err
    row = next(line for line in out.splitlines() if made["schedule"]["id"] in line)
    assert "linear" in row and "0 3 * * *" in row and "run-once" in row and " 03:00 " in row
    assert "n=30" in out  # the parameters, wrapped in their column

    for argv, message in [
        (("--cron", "0 3 * *", "--param", work), "cron '0 3 * *' has 4 fields"),
        (("--cron", "@daily", "--param", "n=x", "--param", work), "--param n=x: int expected"),
        (("--cron", "@daily", "--param", work, "--missed", "never"), "unknown policy 'never'"),
        (("--cron", "@daily", "--param", work), "a schedule named 'linear' exists"),
    ]:
        code, out, err = run_cli(capsys, "flows", "schedule", "_pipelines:linear", *argv)
        assert (code, out) == (2, "")
        assert err.startswith("kiln: error: ") and err.count("\n") == 1 and message in err, err

    code, out, err = run_cli(capsys, "flows", "unschedule", "linear", "--json")
    assert code == 0, err
    assert json.loads(out)["action"] == "unscheduled"
    code, out, err = run_cli(capsys, "flows", "unschedule", "linear")
    assert (code, err) == (2, "kiln: error: no schedule 'linear'; known schedules: none yet\n")
    code, out, err = run_cli(capsys, "flows", "schedules", "--json")
    assert (code, json.loads(out)) == (0, [])


def test_a_due_time_whose_scheduler_died_before_starting_its_run_is_started_once(
    tmp_path: Path,
) -> None:
    made = linear("orphan", tmp_path / "w")
    first = made.next_due_at
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a scheduler process of this machine that no longer runs
    dead = Scheduler(interval_s=10, launcher=lambda schedule, claim: None)
    dead.identity = f"{dead.identity.rpartition(':')[0]}:{gone.pid}"
    assert [c.status for c in dead.tick(first + 1_000)] == ["starting"]  # claimed, never run

    alive = Scheduler(interval_s=10, launcher=Launches())
    alive.identity = f"{alive.identity.rpartition(':')[0]}:{os.getppid()}"  # still running
    with default_client().meta.write() as conn:  # the same claim, by a live scheduler
        conn.execute(sa.update(flow_schedule_runs).values(claimed_by=alive.identity))
    assert Scheduler(interval_s=10, launcher=Launches()).tick(first + 2 * MINUTE) == []
    with default_client().meta.write() as conn:
        conn.execute(sa.update(flow_schedule_runs).values(claimed_by=dead.identity))

    launches = [Launches(), Launches()]
    replicas = [Scheduler(interval_s=10, launcher=launch) for launch in launches]
    for i, replica in enumerate(replicas):
        replica.identity += f"-{i}"
    acted = [c for replica in replicas for c in replica.tick(first + 2 * MINUTE)]
    assert [(c.due_at, c.claimed_by) for c in acted] == [(first, replicas[0].identity)]
    assert launches[0].started == [("orphan", first)] and launches[1].started == []
    assert [r.tick(first + 3 * MINUTE) for r in replicas] == [[], []]  # never twice
