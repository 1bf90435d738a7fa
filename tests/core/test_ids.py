"""Ids: 32 lowercase hex characters, unique, increasing within a process, sortable by time."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import threading
import time

import pytest

from kiln.core import ids, new_id

HEX32 = re.compile(r"[0-9a-f]{32}")


def millis(id_: str) -> int:
    """The creation time (ms since the epoch) in an id's first 48 bits."""
    return int(id_[:12], 16)


def test_ids_are_32_lowercase_hex_characters() -> None:
    for _ in range(1000):
        value = new_id()
        assert isinstance(value, str)
        assert HEX32.fullmatch(value), value


def test_ids_are_unique_and_strictly_increasing_within_a_process() -> None:
    values = [new_id() for _ in range(50_000)]  # many share a millisecond
    assert len(set(values)) == len(values)
    assert all(a < b for a, b in itertools.pairwise(values))


def test_ids_carry_their_creation_time() -> None:
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= millis(value) <= after


def test_ids_sort_by_creation_time() -> None:
    earlier = new_id()
    time.sleep(0.005)
    later = new_id()
    assert earlier < later
    assert millis(later) - millis(earlier) >= 5


def test_ids_keep_increasing_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """An NTP step backwards must not make a later id sort before an earlier one."""
    first = new_id()
    step_back = (millis(first) - 5_000) * 1_000_000

    class SteppedBackClock:
        @staticmethod
        def time_ns() -> int:
            return step_back

    monkeypatch.setattr(ids, "time", SteppedBackClock)
    values = [new_id() for _ in range(100)]
    assert first < values[0]
    assert all(a < b for a, b in itertools.pairwise(values))


def test_ids_from_many_threads_are_unique() -> None:
    per_thread, n_threads = 5_000, 8
    results: list[list[str]] = [[] for _ in range(n_threads)]
    start = threading.Barrier(n_threads)

    def make(out: list[str]) -> None:
        start.wait()
        out.extend(new_id() for _ in range(per_thread))

    threads = [threading.Thread(target=make, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [v for out in results for v in out]
    assert len(set(everything)) == per_thread * n_threads
    for out in results:  # each thread still sees increasing ids
        assert all(a < b for a, b in itertools.pairwise(out))


def test_ids_from_another_process_are_unique_and_time_ordered() -> None:
    mine = [new_id() for _ in range(2_000)]
    code = "from kiln.core import new_id\nprint('\\n'.join(new_id() for _ in range(2000)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert len(out) == 2_000
    assert all(HEX32.fullmatch(v) for v in out)
    assert set(mine).isdisjoint(out)
    assert mine[0] < out[0]  # made later, so sorts later
    later = new_id()
    assert out[-1] < later
