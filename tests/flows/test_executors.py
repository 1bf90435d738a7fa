"""The executor conformance suite on local processes and on a local Ray instance."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from _pipelines import ran
from test_flows_cli import kiln_cli

import kiln
from kiln.flows import Executor, ProcessExecutor, RayExecutor
from kiln.testing.executor import *  # noqa: F403


@pytest.fixture(params=["processes", "ray"])
def make_executor(request: pytest.FixtureRequest) -> Callable[[int], Executor]:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
        return lambda max_parallel: RayExecutor(max_parallel=max_parallel)
    return ProcessExecutor


def test_the_command_line_runs_a_flow_on_ray(tmp_path: Path) -> None:
    """``--executor ray`` joins the local Ray instance, or starts one for the run."""
    work = tmp_path / "work"
    work.mkdir()
    done = kiln_cli(
        "flows", "run", "_pipelines:fan", "--param", f"work={work}", "--param", "n=4",
        "--executor", "ray", "--max-parallel", "2", timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "finished: 5 tasks, 0 from the cache" in done.stdout
    assert sorted(ran(work)) == ["square-0", "square-1", "square-2", "square-3", "total"]
    run_id = done.stdout.split()[2]
    assert kiln.flows.get_run(run_id).executor == "ray"


def test_an_unreachable_ray_cluster_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S", "1")
    monkeypatch.setenv("RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S", "1")
    done = kiln_cli("flows", "run", "_pipelines:fan", "--param", "work=.",
                    "--executor", "ray://127.0.0.1:1")  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(
        "kiln: error: cannot reach the Ray cluster at 'ray://127.0.0.1:1'"
    )
    assert len(done.stderr.strip().splitlines()) == 1
