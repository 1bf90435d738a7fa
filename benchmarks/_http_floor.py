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
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

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


class Protocol(HttpToolsProtocol):
    """The floor without ASGI: uvicorn's httptools protocol answering every POST with the
    same fixed reply from its parser callbacks, as `kiln serve` answers predictions (one
    write per answer, uvicorn's default headers, keep-alive honoured). Other requests (the
    readiness probe) go to the ASGI app above.

        uvicorn _http_floor:app --app-dir benchmarks --http _http_floor:Protocol ...
    """

    def on_headers_complete(self) -> None:
        self.short = self.parser.get_method() == b"POST"
        self.chunks: list[bytes] = []
        if not self.short:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.short:
            self.chunks.append(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.short:
            super().on_message_complete()
            return
        status = 200
        try:
            orjson.loads(b"".join(self.chunks))
        except orjson.JSONDecodeError:
            status = 400
        keep_alive = self.parser.should_keep_alive()
        content = [STATUS_LINE[status]]
        for name, value in [*self.server_state.default_headers, *HEADERS]:
            content += (name, b": ", value, b"\r\n")
        if not keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", ANSWER)
        self.transport.write(b"".join(content))
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()
