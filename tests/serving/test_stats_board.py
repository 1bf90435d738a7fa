"""Rollout statistics shared between server workers through the stats board."""

from __future__ import annotations

from pathlib import Path

from kiln.serving._stats import StatsBoard
from kiln.serving.guards import ArmStats


def stats(latency_ms: float, n: int, errors: int = 0) -> ArmStats:
    s = ArmStats(seed=1)
    for i in range(n):
        s.record(latency_ms, error=i < errors, predictions=[0.5])
    return s


def test_workers_see_each_others_requests(tmp_path: Path) -> None:
    a, b = StatsBoard(tmp_path, worker="a"), StatsBoard(tmp_path, worker="b")
    a.publish("api", 3, {"champion": stats(1.0, 10), "challenger": stats(2.0, 4, errors=1)})
    champion, challenger = b.exchange(
        "api", 3, {"champion": stats(1.0, 5), "challenger": stats(2.0, 6, errors=2)}
    )
    assert (champion.requests, challenger.requests, challenger.errors) == (15, 10, 3)
    # Another revision is judged on its own requests only.
    assert b.merged("api", 4) == {}


def test_older_revisions_are_forgotten(tmp_path: Path) -> None:
    board = StatsBoard(tmp_path, worker="a")
    board.publish("api", 1, {"champion": stats(1.0, 3)})
    board.publish("api", 2, {"champion": stats(1.0, 3)})
    assert sorted(p.name for p in (tmp_path / "api").iterdir()) == ["2"]
    assert board.merged("api", 1) == {}
