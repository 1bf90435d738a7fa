"""The batching ceiling of the serving benchmark: the least a batching model server does.

The HTTP floor (`_http_floor.py`) answers without a model. This app does what any server
that batches requests for a real model cannot skip, and nothing more: read and parse the
body (orjson), queue the row, predict every row queued in the same event-loop turn with one
`Booster.predict` call on the event loop (as `kiln serve` does for a batch this small),
wake each request with its answer, and send the same v2 answer shape. No validation, no
metrics, no prediction log, no breaker, no timeout. Kiln's throughput over this one's is
what its production features cost; this one's over the floor is what batching and the
model cost on this machine, whoever serves them.

    KILN_BENCH_MODEL=booster.txt uvicorn _batching_ceiling:app --app-dir benchmarks \
        --http httptools --loop uvloop --lifespan off
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

# What `kiln serve` sets before LightGBM loads (kiln.core.openmp): one OpenMP thread per
# process that sleeps when idle. The same model settings on both sides.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import lightgbm as lgb
import numpy as np

Message = MutableMapping[str, Any]

_booster = lgb.Booster(model_file=os.environ["KILN_BENCH_MODEL"])
_queued: list[tuple[list[float], asyncio.Future[float]]] = []
_scheduled = False


def _predict_queued() -> None:
    global _scheduled, _queued
    _scheduled = False
    batch, _queued = _queued, []
    scores = np.asarray(_booster.predict(np.array([row for row, _ in batch], dtype=np.float64)))
    for (_, future), score in zip(batch, scores.tolist(), strict=True):
        if not future.done():
            future.set_result(score)


async def app(
    scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[..., Awaitable[None]]
) -> None:
    global _scheduled
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] != "POST":  # the readiness probe
        await _answer(send, 200, b"{}")
        return
    try:
        row = orjson.loads(body)["inputs"][0]["data"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        await _answer(send, 400, b'{"error": "bad request"}')
        return
    loop = asyncio.get_running_loop()
    future: asyncio.Future[float] = loop.create_future()
    _queued.append((row, future))
    if not _scheduled:
        _scheduled = True
        loop.call_soon(_predict_queued)
    score = await future
    answer = {
        "model_name": "bench",
        "model_version": "1",
        "id": "0",
        "outputs": [{"name": "predict", "shape": [1], "datatype": "FP64", "data": [score]}],
    }
    await _answer(send, 200, orjson.dumps(answer))


async def _answer(send: Callable[..., Awaitable[None]], status: int, payload: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
