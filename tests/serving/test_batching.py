"""Dynamic batching: coalescing, the row-to-caller split, overload, timeouts, draining."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

import numpy as np
import pytest

from kiln.core import InvalidInput, KilnError
from kiln.serving.batching import Batcher, Overloaded, PredictTimeout
from kiln.serving.specs import Batching

T = TypeVar("T")
W = np.arange(1.0, 4.0)  # the fake model: a dot product over 3 features


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Model:
    """A vectorized fake predict that records each batch and can be held on demand."""

    def __init__(self, *, hold: bool = False, fail: BaseException | None = None) -> None:
        self.batches: list[int] = []
        self.threads: list[int] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail = fail
        if not hold:
            self.release.set()

    def __call__(self, x: Any) -> np.ndarray:
        self.batches.append(len(x["a"]) if isinstance(x, Mapping) else len(x))
        self.threads.append(threading.get_ident())
        self.started.set()
        self.release.wait(5)
        if isinstance(x, Mapping):
            return np.asarray(x["a"] * 10 + x["b"])
        if self.fail is not None:
            raise self.fail
        return np.asarray(x @ W)


async def until(check: Callable[[], bool]) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached in 2 s")


def rows(*values: float) -> np.ndarray:
    return np.array([[v, v, v] for v in values])


def spawn(coros: list[Awaitable[T]]) -> list[asyncio.Task[T]]:
    return [asyncio.ensure_future(c) for c in coros]


def test_a_lone_request_goes_straight_through_without_waiting_max_wait() -> None:
    model = Model()
    batcher = Batcher(model, Batching(max_wait_ms=10_000), name="fraud")

    async def main() -> np.ndarray:
        t0 = time.perf_counter()
        out = await batcher.submit(rows(1.0))
        assert time.perf_counter() - t0 < 1.0
        await batcher.close()
        return out

    np.testing.assert_allclose(run(main()), [6.0])
    assert model.batches == [1]


def test_requests_submitted_together_run_as_one_predict_and_each_gets_its_rows() -> None:
    model = Model()
    batcher = Batcher(model, Batching(max_batch_size=64))

    async def main() -> list[np.ndarray]:
        outs = await asyncio.gather(*(batcher.submit(rows(i, i + 0.5)) for i in range(10)))
        await batcher.close()
        return outs

    outs = run(main())
    assert model.batches == [20]
    for i, out in enumerate(outs):
        np.testing.assert_allclose(out, [6.0 * i, 6.0 * (i + 0.5)])


def test_requests_that_queue_while_a_predict_runs_go_together_in_the_next_batch() -> None:
    model = Model(hold=True)
    batcher = Batcher(model, Batching(max_batch_size=64, max_wait_ms=0), inline_under_ms=0)

    async def main() -> None:
        first = spawn([batcher.submit(rows(1))])
        await until(model.started.is_set)
        rest = spawn([batcher.submit(rows(i)) for i in range(2, 7)])
        await until(lambda: batcher.queue_depth == 5)
        assert batcher.in_flight == 1
        model.release.set()
        outs = await asyncio.gather(*first, *rest)
        for i, out in enumerate(outs, start=1):
            np.testing.assert_allclose(out, [6.0 * i])
        await batcher.close()

    run(main())
    assert model.batches == [1, 5]


def test_batches_hold_at_most_max_batch_size_rows_and_a_larger_request_runs_alone() -> None:
    model = Model()
    batcher = Batcher(model, Batching(max_batch_size=4))

    async def main() -> list[np.ndarray]:
        singles = [batcher.submit(rows(i)) for i in range(6)]
        big = batcher.submit(rows(*range(10)))
        outs = await asyncio.gather(*singles, big)
        await batcher.close()
        return outs

    outs = run(main())
    assert model.batches == [4, 2, 10]
    np.testing.assert_allclose(outs[-1], 6.0 * np.arange(10))


def test_many_concurrent_submitters_each_get_exactly_their_rows_back() -> None:
    """200 submitters with 1-5 rows each: correct split, bounded batches, low overhead."""
    model = Model()
    sizes: list[int] = []
    batcher = Batcher(model, Batching(max_batch_size=64), on_batch=lambda n, s: sizes.append(n))
    per_client = 25

    wrong: list[tuple[int, int]] = []
    inputs = [
        [
            k * 1000.0 + j * 10 + np.repeat(np.arange(1 + (k + j) % 5.0)[:, None], 3, axis=1)
            for j in range(per_client)
        ]
        for k in range(200)
    ]
    expected = [[x @ W for x in xs] for xs in inputs]

    async def client(k: int) -> None:
        for j, x in enumerate(inputs[k]):
            out = await batcher.submit(x)
            if not np.array_equal(out, expected[k][j]):
                wrong.append((k, j))

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(200)))
        elapsed = time.perf_counter() - t0
        await batcher.close()
        return elapsed

    elapsed = run(main())
    requests = 200 * per_client
    assert wrong == []
    assert (
        sum(sizes)
        == sum(model.batches)
        == sum(1 + (k + j) % 5 for k in range(200) for j in range(per_client))
    )
    assert max(sizes) <= 64
    assert len(sizes) < requests / 10  # requests really were coalesced
    # per-request overhead (client coroutine included) is tens of microseconds; leave room
    assert elapsed / requests < 500e-6, f"{elapsed / requests * 1e6:.0f} us per request"


def test_a_failing_predict_fails_every_request_of_its_batch_and_the_next_batch_runs() -> None:
    model = Model(fail=RuntimeError("model exploded"))
    batcher = Batcher(model, Batching())

    async def main() -> None:
        results = await asyncio.gather(
            *(batcher.submit(rows(i)) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        assert str(results[0]) == "model exploded"
        model.fail = None
        np.testing.assert_allclose(await batcher.submit(rows(2)), [12.0])
        await batcher.close()

    run(main())
    assert model.batches == [3, 1]


def test_a_predict_that_returns_the_wrong_number_of_rows_is_an_error() -> None:
    batcher = Batcher(lambda x: np.zeros(len(x) + 1), Batching(), name="fraud")

    async def main() -> None:
        with pytest.raises(KilnError, match=r"model 'fraud' returned an output of shape \(3,\)"):
            await batcher.submit(rows(1, 2))
        await batcher.close()

    run(main())


def test_a_full_queue_answers_overloaded_at_once_with_retry_after() -> None:
    model = Model(hold=True)
    batcher = Batcher(model, Batching(max_queue=3), name="fraud", inline_under_ms=0)

    async def main() -> None:
        running = spawn([batcher.submit(rows(0))])
        await until(model.started.is_set)
        waiting = spawn([batcher.submit(rows(i)) for i in range(3)])
        await until(lambda: batcher.queue_depth == 3)
        t0 = time.perf_counter()
        with pytest.raises(Overloaded, match="'fraud' has 3 requests waiting") as info:
            await batcher.submit(rows(9))
        assert time.perf_counter() - t0 < 0.1
        assert isinstance(info.value, KilnError)
        assert info.value.retry_after_s >= 1.0
        model.release.set()
        await asyncio.gather(*running, *waiting)
        await batcher.close()

    run(main())


def test_a_timed_out_request_raises_predict_timeout_and_its_batch_still_completes() -> None:
    model = Model(hold=True)
    batcher = Batcher(model, Batching(), inline_under_ms=0)

    async def main() -> None:
        slow = spawn([batcher.submit(rows(1), timeout_s=0.02)])
        patient = spawn([batcher.submit(rows(2))])
        with pytest.raises(PredictTimeout, match="did not answer within 20 ms") as info:
            await slow[0]
        assert isinstance(info.value, asyncio.TimeoutError)
        assert isinstance(info.value, KilnError)
        model.release.set()
        np.testing.assert_allclose(await patient[0], [12.0])
        await batcher.close()

    run(main())
    assert model.batches == [2]


def test_requests_that_time_out_or_are_cancelled_while_queued_are_never_predicted() -> None:
    model = Model(hold=True)
    batcher = Batcher(model, Batching(), inline_under_ms=0)

    async def main() -> None:
        first = spawn([batcher.submit(rows(1))])
        await until(model.started.is_set)
        expiring = spawn([batcher.submit(rows(2), timeout_s=0.01)])
        cancelled = spawn([batcher.submit(rows(3))])
        kept = spawn([batcher.submit(rows(4))])
        await until(lambda: batcher.queue_depth == 3)
        with pytest.raises(PredictTimeout):
            await expiring[0]
        cancelled[0].cancel()
        await until(lambda: batcher.queue_depth == 1)
        model.release.set()
        await asyncio.gather(*first, *kept)
        with pytest.raises(asyncio.CancelledError):
            await cancelled[0]
        assert batcher.queue_depth == 0
        await batcher.close()

    run(main())
    assert model.batches == [1, 1]


def test_close_drains_queued_and_running_requests_then_refuses_new_ones() -> None:
    model = Model(hold=True)
    batcher = Batcher(model, Batching(), inline_under_ms=0)

    async def main() -> None:
        pending = spawn([batcher.submit(rows(i)) for i in range(3)])
        await until(model.started.is_set)
        more = spawn([batcher.submit(rows(i)) for i in range(3, 5)])
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.01)
        assert not closing.done()
        with pytest.raises(Overloaded, match="shutting down"):
            await batcher.submit(rows(9))
        model.release.set()
        await closing
        outs = [t.result() for t in (*pending, *more)]
        for i, out in enumerate(outs):
            np.testing.assert_allclose(out, [6.0 * i])

    run(main())
    assert model.batches == [3, 2]


def test_dict_requests_are_joined_column_by_column() -> None:
    model = Model()
    batcher = Batcher(model, Batching())

    async def main() -> list[np.ndarray]:
        outs = await asyncio.gather(
            batcher.submit({"a": np.array([1.0, 2.0]), "b": np.array([0.5, 0.25])}),
            batcher.submit({"a": np.array([3.0]), "b": np.array([0.0])}),
        )
        await batcher.close()
        return outs

    first, second = run(main())
    assert model.batches == [3]
    np.testing.assert_allclose(first, [10.5, 20.25])
    np.testing.assert_allclose(second, [30.0])


def test_requests_of_different_shapes_are_not_joined() -> None:
    seen: list[tuple[int, ...]] = []

    def predict(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape)
        return x.sum(axis=1)

    batcher = Batcher(predict, Batching())

    async def main() -> None:
        a, b, c = await asyncio.gather(
            batcher.submit(np.ones((1, 3))),
            batcher.submit(np.ones((2, 4))),
            batcher.submit(np.ones((1, 4))),
        )
        np.testing.assert_allclose(a, [3.0])
        np.testing.assert_allclose(b, [4.0, 4.0])
        np.testing.assert_allclose(c, [4.0])
        await batcher.close()

    run(main())
    assert seen == [(1, 3), (3, 4)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros((0, 3)), "at least one row"),
        (np.array(1.0), "at least one row"),
        ([[1.0, 2.0]], "must be a numpy array"),
        ({}, "must be a numpy array"),
        ({"a": np.ones(2), "b": np.ones(3)}, "column 'b' has 3 rows where the others have 2"),
        ({"a": [1.0]}, "column 'a' must be a numpy array"),
    ],
)
def test_bad_request_rows_are_refused_with_the_reason(value: Any, message: str) -> None:
    batcher = Batcher(Model(), Batching())

    async def main() -> None:
        with pytest.raises(InvalidInput, match=message):
            await batcher.submit(value)
        await batcher.close()

    run(main())


def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(InvalidInput, match="'spec' parameter of Batcher must be a Batching"):
        Batcher(Model(), {"max_batch_size": 4})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="'max_in_flight' parameter of Batcher"):
        Batcher(Model(), Batching(), max_in_flight=0)
    with pytest.raises(InvalidInput, match="'inline_under_ms' parameter of Batcher"):
        Batcher(Model(), Batching(), inline_under_ms=-1)
    batcher = Batcher(Model(), Batching())

    async def main() -> None:
        with pytest.raises(InvalidInput, match="'timeout_s' must be a number > 0 or None"):
            await batcher.submit(rows(1), timeout_s=0)
        await batcher.close()

    run(main())


def test_with_two_slots_a_second_batch_starts_once_the_oldest_waited_max_wait_ms() -> None:
    model = Model(hold=True)
    batcher = Batcher(
        model, Batching(max_batch_size=64, max_wait_ms=100), max_in_flight=2, inline_under_ms=0
    )

    async def main() -> None:
        first = spawn([batcher.submit(rows(1))])
        await until(model.started.is_set)
        second = spawn([batcher.submit(rows(2)), batcher.submit(rows(3))])
        await asyncio.sleep(0.005)
        assert batcher.in_flight == 1 and batcher.queue_depth == 2  # waiting for company
        await until(lambda: batcher.in_flight == 2)  # max_wait_ms passed: second slot used
        model.release.set()
        await asyncio.gather(*first, *second)
        await batcher.close()

    run(main())
    assert model.batches == [1, 2]


def test_fast_predicts_run_on_the_event_loop_and_slow_ones_in_a_thread() -> None:
    loop_thread = threading.get_ident()
    fast = Model()
    slow_calls: list[int] = []

    def slow(x: np.ndarray) -> np.ndarray:
        slow_calls.append(threading.get_ident())
        time.sleep(0.01)
        return x @ W

    async def main() -> None:
        for predict in (fast, slow):
            batcher = Batcher(predict, Batching(), inline_under_ms=5)
            for i in range(5):
                await batcher.submit(rows(i))
            await batcher.close()
        never_inline = Batcher(fast, Batching(), inline_under_ms=0)
        for i in range(3):
            await never_inline.submit(rows(i))
        await never_inline.close()

    run(main())
    assert fast.threads[0] != loop_thread  # nothing measured yet: the first goes to a thread
    assert fast.threads[1:5] == [loop_thread] * 4
    assert loop_thread not in slow_calls
    assert loop_thread not in fast.threads[5:]


def test_on_batch_reports_rows_and_seconds_and_a_failing_hook_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reports: list[tuple[int, float]] = []

    def hook(size: int, seconds: float) -> None:
        reports.append((size, seconds))
        raise ValueError("metrics are down")

    batcher = Batcher(Model(), Batching(), on_batch=hook, name="fraud")

    async def main() -> None:
        await asyncio.gather(batcher.submit(rows(1, 2)), batcher.submit(rows(3)))
        np.testing.assert_allclose(await batcher.submit(rows(4)), [24.0])
        await batcher.close()

    run(main())
    assert [n for n, _ in reports] == [3, 1]
    assert all(s > 0 for _, s in reports)
    assert "on_batch hook of model 'fraud' failed" in caplog.text


def test_on_answer_sees_each_answered_batch_whole_with_its_callers_tags() -> None:
    seen: list[Any] = []
    batcher = Batcher(Model(), Batching(max_batch_size=64))
    batcher.on_answer = seen.append

    async def main() -> None:
        outs = await asyncio.gather(
            batcher.submit(rows(1, 2), tag="a"), batcher.submit(rows(3), tag="b")
        )
        np.testing.assert_allclose(np.concatenate(outs), [6.0, 12.0, 18.0])
        await batcher.close()

    run(main())
    [batch] = seen
    assert batch.tags == ["a", "b"]
    assert batch.counts == [2, 1]
    np.testing.assert_allclose(batch.inputs, rows(1, 2, 3))
    np.testing.assert_allclose(batch.outputs, [6.0, 12.0, 18.0])
    assert all(0 < batch.at - t < 5.0 for t in batch.submitted)
    assert all(abs(t - time.perf_counter()) < 60 for t in batch.submitted)  # perf_counter


def test_on_answer_skips_failed_batches_and_batches_with_a_caller_gone() -> None:
    seen: list[Any] = []
    model = Model(hold=True)
    batcher = Batcher(model, Batching(), inline_under_ms=0)
    batcher.on_answer = seen.append

    async def main() -> None:
        slow = spawn([batcher.submit(rows(1), timeout_s=0.02, tag="late")])
        patient = spawn([batcher.submit(rows(2), tag="patient")])
        with pytest.raises(PredictTimeout):
            await slow[0]
        model.release.set()
        await patient[0]  # answered, but its batch also held the caller that timed out
        model.fail = RuntimeError("model down")
        with pytest.raises(RuntimeError):
            await batcher.submit(rows(3), tag="failed")
        await batcher.close()

    run(main())
    assert seen == []


def test_a_failing_on_answer_hook_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    batcher = Batcher(Model(), Batching(), name="fraud")

    def hook(_: Any) -> None:
        raise ValueError("log is down")

    batcher.on_answer = hook

    async def main() -> None:
        np.testing.assert_allclose(await batcher.submit(rows(4), tag=1), [24.0])
        await batcher.close()

    run(main())
    assert "on_answer hook of model 'fraud' failed" in caplog.text


def test_a_ticket_is_awaited_directly_and_abandoning_it_frees_its_place_at_once() -> None:
    """``enqueue`` is ``submit`` without its coroutine: the caller awaits the ticket."""
    model = Model(hold=True)
    batcher = Batcher(model, Batching(max_queue=2), inline_under_ms=0)

    async def main() -> None:
        first = batcher.enqueue(rows(1))
        await until(model.started.is_set)
        waiting = batcher.enqueue(rows(2))
        gone = batcher.enqueue(rows(3))
        with pytest.raises(Overloaded):
            batcher.enqueue(rows(4))  # two wait: the queue is full
        gone.fut.cancel()
        batcher.abandon(gone)
        assert batcher.queue_depth == 1
        kept = batcher.enqueue(rows(5))  # the abandoned one's place
        model.release.set()
        outs = await asyncio.gather(first.fut, waiting.fut, kept.fut)
        assert [o.tolist() for o in outs] == [[6.0], [12.0], [30.0]]
        batcher.abandon(kept)  # answered already: nothing changes
        assert batcher.queue_depth == 0
        await batcher.close()

    run(main())
    assert sorted(model.batches) == [1, 2]
