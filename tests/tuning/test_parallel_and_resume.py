"""The same study on local processes and on Ray; a dead worker; the study's own process
killed with SIGKILL at random moments and resumed from the command line."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _objectives as obj
import pytest

import kiln
from kiln.tuning import Float, Int

HERE = Path(__file__).parent
ENV = {"PYTHONPATH": str(HERE)}


def _parallel_study(executor: str, name: str) -> kiln.tuning.Study:
    space = {"lr": Float(1e-4, 1e-1, log=True), "leaves": Int(8, 64)}
    return kiln.tune(
        obj.from_params, space=space, n_trials=8, parallel=2, executor=executor, seed=0,
        name=name, resources={"cpus": 1},
    )  # fmt: skip


def _check(study: kiln.tuning.Study) -> None:
    trials = study.trials
    assert len(trials) == 8 and {t.state for t in trials} == {"COMPLETE"}
    for t in trials:
        run = kiln.runs.get(t.run_id)
        assert run.parent_id == study.run_id and set(run.params) == {"lr", "leaves"}
        expected = (t.params["lr"] - 0.01) ** 2 * 1e4 + t.params["leaves"] / 100
        assert run.metrics["value"] == pytest.approx(expected)
    assert study.best_value == min(t.value for t in trials)  # type: ignore[type-var]


def test_the_same_study_runs_on_local_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    _check(_parallel_study("processes", "on-processes"))
    # define-by-run in workers: sampled there, applied here
    study = kiln.tune(obj.quadratic, n_trials=6, parallel=2, executor="processes", seed=1)
    assert {t.state for t in study.trials} == {"COMPLETE"}
    assert all(set(t.params) == {"x", "y", "kind"} for t in study.trials)
    assert set(study.importances()) == {"x", "y", "kind"}


def test_the_same_study_runs_on_ray(ray_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    monkeypatch.syspath_prepend(str(HERE))
    _check(_parallel_study("ray", "on-ray"))


def test_a_dead_worker_fails_its_trial_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("KILN_TEST_MARKER", str(tmp_path / "died"))
    study = kiln.tune(obj.dies_once, n_trials=6, parallel=2, executor="processes", seed=0)
    failed = [t for t in study.trials if t.state == "FAIL"]
    assert len(failed) == 1 and len(study.trials) == 6
    assert failed[0].reason == "the worker process running it died (SIGKILL)"
    assert kiln.runs.get(failed[0].run_id).status == "FAILED"
    assert sum(t.state == "COMPLETE" for t in study.trials) == 5


_DRIVER = """
import os, signal, sys, threading, time
import kiln
import _objectives as obj
name, n, parallel, executor, kill_after, delay = sys.argv[1:7]
ended = 0
def count(study, trial):
    # SIGKILL of this process at a random moment once some trials ended
    global ended
    ended += 1
    if ended == int(kill_after):
        def kill():
            time.sleep(float(delay))
            os.kill(os.getpid(), signal.SIGKILL)
        threading.Thread(target=kill, daemon=True).start()
kiln.tune(obj.slow_quadratic, n_trials=int(n), name=name, seed=0, parallel=int(parallel),
          executor=executor, pruner=None, callbacks=[count])
"""


def _driver(name: str, n: int, parallel: int, executor: str, kill_after: int, delay: float) -> Any:
    return subprocess.Popen(
        [sys.executable, "-c", _DRIVER, name, str(n), str(parallel), executor,
         str(kill_after), str(delay)],
        cwd=HERE, env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _resume(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiln", "tune", "resume", name, *args],
        cwd=HERE, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def _kill_then_resume(
    name: str, n: int, parallel: int, executor: str, delay: float, *resume_args: str
) -> None:
    proc = _driver(name, n, parallel, executor, 2, delay)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    study = kiln.tuning.load_study(name)
    before = study.trials
    ended = [t for t in before if t.state != "RUNNING"]
    assert 2 <= len(ended) < n, [(t.number, t.state) for t in before]
    done = _resume(name, *resume_args)
    assert done.returncode == 0, done.stderr
    assert f"study {name}: " in done.stdout
    after = study.trials
    counted = [t for t in after if not t.interrupted]
    assert len(counted) == n
    assert all(t.state == "COMPLETE" for t in counted), [(t.state, t.reason) for t in counted]
    # every trial that had ended before the kill is kept as it was
    kept = {t.run_id: t for t in after}
    for t in ended:
        assert kept[t.run_id].state == t.state and kept[t.run_id].values == t.values
    # a trial that was running is marked failed, and its configuration was tried again
    interrupted = [t for t in after if t.interrupted]
    assert {t.run_id for t in interrupted} == {t.run_id for t in before if t.state == "RUNNING"}
    later = [dict(t.params) for t in counted]
    for t in interrupted:
        assert t.state == "FAIL" and t.reason is not None and "interrupted" in t.reason
        if t.params:
            assert dict(t.params) in later
    assert kiln.runs.get(study.run_id).status == "FINISHED"


def test_a_running_study_is_not_resumed_twice() -> None:
    proc = _driver("busy", 8, 1, "inline", 5, 0.0)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if any(t.state == "COMPLETE" for t in kiln.tuning.load_study("busy").trials):
                    break
            except kiln.errors.NotFound:
                pass
            time.sleep(0.05)
        busy = _resume("busy")
        assert busy.returncode == 2, busy.stdout
        assert "study 'busy' is running (process " in busy.stderr
    finally:
        proc.kill()
        proc.communicate(timeout=30)


@pytest.mark.parametrize("executor,parallel", [("inline", 1), ("processes", 2)])
def test_a_study_killed_at_a_random_moment_resumes_to_exactly_n_trials(
    executor: str, parallel: int
) -> None:
    delay = random.Random(11 if executor == "inline" else 12).uniform(0, 0.6)
    _kill_then_resume(f"killed-{executor}", 8, parallel, executor, delay)


def test_a_study_on_ray_killed_resumes_to_exactly_n_trials(ray_cluster: Any) -> None:
    """The killed study's process was a driver of the session's Ray instance: Ray stops
    its trials with it, and the resumed study runs on the same instance."""
    executor = f"ray:{ray_cluster.get_runtime_context().gcs_address}"
    delay = random.Random(13).uniform(0, 0.6)
    _kill_then_resume("killed-ray", 8, 2, executor, delay, "--executor", executor)
