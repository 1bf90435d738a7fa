"""The metric writer stores every buffered value, whatever the batch size.

On SQLite whole chunks of rows go in as multi-row INSERTs and the rest row by row, so
batch sizes on both sides of a chunk boundary are written here, with NaN and the
infinities inside the chunks and in the remainder.
"""

from __future__ import annotations

import math

import pytest

from kiln.tracking import TrackingClient, runs, start_run


def _value(i: int) -> float:
    special = (math.nan, math.inf, -math.inf)
    return special[i // 7 % 3] if i % 7 == 3 else i / 8


@pytest.mark.parametrize("size", [1, 63, 64, 65, 200])
def test_every_value_is_stored_in_order(tracking_client: TrackingClient, size: int) -> None:
    with start_run("writer", client=tracking_client) as run:
        for i in range(size):
            # Two keys interleaved; "b" logs its steps backwards, so its latest value is
            # the one logged first, not last.
            run.log_metric("a", _value(i), step=i, timestamp=1_000 + i)
            run.log_metric("b", _value(size - 1 - i), step=size - 1 - i, timestamp=1_000 + i)
    record = runs.get(run.id, client=tracking_client)
    for key in ("a", "b"):
        history = runs.metric_history(run.id, key, client=tracking_client)
        assert [p.step for p in history] == list(range(size))
        for point in history:
            want = _value(point.step)
            assert math.isnan(point.value) if math.isnan(want) else point.value == want
        last = _value(size - 1)
        got = record.metrics[key]
        assert math.isnan(got) if math.isnan(last) else got == last


def test_rows_of_several_runs_in_one_batch(tracking_client: TrackingClient) -> None:
    first = start_run("writer", client=tracking_client)
    second = start_run("writer", client=tracking_client)
    try:
        for i in range(150):
            (first if i % 3 else second).log_metric("m", float(i))
        tracking_client.writer.flush()
    finally:
        first.end()
        second.end()
    mine = [p.value for p in runs.metric_history(first.id, "m", client=tracking_client)]
    theirs = [p.value for p in runs.metric_history(second.id, "m", client=tracking_client)]
    assert mine == [float(i) for i in range(150) if i % 3]
    assert theirs == [float(i) for i in range(150) if not i % 3]
