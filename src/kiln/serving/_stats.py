"""Rollout statistics shared by the worker processes of one server.

A guard judges a canary on every request it served, not on one worker's share, so each
worker publishes its per-arm statistics for the deployment's current revision and merges
everyone's before judging. The board is a directory on the local disk (one JSON file per
worker, replaced atomically) because ``kiln serve --workers N`` runs its workers on one
machine; a rollback decided by two workers at once is settled by the deployment's
revision check, so exactly one acts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import orjson

from kiln.serving.guards import ArmStats

__all__ = ["StatsBoard"]


class StatsBoard:
    """Per deployment and revision, every worker's arm statistics, merged on read."""

    def __init__(self, root: Path, worker: str | None = None) -> None:
        self.root = Path(root)
        self.worker = worker or f"{os.getpid()}"

    def _dir(self, deployment: str, revision: int) -> Path:
        return self.root / deployment / str(revision)

    def publish(self, deployment: str, revision: int, stats: Mapping[str, ArmStats]) -> None:
        folder = self._dir(deployment, revision)
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            self._forget_older(deployment, revision)
        payload = orjson.dumps({arm: s.to_dict() for arm, s in stats.items()})
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            os.replace(tmp, folder / f"{self.worker}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _forget_older(self, deployment: str, revision: int) -> None:
        """Earlier revisions are never judged again: their statistics can go."""
        for old in (self.root / deployment).iterdir():
            if old.name.isdigit() and int(old.name) < revision:
                shutil.rmtree(old, ignore_errors=True)

    def merged(self, deployment: str, revision: int) -> dict[str, ArmStats]:
        out: dict[str, ArmStats] = {}
        folder = self._dir(deployment, revision)
        if not folder.is_dir():
            return out
        for path in folder.glob("*.json"):
            try:
                data = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # a worker's file being replaced this instant: next round
            for arm, stats in data.items():
                loaded = ArmStats.from_dict(stats)
                out[arm] = out[arm].merge(loaded) if arm in out else loaded
        return out

    def exchange(
        self, deployment: str, revision: int, stats: Mapping[str, ArmStats]
    ) -> tuple[ArmStats, ArmStats]:
        """Publish this worker's statistics and return everyone's (champion, challenger)."""
        self.publish(deployment, revision, stats)
        merged = self.merged(deployment, revision)
        return merged.get("champion", ArmStats()), merged.get("challenger", ArmStats())
