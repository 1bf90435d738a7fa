"""Distributed data-parallel training on two workers over gloo: on local processes
(torch's elastic launcher) and on a local Ray instance (Ray Train), a worker killed with
SIGKILL mid-training, the group restarted from the latest checkpoint, and the final
weights equal to an uninterrupted run's."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import _ddp_jobs as jobs
import pytest
import torch

import kiln
from kiln.errors import InvalidInput
from kiln.training import FitFailed

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawned workers and Ray workers import the training functions from here."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("PYTHONPATH", str(HERE))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    home = tmp_path_factory.mktemp("ddp-reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KILN_HOME", str(home))
        mp.syspath_prepend(str(HERE))
        mp.setenv("PYTHONPATH", str(HERE))
        kiln.core.reset_settings()
        try:
            result = kiln.training.fit(jobs.mlp, num_workers=2, config={"steps": 12})
        finally:
            kiln.core.reset_settings()
    assert result.restarts == 0
    return dict(result.value.state_dict())


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_killed_worker_restarts_the_group_from_the_latest_checkpoint_on_processes(
    tmp_path: Path, uninterrupted: dict[str, torch.Tensor]
) -> None:
    config = {
        "steps": 12,
        "kill_at": 5,
        "term_at": 8,
        "marker": str(tmp_path / "killed"),
        "starts": str(tmp_path / "starts"),
    }
    result = kiln.training.fit(
        jobs.mlp,
        num_workers=2,
        config=config,
        experiment="ddp",
        dataset="synthetic-256x8",
        register="mlp",
        input_example=torch.zeros(2, 8).numpy(),
    )
    # SIGKILL of rank 1 at step 5, then SIGTERM of rank 0 at step 8 (it saved step 8
    # before it stopped): two restarts, the same weights as a group never stopped
    assert (tmp_path / "killed").exists() and result.restarts == 2
    assert _equal(result.value.state_dict(), uninterrupted)
    run = kiln.runs.get(result.run_id)
    assert run.status == "FINISHED" and run.params["num_workers"] == 2
    assert run.tags["kiln.fit.restarts"] == "2"
    # where each start resumed: step 8 was saved on the signal, so nothing was replayed
    assert (tmp_path / "starts").read_text().split() == ["0", "5", "9"]
    losses = kiln.runs.metric_history(result.run_id, "loss")
    assert [p.step for p in losses][-1] == 11  # rank 0 logged, steps replayed after the kill
    assert result.checkpoint is not None and result.checkpoint.step == 11
    # the registered model's lineage: the run, the data set and the checkpoints kept
    version = result.model_version
    assert version.run_id == result.run_id
    graph = kiln.models.lineage(version.ref)
    kinds = {(n.kind, n.id) for n in graph.inputs}
    assert ("dataset", "synthetic-256x8") in kinds
    assert ("checkpoint", result.checkpoint.digest) in kinds


def test_a_killed_worker_restarts_the_group_on_ray(
    ray_cluster: Any, tmp_path: Path, uninterrupted: dict[str, torch.Tensor]
) -> None:
    import cloudpickle

    config = {
        "steps": 12,
        "kill_at": 5,
        "marker": str(tmp_path / "killed"),
        "starts": str(tmp_path / "starts"),
    }
    # the session's Ray workers started without this directory on their path: the
    # function travels by value, as one defined in a notebook would
    cloudpickle.register_pickle_by_value(jobs)
    try:
        result = kiln.training.fit(jobs.mlp, num_workers=2, executor="ray", config=config)
    finally:
        cloudpickle.unregister_pickle_by_value(jobs)
    assert (tmp_path / "killed").exists() and result.restarts == 1
    assert (tmp_path / "starts").read_text().split() == ["0", "5"]
    assert _equal(result.value.state_dict(), uninterrupted)  # same group, same steps: same weights
    # a dead worker is looked for every 0.5 s (Ray Train's default, 2 s, is most of a
    # restart's wait), and the driver's environment is left as it was
    assert (tmp_path / "killed").read_text() == "0.5"
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" not in os.environ


def test_a_failing_function_fails_after_max_failures_with_its_error() -> None:
    with pytest.raises(FitFailed, match=r"restarted 1 time\(s\).*ValueError: bad batch on rank"):
        kiln.training.fit(jobs.fails, num_workers=2, max_failures=1, experiment="bad")
    (run,) = kiln.runs.search("bad")
    assert run.status == "FAILED" and "ValueError: bad batch on rank" in (run.error or "")


def test_mistakes_are_named_before_any_worker_starts() -> None:
    with pytest.raises(InvalidInput, match="num_workers must be an integer >= 1; got 0"):
        kiln.training.fit(jobs.mlp, num_workers=0)
    with pytest.raises(InvalidInput, match="unknown backend 'mpi'; known: gloo, nccl"):
        kiln.training.fit(jobs.mlp, backend="mpi")
    with pytest.raises(InvalidInput, match="not 'inline'"):
        kiln.training.fit(jobs.mlp, executor="inline")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInput, match="backend 'nccl' needs one GPU per worker"):
            kiln.training.fit(jobs.mlp, backend="nccl")
    with pytest.raises(InvalidInput, match="register= needs input_example="):
        kiln.training.fit(jobs.mlp, register="m")
    lock = threading.Lock()
    with pytest.raises(InvalidInput, match="train_fn cannot be sent to the workers"):
        kiln.training.fit(lambda ctx: lock)
    with pytest.raises(InvalidInput, match="train_fn takes one argument"):
        kiln.training.fit(lambda a, b: None)
    assert kiln.runs.search() == []  # nothing started
