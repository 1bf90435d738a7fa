"""Preemption: SIGTERM becomes a checkpoint and a clean exit with the run marked
preempted, and the same command started again finishes the run with the weights an
uninterrupted run would have."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import pytest
import torch
from _preemptible_job import EPOCHS, build

import kiln
from kiln.core import KilnWarning
from kiln.tracking import RunStatus
from kiln.training import Checkpointer, Preempted, resume_or_start, train_loop

JOB = Path(__file__).with_name("_preemptible_job.py")


def start_job(tmp_path: Path, seconds_per_step: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(JOB),
            str(tmp_path / "weights.pt"),
            str(tmp_path / "marker"),
            str(seconds_per_step),
        ],
        stderr=subprocess.PIPE,
    )


def test_a_job_stopped_by_sigterm_resumes_and_ends_as_if_never_stopped(tmp_path: Path) -> None:
    job = start_job(tmp_path, 0.05)
    deadline = time.monotonic() + 60
    while not (tmp_path / "marker").exists():
        assert job.poll() is None, job.stderr.read().decode() if job.stderr else ""
        assert time.monotonic() < deadline, "the job did not start training"
        time.sleep(0.02)
    os.kill(job.pid, signal.SIGTERM)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 128 + signal.SIGTERM, stderr.decode()
    assert not (tmp_path / "weights.pt").exists()
    (stopped,) = kiln.runs.search("preemption")
    assert stopped.status == RunStatus.KILLED and stopped.error == "preempted: SIGTERM"
    assert stopped.tags["kiln.preempted"] == "true"
    saved = Checkpointer(stopped.id).checkpoints()[-1].step
    assert 6 <= saved < EPOCHS * 12  # saved where the signal found it, not at the end

    again = start_job(tmp_path, 0.0)
    _, stderr = again.communicate(timeout=60)
    assert again.returncode == 0, stderr.decode()
    (finished,) = kiln.runs.search("preemption")
    assert finished.id == stopped.id and finished.status == RunStatus.FINISHED
    assert finished.tags["kiln.resumes"] == "1"

    model, optimizer, scheduler, loader = build()
    with kiln.start_run("reference", "whole") as run, Checkpointer(run, every=4) as ckpt:
        train_loop(
            model,
            optimizer,
            loader,
            torch.nn.functional.mse_loss,
            epochs=EPOCHS,
            ckpt=ckpt,
            scheduler=scheduler,
        )
    resumed = torch.load(tmp_path / "weights.pt")
    for name, value in model.state_dict().items():
        assert torch.equal(value, resumed[name]), name


def test_sigterm_is_acted_on_at_the_next_save_and_the_handler_is_put_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with kiln.start_run("preempt", "in-process") as run:
        with (
            pytest.raises(Preempted) as stopped,
            Checkpointer(run, every=100, on_sigterm=True) as ckpt,
        ):
            assert signal.getsignal(signal.SIGTERM) is not before
            assert ckpt.save({"step": 1}, 1) is None
            signal.raise_signal(signal.SIGTERM)
            assert ckpt.preempted and ckpt.due(2)
            ckpt.save({"step": 2}, 2)  # not a multiple of 100: saved all the same
        assert signal.getsignal(signal.SIGTERM) is before
        assert stopped.value.code == 128 + signal.SIGTERM and stopped.value.step == 2
        assert "preempted by SIGTERM; stopped after saving step 2" in str(stopped.value)
        assert run.status == RunStatus.KILLED
    record = kiln.runs.get(run.id)
    assert record.error == "preempted: SIGTERM" and record.tags["kiln.preempted"] == "true"
    restored = Checkpointer(run.id).restore()
    assert restored is not None and restored.state == {"step": 2}


def test_a_signal_after_the_last_save_ends_the_run_preempted_at_close() -> None:
    with kiln.start_run("preempt", "late") as run:
        ckpt = Checkpointer(run, on_sigterm=True)
        ckpt.save({"v": 1}, 1)
        signal.raise_signal(signal.SIGTERM)
        with pytest.raises(Preempted, match="stopped after saving step 1"):
            ckpt.close()
        assert run.status == RunStatus.KILLED


def test_a_second_signal_before_the_save_goes_to_the_previous_handler() -> None:
    received: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    original = signal.signal(signal.SIGTERM, previous)
    try:
        with kiln.start_run("preempt", "twice") as run:
            ckpt = Checkpointer(run, on_sigterm=True)
            signal.raise_signal(signal.SIGTERM)
            assert received == [] and ckpt.preempted
            signal.raise_signal(signal.SIGTERM)
            assert received == [signal.SIGTERM]
            assert signal.getsignal(signal.SIGTERM) is previous
            with pytest.raises(Preempted):
                ckpt.close()
    finally:
        signal.signal(signal.SIGTERM, original)


def test_outside_the_main_thread_the_handler_is_not_installed_and_that_is_said() -> None:
    caught: list[BaseException] = []
    before = signal.getsignal(signal.SIGTERM)

    def make() -> None:
        try:
            with (
                pytest.warns(KilnWarning, match="needs the main thread"),
                kiln.start_run("preempt", "thread") as run,
            ):
                Checkpointer(run, on_sigterm=True).close()
        except BaseException as exc:  # reported to the main thread below
            caught.append(exc)

    worker = threading.Thread(target=make)
    worker.start()
    worker.join()
    assert caught == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_resume_or_start_reopens_only_a_stopped_run_of_that_name_with_checkpoints() -> None:
    fresh = resume_or_start("jobs", "train")  # no experiment yet
    fresh.end(RunStatus.FAILED, error="crashed before any checkpoint")
    second = resume_or_start("jobs", "train")
    assert second.id != fresh.id
    with Checkpointer(second) as ckpt:
        ckpt.save({"v": 1}, 1)
    second.end(RunStatus.KILLED, error="preempted: SIGTERM")
    third = resume_or_start("jobs", "train", tags={"attempt": "3"})
    assert third.id == second.id and third.status == RunStatus.RUNNING
    assert kiln.runs.get(third.id).tags == {"kiln.resumes": "1", "attempt": "3"}
    third.end(RunStatus.FINISHED)
    other = resume_or_start("jobs", "train")  # a finished run is not resumed
    assert other.id not in (fresh.id, second.id)
    other.end()
    assert resume_or_start("jobs", "it's").name == "it's"
