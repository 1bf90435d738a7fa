"""Checkpointer: when it saves, what it keeps, what a checkpoint holds, how it is read back
(in this process and in others, after crashes and damage), and background saving."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _ckpt_helpers import blob_path, flip_a_byte, truncate

import kiln
from kiln.core import Conflict, IntegrityError, InvalidInput, KilnWarning, NotFound
from kiln.tracking import TrackingClient
from kiln.training import Checkpoint, Checkpointer


@pytest.fixture
def run() -> Iterator[kiln.tracking.Run]:
    with kiln.start_run("checkpoints", "train") as live:
        yield live


def steps(ckpt: Checkpointer) -> list[int]:
    return [info.step for info in ckpt.checkpoints()]


def python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- when it saves and what it keeps -------------------------------------------------------


def test_it_saves_every_nth_step_or_when_forced_and_skips_the_rest(run: kiln.tracking.Run) -> None:
    with Checkpointer(run, every=3, keep_last=None) as ckpt:
        saved = {s: ckpt.save({"s": s}, s) for s in range(8)}
        forced = ckpt.save({"s": 7}, 7, force=True)
        assert [s for s, c in saved.items() if c is not None] == [0, 3, 6]
        assert forced is not None and forced.step == 7
        assert steps(ckpt) == [0, 3, 6, 7]
        assert ckpt.due(9) and not ckpt.due(10)


def test_keep_last_keeps_the_newest_and_keep_best_also_the_best(run: kiln.tracking.Run) -> None:
    losses = {1: 0.9, 2: 0.2, 3: 0.5, 4: 0.4, 5: 0.6}
    with Checkpointer(run, keep_last=2, keep_best=("val_loss", "min")) as ckpt:
        for step, loss in losses.items():
            ckpt.save({"step": step}, step, {"val_loss": loss})
        assert steps(ckpt) == [2, 4, 5]
        assert ckpt.checkpoints()[0].metrics == {"val_loss": 0.2}
        best = ckpt.restore(best=True)
        assert best is not None and best.step == 2 and best.state == {"step": 2}
        ckpt.save({"step": 6}, 6, {"val_loss": 0.1})  # a new best: the old one goes
        assert steps(ckpt) == [5, 6]
    with (
        kiln.start_run("checkpoints", "max") as other,
        Checkpointer(other, keep_last=1, keep_best=("acc", "max")) as ckpt,
    ):
        for step, acc in {1: 0.5, 2: 0.9, 3: 0.7, 4: float("nan")}.items():
            ckpt.save({}, step, {"acc": acc})
        assert steps(ckpt) == [2, 4]


def test_saving_a_step_again_replaces_it_and_a_new_checkpointer_continues_the_list(
    run: kiln.tracking.Run,
) -> None:
    with Checkpointer(run, keep_last=2) as ckpt:
        ckpt.save({"v": "first"}, 1)
        ckpt.save({"v": "second"}, 2)
        ckpt.save({"v": "again"}, 1)
        assert steps(ckpt) == [2, 1]
        latest = ckpt.restore()
        assert latest is not None and latest.state == {"v": "again"}
    with Checkpointer(run.id, keep_last=2) as resumed:  # a restarted process
        resumed.save({"v": "third"}, 3)
        assert steps(resumed) == [1, 3]


def test_checkpoints_are_run_artifacts_and_latest_loads_with_torch(
    run: kiln.tracking.Run, tmp_path: Path
) -> None:
    with Checkpointer(run) as ckpt:
        ckpt.save({"weights": torch.arange(4.0)}, 10)
        saved = ckpt.save({"weights": torch.arange(5.0)}, 20)
    assert saved is not None
    listed = {a.path: a.digest for a in kiln.runs.list_artifacts(run.id, "checkpoints")}
    assert set(listed) == {"checkpoints/latest.ckpt", "checkpoints/manifest.json"}
    assert listed["checkpoints/latest.ckpt"] == saved.digest
    path = kiln.runs.download_artifacts(run.id, "checkpoints/latest.ckpt", tmp_path)
    payload = torch.load(path, weights_only=False)
    assert payload["step"] == 20 and torch.equal(payload["state"]["weights"], torch.arange(5.0))


# -- what a checkpoint holds ----------------------------------------------------------------


def test_modules_optimizers_and_schedulers_are_stored_as_state_dicts_and_load_back(
    run: kiln.tracking.Run,
) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    extra = {"positions": np.arange(5), "table": {"a": [1, 2]}, "t": torch.ones(2)}
    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "epoch": 3, **extra}
    with Checkpointer(run) as ckpt:
        ckpt.save(state, 1)
        back = ckpt.restore()
        assert back is not None and ckpt.checkpoints()[-1].format == "torch"
    assert back.state["epoch"] == 3 and back.state["table"] == {"a": [1, 2]}
    assert np.array_equal(back.state["positions"], np.arange(5))
    assert torch.equal(back.state["t"], torch.ones(2))

    model2 = torch.nn.Linear(3, 2)
    optimizer2 = torch.optim.Adam(model2.parameters(), lr=0.1)
    scheduler2 = torch.optim.lr_scheduler.StepLR(optimizer2, step_size=1, gamma=0.5)
    back.load_into(model=model2, optimizer=optimizer2, scheduler=scheduler2)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    moments = optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(optimizer2.state_dict()["state"][0]["exp_avg"], moments)
    assert scheduler2.get_last_lr() == scheduler.get_last_lr() == [0.05]

    with pytest.raises(NotFound, match="no state named 'critic'; it holds: epoch, model"):
        back.load_into(critic=model2)
    with pytest.raises(InvalidInput, match=r"load_into\(epoch=...\) needs an object"):
        back.load_into(epoch=5)


@pytest.mark.parametrize("async_save", [False, True])
def test_a_state_dict_saved_as_the_state_keeps_its_metadata(
    run: kiln.tracking.Run, async_save: bool
) -> None:
    model = torch.nn.BatchNorm1d(3)
    with Checkpointer(run, async_save=async_save) as ckpt:
        ckpt.save(model.state_dict(), 1)
        back = ckpt.restore()
    assert back is not None
    assert isinstance(back.state, OrderedDict)
    assert back.state._metadata == model.state_dict()._metadata  # type: ignore[attr-defined]
    torch.nn.BatchNorm1d(3).load_state_dict(back.state)


def test_random_generators_are_captured_and_put_back(run: kiln.tracking.Run) -> None:
    def draws() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    with Checkpointer(run) as ckpt:
        ckpt.save({"x": 1}, 5)
        expected = draws()
        ckpt.restore()
        assert draws() == expected
        ckpt.restore(rng=False)
        assert draws() != expected


def test_a_state_without_tensors_is_pickled_and_loads_where_torch_cannot_be_imported(
    run: kiln.tracking.Run,
) -> None:
    with Checkpointer(run) as ckpt:
        ckpt.save({"rounds": 7, "weights": np.linspace(0, 1, 11)}, 7)
        assert ckpt.checkpoints()[-1].format == "pickle"
    done = python(
        """
        import sys
        sys.modules["torch"] = None  # as if torch were not installed
        import numpy as np
        import kiln
        restored = kiln.training.Checkpointer(sys.argv[1]).restore()
        assert restored.state["rounds"] == 7
        assert np.array_equal(restored.state["weights"], np.linspace(0, 1, 11))
        print("ok")
        """,
        run.id,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# -- reading back after crashes and damage --------------------------------------------------


def test_another_process_restores_what_a_process_that_died_saved(run: kiln.tracking.Run) -> None:
    died = python(
        """
        import os, sys
        import kiln
        ckpt = kiln.training.Checkpointer(sys.argv[1], every=2)
        for step in range(1, 6):
            ckpt.save({"step": step, "data": list(range(step))}, step)
        os._exit(9)  # no close, no run end: the process just dies
        """,
        run.id,
    )
    assert died.returncode == 9, died.stderr
    restored = Checkpointer(run.id).restore()
    assert restored is not None and restored.step == 4
    assert restored.state == {"step": 4, "data": [0, 1, 2, 3]}


def test_a_process_killed_while_saving_leaves_the_latest_good_checkpoint(
    run: kiln.tracking.Run,
) -> None:
    saver = """
        import sys
        import numpy as np
        import kiln
        ckpt = kiln.training.Checkpointer(sys.argv[1], keep_last=2)
        step = 0
        while True:
            step += 1
            ckpt.save({"block": np.full(4_000_000, step, dtype=np.float32)}, step)
        """
    reader = Checkpointer(run.id)
    for delay in (0.0, 0.05):  # killed at two points of different saves
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(saver), run.id])
        try:
            deadline = time.monotonic() + 30
            start = reader.checkpoints()[-1].step if reader.checkpoints() else 0
            while not reader.checkpoints() or reader.checkpoints()[-1].step < start + 2:
                assert time.monotonic() < deadline, "the saver made no progress"
                time.sleep(0.01)
            time.sleep(delay)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        restored = reader.restore()
        assert restored is not None
        block = restored.state["block"]
        assert block.shape == (4_000_000,) and (block == restored.step).all()


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(
    run: kiln.tracking.Run,
) -> None:
    with Checkpointer(run, keep_last=3) as ckpt:
        for step in (1, 2, 3):
            ckpt.save({"step": step, "w": torch.full((100,), float(step))}, step)
        infos = {i.step: i.digest for i in ckpt.checkpoints()}
        flip_a_byte(infos[3])
        damaged = rf"step 3 \(sha256:{infos[3]}\).*falling back to step 2"
        with pytest.warns(KilnWarning, match=damaged):
            restored = ckpt.restore()
        assert restored is not None and restored.step == 2
        truncate(infos[2])
        blob_path(infos[1]).unlink()
        with pytest.warns(KilnWarning) as caught:
            assert ckpt.restore() is None
        messages = [str(w.message) for w in caught]
        assert any(f"step 2 (sha256:{infos[2]})" in m for m in messages)
        assert any(f"step 1 (sha256:{infos[1]})" in m and "no older" in m for m in messages)
        assert "no good checkpoint left (3 damaged)" in messages[-1]
        with pytest.raises(IntegrityError, match=infos[3]):
            ckpt.restore(step=3)


def test_a_synchronous_save_is_forced_to_disk_before_the_next_save_and_at_close(
    run: kiln.tracking.Run,
) -> None:
    """``save`` returns once the checkpoint is readable; the saver thread forces it to
    disk, and a later save (or close) waits for that, so at most the latest one is ever
    not on disk (a power cut can cost it, and restore then skips it by its hash)."""
    blobs = run.client.blobs
    synced: list[tuple[str, str]] = []
    real_sync = blobs.sync

    def sync(digest: str) -> None:
        time.sleep(0.2)  # a slow disk: save must not wait for it
        real_sync(digest)
        synced.append((digest, threading.current_thread().name))

    blobs.sync = sync  # type: ignore[method-assign]
    try:
        with Checkpointer(run) as ckpt:
            started = time.perf_counter()
            first = ckpt.save({"w": torch.ones(10)}, 1)
            assert first is not None and time.perf_counter() - started < 0.2
            assert ckpt.restore(rng=False) is not None  # readable at once
            second = ckpt.save({"w": torch.zeros(10)}, 2)
            assert second is not None
            assert [d for d, _ in synced][:1] == [first.digest]  # before the next listed
        assert [d for d, _ in synced] == [first.digest, second.digest]  # close waited
        assert {name for _, name in synced} == {"kiln-checkpoint_0"}
    finally:
        del blobs.sync


def test_a_damaged_checkpoint_list_falls_back_to_latest_ckpt(run: kiln.tracking.Run) -> None:
    with Checkpointer(run) as ckpt:
        ckpt.save({"v": 1}, 1)
        ckpt.save({"v": 2}, 2)
    manifest = {a.path: a.digest for a in kiln.runs.list_artifacts(run.id, "checkpoints")}
    flip_a_byte(manifest["checkpoints/manifest.json"] or "")
    reader = Checkpointer(run.id)
    with pytest.warns(KilnWarning, match="checkpoint list of run .* cannot be read"):
        restored = reader.restore()
    assert restored is not None and restored.step == 2 and restored.state == {"v": 2}
    with pytest.raises(IntegrityError, match="checkpoint list"):
        reader.checkpoints()


def test_restore_by_step_or_best_and_what_it_refuses(run: kiln.tracking.Run) -> None:
    with Checkpointer(run, keep_last=None) as ckpt:
        assert ckpt.restore() is None
        ckpt.save({"v": 1}, 1, {"loss": 1.0})
        ckpt.save({"v": 2}, 2, {"loss": 2.0})
        one = ckpt.restore(step=1)
        assert one is not None and one.state == {"v": 1} and one.metrics == {"loss": 1.0}
        with pytest.raises(NotFound, match="no checkpoint of step 5; it has: 1, 2"):
            ckpt.restore(step=5)
        with pytest.raises(InvalidInput, match="needs the Checkpointer's keep_best"):
            ckpt.restore(best=True)


# -- background saving ----------------------------------------------------------------------


def test_a_background_save_stores_the_state_as_it_was_when_save_returned(
    run: kiln.tracking.Run,
) -> None:
    weights = torch.zeros(1000)
    with Checkpointer(run, async_save=True) as ckpt:
        first = ckpt.save({"w": weights, "n": [1]}, 1)
        weights += 1  # training goes on while the bytes are written
        second = ckpt.save({"w": weights, "n": [2]}, 2)
        weights += 1
        ckpt.wait()
        assert first is not None and second is not None
        assert len(first.digest) == 64 and first.digest != second.digest
        restored = ckpt.restore(step=1)
        assert restored is not None and torch.equal(restored.state["w"], torch.zeros(1000))
        latest = ckpt.restore()
        assert latest is not None and latest.step == 2
        assert torch.equal(latest.state["w"], torch.ones(1000)) and latest.state["n"] == [2]


def test_a_background_failure_surfaces_at_the_next_save_wait_or_close(
    run: kiln.tracking.Run,
) -> None:
    ckpt = Checkpointer(run, async_save=True)
    ckpt.save({"fn": lambda x: x}, 1)  # copies fine, cannot be pickled
    with pytest.raises((pickle.PicklingError, AttributeError)) as failed:
        ckpt.save({"v": 2}, 2)
    assert "raised storing checkpoint step 1" in "".join(failed.value.__notes__)
    ckpt.save({"fn": lambda x: x}, 3)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        ckpt.close()
    with pytest.raises(Conflict, match="closed"):
        ckpt.save({"v": 4}, 4)
    assert steps(Checkpointer(run.id)) == []  # neither failed save was listed


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, "'every' parameter of Checkpointer must be a positive integer"),
        ({"every": True}, "'every' parameter"),
        ({"keep_last": 0}, "'keep_last' parameter of Checkpointer must be a positive integer"),
        ({"keep_best": ("val_loss", "up")}, r"'keep_best'.*\(metric, 'min' \| 'max'\)"),
        ({"keep_best": "val_loss"}, "'keep_best' parameter"),
        ({"async_save": "yes"}, "'async_save' parameter must be True or False"),
    ],
)
def test_bad_settings_are_refused_naming_the_parameter(
    run: kiln.tracking.Run, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        Checkpointer(run, **kwargs)  # type: ignore[arg-type]


def test_bad_runs_and_saves_are_refused(run: kiln.tracking.Run) -> None:
    with pytest.raises(NotFound, match="no run with id 'nope'"):
        Checkpointer("nope")
    with pytest.raises(InvalidInput, match="'run' parameter of Checkpointer"):
        Checkpointer(42)  # type: ignore[arg-type]
    with Checkpointer(run) as ckpt:
        with pytest.raises(InvalidInput, match="'state' parameter of save must be a mapping"):
            ckpt.save([1, 2], 1)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="'step' parameter of save"):
            ckpt.save({}, -1)
        with pytest.raises(InvalidInput, match="metric 'loss' must be a number"):
            ckpt.save({}, 1, {"loss": "low"})  # type: ignore[dict-item]


def test_a_keep_best_metric_missing_from_a_save_is_warned_about_once(
    run: kiln.tracking.Run,
) -> None:
    with Checkpointer(run, keep_best=("val_loss", "min")) as ckpt:
        with pytest.warns(KilnWarning, match="'val_loss' but the save of step 1 has no such"):
            ckpt.save({}, 1, {"loss": 1.0})
        ckpt.save({}, 2, {"loss": 1.0})  # said once is enough (warnings are errors here)


# -- both metadata backends -----------------------------------------------------------------


def test_checkpoints_on_both_metadata_backends(tracking_client: TrackingClient) -> None:
    with kiln.start_run("checkpoints", "pg", client=tracking_client) as live:
        with Checkpointer(live, keep_last=2, keep_best=("loss", "min")) as ckpt:
            for step, loss in ((1, 0.1), (2, 0.5), (3, 0.4), (4, 0.3)):
                ckpt.save({"w": torch.full((3,), float(step))}, step, {"loss": loss})
        reader = Checkpointer(live.id, client=tracking_client)
        assert steps(reader) == [1, 3, 4]
        latest = reader.restore()
        assert isinstance(latest, Checkpoint) and latest.step == 4
        assert torch.equal(latest.state["w"], torch.full((3,), 4.0))
