"""Version numbering under concurrent registration from several processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kiln

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
