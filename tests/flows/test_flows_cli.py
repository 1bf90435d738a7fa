"""``kiln flows`` as a user runs it, and an orchestrator killed with SIGKILL then resumed."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from _pipelines import ran

import kiln

HERE = Path(__file__).parent


def kiln_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiln", *args],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )


def test_run_show_list_logs_and_mistakes_from_the_command_line(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = kiln_cli(
        "flows", "run", "_pipelines:linear", "--param", f"work={work}", "--param", "n=4",
        "--executor", "inline",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = re.search(r"flow run (\w+) \(linear\) started", done.stdout).group(1)  # type: ignore[union-attr]
    assert done.stdout.splitlines()[0].startswith(f"flow run {run_id}")  # the id comes first
    assert "finished: 4 tasks, 0 from the cache" in done.stdout

    shown = kiln_cli("flows", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert '"status": "finished"' in shown.stdout and '"task": "summarize"' in shown.stdout
    listed = kiln_cli("flows", "list")
    assert run_id in listed.stdout and "linear" in listed.stdout
    logs = kiln_cli("flows", "logs", run_id, "load")
    assert "loading 4 rows" in logs.stdout

    bad = kiln_cli("flows", "run", "_pipelines:linear", "--param", "n=four", "--param", "work=x")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "kiln: error: --param n=four: int expected, got 'four'"
    unknown = kiln_cli("flows", "run", "_pipelines:nothing_here")
    assert unknown.returncode == 2 and "is nothing, not a @kiln.flow" in unknown.stderr
    missing = kiln_cli("flows", "show", "nope")
    assert missing.returncode == 2 and "no flow run 'nope'" in missing.stderr

    (work / "fail-features").touch()
    failed = kiln_cli(
        "flows", "run", "_pipelines:linear", "--param", f"work={work}", "--param", "n=5",
        "--executor", "inline",
    )  # fmt: skip
    assert failed.returncode == 1
    assert "features failed on purpose" in failed.stderr and "kiln flows resume" in failed.stderr
    failed_id = re.search(r"flow run (\w+) \(linear\) started", failed.stdout).group(1)  # type: ignore[union-attr]
    (work / "fail-features").unlink()
    resumed = kiln_cli("flows", "resume", failed_id, "--executor", "inline")
    assert resumed.returncode == 0, resumed.stderr
    assert kiln.flows.get_run(failed_id).status == "finished"


def test_an_orchestrator_killed_at_random_points_resumes_to_the_same_result(
    tmp_path: Path,
) -> None:
    """SIGKILL of the process running the flow, three times at random moments: each run
    resumes to the uninterrupted result, and no task recorded as finished runs again."""
    rng = random.Random(5)
    for attempt in range(3):
        work = tmp_path / f"work-{attempt}"
        work.mkdir()
        params = ["--param", f"work={work}", "--param", "steps=8", "--param", "seconds=0.15"]
        params += ["--max-parallel", "1"]
        params = ["--param", f"work={work}", "--param", "steps=8", "--param", "seconds=0.15"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "kiln", "flows", "run", "_pipelines:chain", *params],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(HERE)},
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        run_id = re.search(r"flow run (\w+)", first).group(1)  # type: ignore[union-attr]
        target = rng.randint(1, 6)
        deadline = time.monotonic() + 60
        while len(ran(work)) < target and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)  # reaps it and closes its pipes
        finished = {t.task for t in kiln.flows.tasks(run_id) if t.status == "finished"}
        assert kiln.flows.get_run(run_id).status == "running"  # nobody could record its end

        resumed = kiln_cli("flows", "resume", run_id, "--executor", "inline")
        assert resumed.returncode == 0, resumed.stderr
        tasks = kiln.flows.tasks(run_id)
        assert {t.status for t in tasks} == {"finished"} and len(tasks) == 8
        last = next(t for t in tasks if t.task == "slow_step-8")
        assert last.output is not None and last.output.inline == 8
        marks = ran(work)
        for task in finished:  # "slow_step-3" computed slow-3 once, before the kill
            number = 1 if task == "slow_step" else int(task.rpartition("-")[2])
            assert marks.count(f"slow-{number}") == 1, (task, marks)


def test_cancel_from_the_command_line_answers_for_a_run_that_is_not_running(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = kiln_cli(
        "flows", "run", "_pipelines:linear", "--param", f"work={work}", "--executor", "inline",
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = re.search(r"flow run (\w+)", done.stderr).group(1)  # type: ignore[union-attr]
    cancelled = kiln_cli("flows", "cancel", run_id)
    assert cancelled.returncode == 0
    assert f"flow run {run_id} is finished; nothing to cancel" in cancelled.stdout
    unknown = kiln_cli("flows", "cancel", "nope")
    assert unknown.returncode == 2 and "no flow run 'nope'" in unknown.stderr
