"""Registration is atomic: a failure or a kill leaves no half-registered version behind."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import kiln
import kiln.registry.versions
from kiln.errors import NotFound

WORKER = Path(__file__).with_name("_register_worker.py")


def _model() -> tuple[LogisticRegression, pd.DataFrame]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(60, 2)), columns=["a", "b"])
    return LogisticRegression().fit(x, (x["a"] > 0).astype(int)), x


def test_a_failure_inside_the_transaction_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = _model()
    with kiln.start_run("atomic") as run:
        kiln.models.register("m", model, input_example=x[:2], run=run)

        def broken(*args: Any, **kwargs: Any) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(kiln.registry.versions, "record_artifacts", broken)
        with pytest.raises(OSError, match="disk full"):
            kiln.models.register("m", model, input_example=x[:2], run=run)
        with pytest.raises(OSError, match="disk full"):
            kiln.models.register("new-model", model, input_example=x[:2], run=run)
        monkeypatch.undo()

        assert [v.version for v in kiln.models.list_versions("m")] == [1]
        with pytest.raises(NotFound):
            kiln.models.get_model("new-model")
        out = kiln.lineage.edges("run", run.id, direction="out")
        assert len([e for e in out if e.relation == "produced"]) == 1
        # The counter was rolled back with the rest: the next version is 2, not 4.
        assert kiln.models.register("m", model, input_example=x[:2], run=run).version == 2


@pytest.mark.slow
def test_sigkill_during_registrations_leaves_every_version_whole(tmp_path: Path) -> None:
    """Kill a process that registers in a loop; every version it left must load."""
    scale = float(os.environ.get("KILN_SLOW_SCALE", "1"))
    env = {**os.environ, "KILN_HOME": str(tmp_path / "home")}
    kills = max(2, int(3 * scale))
    for _ in range(kills):
        go = tmp_path / "go"
        go.touch()
        with subprocess.Popen(
            [sys.executable, str(WORKER), str(go), "1000"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "READY"
            assert proc.stdout.readline().strip().isdigit()  # at least one version done
            time.sleep(float(np.random.default_rng().uniform(0.0, 0.2)))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)

    db = tmp_path / "home" / "kiln.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    kiln.configure(home=str(tmp_path / "home"))
    versions = kiln.models.list_versions("shared")
    numbers = sorted(v.version for v in versions)
    assert numbers == list(range(1, len(numbers) + 1))
    assert kiln.models.get_model("shared").latest_version == numbers[-1]
    x = pd.DataFrame({"a": [0.5, -1.0], "b": [1.0, 2.0]})
    for version in versions:
        assert kiln.models.load(version.ref).predict(x).shape == (2,)
