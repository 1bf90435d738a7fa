"""Concurrency: version numbering across processes, alias moves racing deletes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression

import kiln
from kiln.errors import Conflict, NotFound
from kiln.tracking import TrackingClient

WORKER = Path(__file__).with_name("_register_worker.py")


def test_concurrent_registrations_get_distinct_consecutive_versions(
    db_url: str, tmp_path: Path
) -> None:
    processes, per_process = 4, 3
    env = {
        **os.environ,
        "KILN_DB_URL": db_url,
        "KILN_ARTIFACT_URI": str(tmp_path / "artifacts"),
    }
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(go), str(per_process)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "READY", (
                proc.stderr.read() if proc.stderr else ""
            )
        go.touch()
        versions = []
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
            versions += [int(line) for line in out.split()]
    finally:
        for proc in procs:
            proc.kill()
    total = processes * per_process
    assert sorted(versions) == list(range(1, total + 1))
    kiln.configure(db_url=db_url, artifact_uri=str(tmp_path / "artifacts"))
    stored = kiln.models.list_versions("shared")
    assert sorted(v.version for v in stored) == list(range(1, total + 1))
    assert len({v.id for v in stored}) == total
    assert kiln.models.get_model("shared").latest_version == total


def _at_once(*calls: Callable[[], object]) -> list[str]:
    """Run ``calls`` in threads released together; what each did: "done" or "refused"."""
    start = threading.Barrier(len(calls))
    outcome = ["" for _ in calls]

    def run(i: int) -> None:
        start.wait()
        try:
            calls[i]()
            outcome[i] = "done"
        except (Conflict, NotFound):
            outcome[i] = "refused"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcome


def test_an_alias_set_racing_the_delete_of_its_version_never_dangles(
    tracking_client: TrackingClient,
) -> None:
    """Setting an alias on a version while it is deleted: one wins, the other is refused."""
    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    model = LogisticRegression().fit(x, [0, 1, 1, 0])
    rounds = 6
    for _ in range(rounds + 1):
        kiln.models.register("race", model, input_example=x, client=tracking_client)
    for version in range(1, rounds + 1):
        outcome = _at_once(
            lambda v=version: kiln.models.set_alias("race", f"a{v}", v, client=tracking_client),
            lambda v=version: kiln.models.delete_version("race", v, client=tracking_client),
        )
        assert sorted(outcome) == ["done", "refused"], outcome
        aliases = kiln.models.get_model("race", client=tracking_client).aliases
        alive = {v.version for v in kiln.models.list_versions("race", client=tracking_client)}
        assert (f"a{version}" in aliases) == (version in alive), outcome
        assert set(aliases.values()) <= alive
