"""Loaded model versions, each with its batcher and circuit breaker, shared by deployments.

A version is loaded once per worker however many deployments or arms use it, so a
canary of ``fraud/4`` beside a deployment already on ``fraud/4`` costs no second copy
and shares one batch queue, as the issue asks ("dynamic batching per model").
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from kiln.registry import LoadedModel, ModelVersion, models
from kiln.serving._inputs import InputLayout
from kiln.serving.batching import Answered, Batcher
from kiln.serving.breaker import CircuitBreaker
from kiln.serving.specs import Batching, Breaker
from kiln.tracking import TrackingClient

__all__ = ["ModelSlot", "SlotPool"]

log = logging.getLogger("kiln.serving")


class ModelSlot:
    """One model version ready to answer: input plan, batch queue, circuit breaker."""

    def __init__(
        self,
        loaded: LoadedModel,
        batching: Batching,
        breaker: Breaker,
        executor: Executor,
        on_batch: Callable[[int, float], None] | None = None,
        *,
        accepts_nan: bool = True,
    ) -> None:
        self.loaded = loaded
        self.version: ModelVersion = loaded.version
        self.ref = loaded.version.ref
        self.layout = InputLayout.of(loaded.signature)
        self.accepts_nan = accepts_nan
        self.breaker = CircuitBreaker(breaker)
        # Python-function models may do anything (I/O included) and so may stall at any
        # call: they always run in a worker thread, never on the event loop.
        inline = 0.0 if loaded.version.flavor == "pyfunc" else 1.0
        self.batcher = Batcher(
            self._predict,
            batching,
            executor=executor,
            name=self.ref,
            on_batch=on_batch,
            inline_under_ms=inline,
            max_in_flight=batching.max_in_flight,
        )
        self.users = 0

    def _predict(self, data: Any) -> np.ndarray:
        return np.asarray(self.loaded.predict_batch(self.layout.batch(data)))

    async def close(self) -> None:
        await self.batcher.close()


def _load(version: ModelVersion, client: TrackingClient) -> tuple[LoadedModel, bool]:
    """The model, and whether it answers a row of NaN inputs (a null sent for a number).

    A model that fails on NaN would fail the whole batch a request with a null joins and
    count against its circuit breaker; knowing it up front, the server answers such a
    request with a 400 naming the input instead.
    """
    loaded = models.load(version, client=client)
    layout = InputLayout.of(loaded.signature)
    if not layout.names:
        return loaded, True
    try:
        loaded.predict_batch(layout.batch(layout.probe()))
    except Exception:
        return loaded, False
    return loaded, True


class SlotPool:
    """Slots by version id, loaded off the event loop, closed when no deployment uses them."""

    def __init__(
        self,
        client: TrackingClient,
        executor: Executor,
        on_batch: Callable[[str, int, float], None] | None = None,
        on_answer: Callable[[ModelSlot, Answered], None] | None = None,
    ) -> None:
        self._client = client
        self._executor = executor
        self._on_batch = on_batch
        self._on_answer = on_answer
        self._slots: dict[str, ModelSlot] = {}
        self._loading: dict[str, asyncio.Future[ModelSlot]] = {}

    def resolve(self, ref: str) -> ModelVersion:
        """What ``ref`` names now (an alias is followed): a cheap indexed read."""
        return models.resolve(ref, client=self._client)

    async def acquire(
        self, version: ModelVersion, batching: Batching, breaker: Breaker
    ) -> ModelSlot:
        slot = self._slots.get(version.id)
        if slot is None:
            pending = self._loading.get(version.id)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._loading[version.id] = pending
                try:
                    loaded, nan_ok = await asyncio.to_thread(_load, version, self._client)
                    hook = self._on_batch
                    ref = version.ref
                    slot = ModelSlot(
                        loaded,
                        batching,
                        breaker,
                        self._executor,
                        (lambda n, s: hook(ref, n, s)) if hook is not None else None,
                        accepts_nan=nan_ok,
                    )
                    answered = self._on_answer
                    if answered is not None:
                        slot.batcher.on_answer = functools.partial(answered, slot)
                    self._slots[version.id] = slot
                    pending.set_result(slot)
                except BaseException as exc:
                    pending.set_exception(exc)
                    pending.exception()  # retrieved: no "never retrieved" warning
                    raise
                finally:
                    del self._loading[version.id]
            else:
                slot = await pending
        slot.users += 1
        return slot

    async def release(self, slot: ModelSlot, *, grace_s: float = 5.0) -> None:
        """Drop one use; the last one closes the slot after in-flight requests finish."""
        slot.users -= 1
        if slot.users > 0:
            return
        await asyncio.sleep(grace_s)  # requests routed just before the swap still land
        if slot.users == 0 and self._slots.get(slot.version.id) is slot:
            del self._slots[slot.version.id]
            await slot.close()
            log.info("unloaded %s", slot.ref)

    def slots(self) -> list[ModelSlot]:
        return list(self._slots.values())

    async def close(self) -> None:
        slots, self._slots = list(self._slots.values()), {}
        await asyncio.gather(*(s.close() for s in slots), return_exceptions=True)
