"""The HTTP floor of the serving benchmark: what uvicorn alone answers.

A bare ASGI app that does what any JSON prediction server must do and nothing else: read
the body, parse it as JSON (orjson, as Kiln does) and answer a fixed prediction of the
size Kiln's v2 answer has. `benchmarks/serving.py` runs it on the same uvicorn stack as
`kiln serve` (httptools, uvloop, the same worker count, no access log), so Kiln's
throughput over this one's is the share of the machine left after the HTTP work no
server can skip.

    uvicorn _http_floor:app --app-dir benchmarks --http httptools --loop uvloop --lifespan off
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Message = MutableMapping[str, Any]

ANSWER = orjson.dumps(
    {
        "model_name": "bench",
        "model_version": "1",
        "id": "0-00000000-1",
        "outputs": [{"name": "output-0", "shape": [1], "datatype": "FP64", "data": [0.5]}],
    }
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]


async def app(
    scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[..., Awaitable[None]]
) -> None:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    status = 200
    if scope["method"] == "POST":
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            status = 400
    await send({"type": "http.response.start", "status": status, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
