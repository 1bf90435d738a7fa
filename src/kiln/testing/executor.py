"""Conformance suite for :class:`kiln.flows.Executor`: what every executor must do.

The same flows must pass, unchanged, on every executor that runs tasks out of the flow's
process (local processes, Ray, a third party's): typed outputs of every kind travel
between tasks, a fan-out runs in parallel and fans in lazily, a failure is recorded with
its traceback and a resume reuses what finished, a task whose worker dies is one failed
attempt and is retried, and a task past its timeout is killed.

Fixture the suite needs:

- ``make_executor``: a callable ``(max_parallel: int) -> Executor`` giving a fresh
  executor of the kind under test (the flow closes it when the run ends).

The steps live in this module, so every worker imports them by name.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kiln
from kiln.flows import Executor, FlowFailed

__all__ = [
    "test_a_failure_is_recorded_and_a_resume_reuses_what_finished",
    "test_a_fan_out_runs_in_parallel_and_fans_in",
    "test_a_step_past_its_timeout_is_killed",
    "test_a_worker_that_dies_is_a_failed_attempt_and_is_retried",
    "test_cancelling_a_run_stops_its_running_task",
    "test_outputs_of_every_kind_travel_between_tasks",
]

MakeExecutor = Callable[[int], Executor]


def _mark(work: str, what: str) -> None:
    with open(Path(work) / "ran.txt", "a") as out:
        out.write(f"{what}\n")


def _ran(work: str) -> list[str]:
    path = Path(work) / "ran.txt"
    return path.read_text().split() if path.exists() else []


@dataclass
class Stats:
    total: float
    rows: int


@kiln.step
def make_frame(work: str, n: int) -> pd.DataFrame:
    _mark(work, "make_frame")
    print(f"made {n} rows")
    return pd.DataFrame({"x": np.arange(n, dtype=float), "k": np.arange(n) % 4})


@kiln.step(resources={"cpus": 1})
def to_array(work: str, df: pd.DataFrame) -> np.ndarray:
    _mark(work, "to_array")
    if (Path(work) / "fail").exists():
        raise RuntimeError("to_array fails on purpose")
    doubled: np.ndarray = df["x"].to_numpy() * 2
    return doubled


@kiln.step
def stats(work: str, values: np.ndarray) -> Stats:
    _mark(work, "stats")
    return Stats(total=float(values.sum()), rows=len(values))


@kiln.step
def describe(work: str, total: float, rows: int) -> dict[str, float]:
    _mark(work, "describe")
    return {"mean": total / rows, "rows": rows}


@kiln.flow
def kinds(work: str, n: int = 8) -> dict[str, float]:
    frame = make_frame(work, n)
    summary = stats(work, to_array(work, frame))
    described: dict[str, float] = describe(work, summary.total, summary.rows)
    return described


@kiln.step
def nap(seconds: float, x: int) -> tuple[int, float, float]:
    started = time.time()
    time.sleep(seconds)
    return x * x, started, time.time()


@kiln.step
def gather(parts: list[tuple[int, float, float]]) -> list[tuple[int, float, float]]:
    return [tuple(part) for part in parts]  # type: ignore[misc]


@kiln.flow
def fan_out(seconds: float = 0.5, n: int = 4) -> list[tuple[int, float, float]]:
    gathered: list[tuple[int, float, float]] = gather(nap.map(seconds=seconds, x=list(range(n))))
    return gathered


@kiln.step(retries=1, retry_delay=0.01)
def dies_once(work: str) -> int:
    """The first attempt kills its own worker, as an out-of-memory kill would."""
    marker = Path(work) / "died"
    if not marker.exists():
        marker.write_text("1")
        os.kill(os.getpid(), signal.SIGKILL)
    return 7


@kiln.flow
def dying(work: str) -> int:
    return dies_once(work)


@kiln.step(timeout=1)
def sleeps(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@kiln.flow
def too_slow(seconds: float = 30.0) -> float:
    return sleeps(seconds)


@kiln.step
def waits(work: str, seconds: float) -> float:
    _mark(work, "waits")
    time.sleep(seconds)
    _mark(work, "waited")
    return seconds


@kiln.flow
def waiting(work: str, seconds: float = 30.0) -> float:
    return waits(work, seconds)


def _work(tmp_path: Path) -> str:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return str(work)


def test_outputs_of_every_kind_travel_between_tasks(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    work = _work(tmp_path)
    run = kinds.run(work=work, n=8, executor=make_executor(2))
    assert run.result == {"mean": 7.0, "rows": 8}
    tasks = {t.task: t for t in run.tasks()}
    assert [tasks[name].status for name in ("make_frame", "to_array", "stats", "describe")] == [
        "finished"
    ] * 4
    assert sorted(_ran(work)) == ["describe", "make_frame", "stats", "to_array"]
    (log,) = kiln.flows.task_logs(run.id, "make_frame")
    assert "made 8 rows" in log.stdout


def test_a_fan_out_runs_in_parallel_and_fans_in(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    run = fan_out.run(seconds=0.5, n=4, executor=make_executor(2), max_parallel=2)
    parts = run.result
    assert [p[0] for p in parts] == [0, 1, 4, 9]
    spans = [(p[1], p[2]) for p in parts]
    overlapping = any(
        a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1 :]
    )
    assert overlapping, f"no two items ran at the same time: {spans}"


def test_a_failure_is_recorded_and_a_resume_reuses_what_finished(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    work = _work(tmp_path)
    (Path(work) / "fail").write_text("1")
    with pytest.raises(FlowFailed) as failed:
        kinds.run(work=work, executor=make_executor(2), cache=False)
    task = {t.task: t for t in kiln.flows.tasks(failed.value.run_id)}["to_array"]
    assert task.status == "failed"
    assert "to_array fails on purpose" in (task.history[-1]["traceback"] or "")
    (Path(work) / "fail").unlink()
    resumed = kinds.resume(failed.value.run_id, executor=make_executor(2), cache=False)
    assert resumed.result == {"mean": 7.0, "rows": 8}
    assert _ran(work).count("make_frame") == 1  # finished before the failure: reused


def test_a_worker_that_dies_is_a_failed_attempt_and_is_retried(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    work = _work(tmp_path)
    run = dying.run(work=work, executor=make_executor(1))
    assert run.result == 7
    history = {t.task: t for t in run.tasks()}["dies_once"].history
    assert [h["status"] for h in history] == ["failed", "finished"]
    assert "died" in history[0]["error"]


def test_cancelling_a_run_stops_its_running_task(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    import threading

    work = _work(tmp_path)
    started: list[str] = []
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            waiting.run(work=work, seconds=30.0, executor=make_executor(1), on_start=started.append)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    began = time.monotonic()
    thread.start()
    while "waits" not in _ran(work) and time.monotonic() - began < 60:
        time.sleep(0.05)
    kiln.flows.request_cancel(started[0])
    thread.join(30)
    assert outcome and isinstance(outcome[0], FlowFailed) and outcome[0].status == "cancelled"
    assert time.monotonic() - began < 30  # the task was stopped, not waited for
    (task,) = kiln.flows.tasks(started[0])
    assert task.status == "cancelled" and "waited" not in _ran(work)


def test_a_step_past_its_timeout_is_killed(make_executor: MakeExecutor) -> None:
    started = time.monotonic()
    with pytest.raises(FlowFailed, match="timed out after 1 s"):
        too_slow.run(seconds=30.0, executor=make_executor(1))
    assert time.monotonic() - started < 20
