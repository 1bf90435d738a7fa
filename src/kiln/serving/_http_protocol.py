"""uvicorn's httptools protocol, with the prediction routes answered without ASGI.

Per request, uvicorn's ASGI machinery (the scope, a request-response cycle with its
event, the receive and send messages, the header checks) costs more than parsing the
request and predicting a batched row of a small model: a bare ASGI app that answers a
fixed reply serves well under half the requests per second that the same uvicorn
protocol answering from its parser callbacks does on the same machine. For the three
prediction routes (v2 infer, ``/invocations``, native predict) this protocol reads the
body in the parser's callbacks and answers with :meth:`PredictionRoutes.reply`, the
same code the ASGI app runs, in one task per request and one write.

A body declared over the deployment's limit is refused (413) as soon as its headers
arrive, and the connection closed, rather than read first. Everything else goes the
ASGI way untouched: other methods and paths, a body without a Content-Length (chunked;
the ASGI path reads it, bounded), ``Expect: 100-continue``, a pipelined request arriving
while one is still being answered (uvicorn queues it and keeps answers in order),
upgrades, and servers with an access log, a root path or a concurrency limit. The
answer carries uvicorn's default headers (``date``, ``server``) and honours keep-alive,
``Connection: close``, HTTP/1.0, write flow control, a client that went away and
graceful shutdown (the task is one of the server's tasks, which shutdown waits for).
"""

from __future__ import annotations

import logging
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from kiln.serving._predict_routes import PredictionRoutes, Reply, Route

__all__ = ["PredictionProtocol"]

log = logging.getLogger("kiln.serving")

_SERVER_ERROR: Reply = (500, b'{"error": "internal server error"}', b"application/json", ())


class _NoEvent:
    """What uvicorn sets on a cycle when the connection is lost: nothing waits here."""

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class _Answering:
    """A request being answered: stands in for uvicorn's cycle, whose attributes the
    protocol reads (``response_complete`` keeps a pipelined request queued until this
    one is answered; ``keep_alive`` is cleared by a graceful shutdown)."""

    __slots__ = ("chunks", "discard", "disconnected", "keep_alive", "response_complete", "route")
    message_event = _NO_EVENT

    def __init__(self, route: Route, keep_alive: bool) -> None:
        self.route = route
        self.chunks: list[bytes] = []
        self.keep_alive = keep_alive
        self.disconnected = False
        self.response_complete = False
        self.discard = False  # refused before its body was read: the body is dropped


def _routes_of(app: Any) -> PredictionRoutes | None:
    """The prediction routes under uvicorn's middleware (proxy headers, message logs)."""
    for _ in range(8):
        if isinstance(app, PredictionRoutes):
            return app
        app = getattr(app, "app", None)
    return None


class PredictionProtocol(HttpToolsProtocol):
    """``kiln serve``'s HTTP protocol: uvicorn's own, with a short way for predictions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        routes = _routes_of(self.app)
        usable = not self.access_log and not self.root_path and self.limit_concurrency is None
        self._routes = routes if usable else None
        self._answering: _Answering | None = None
        self._idle_since: float | None = None

    # -- parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """As uvicorn's, but the ASGI scope is built only for a request going that way."""
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = None  # type: ignore[assignment]

    def on_headers_complete(self) -> None:
        self._answering = None
        short = self._short_route()
        if short is None:
            self._scope()
            super().on_headers_complete()
            return
        route, too_large = short
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        answering = _Answering(route, keep_alive and not too_large)
        self._answering = self.cycle = answering  # type: ignore[assignment]
        if too_large:  # refused now (413, naming the size), not after reading it all
            answering.discard = True
            self._start(answering)

    def _scope(self) -> None:
        """uvicorn's ASGI scope for this request, holding the headers read so far."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.expect_100_continue = url, expect
        self.headers = self.scope["headers"] = headers

    def on_body(self, body: bytes) -> None:
        answering = self._answering
        if answering is None:
            super().on_body(body)
        elif not answering.discard:
            answering.chunks.append(body)

    def on_message_complete(self) -> None:
        answering = self._answering
        if answering is None:
            super().on_message_complete()
            return
        self._answering = None
        if not answering.discard:
            self._start(answering)

    def _start(self, answering: _Answering) -> None:
        task = self.loop.create_task(self._answer(answering, dict(self.headers)))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    # -- keep-alive: one timer per idle spell, not one per answer ---------------------------------

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # busy again; a timer already armed finds it so

    def on_response_complete(self) -> None:
        if self.pipeline or self.transport.is_closing():
            super().on_response_complete()  # starts the next pipelined request
            return
        self.server_state.total_requests += 1
        self.flow.resume_reading()
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def timeout_keep_alive_handler(self) -> None:
        """Closes a connection idle for the keep-alive timeout; re-arms for one that was
        busy meanwhile (its idle spell began later)."""
        self.timeout_keep_alive_task = None
        if self.transport.is_closing() or self._idle_since is None:
            return  # closed, or answering: the answer arms the timer again
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left <= 0:
            self.transport.close()
        else:
            self.timeout_keep_alive_task = self.loop.call_later(
                left, self.timeout_keep_alive_handler
            )

    # -- the short way ---------------------------------------------------------------------------

    def _short_route(self) -> tuple[Route, bool] | None:
        """The prediction route of this request when it can be answered without ASGI,
        and whether its declared body is over the deployment's limit."""
        routes = self._routes
        if routes is None or self.parser.get_method() != b"POST" or self.expect_100_continue:
            return None
        previous = self.cycle
        if previous is not None and not previous.response_complete:
            return None  # pipelined behind an answer in progress: uvicorn queues it
        if self.parser.should_upgrade():
            return None
        url = self.url
        path = url if url[:1] == b"/" and b"?" not in url else httptools.parse_url(url).path
        if b"%" in path:
            return None  # escaped characters: the ASGI path unquotes them
        route = routes.match(path.decode("ascii"))
        if route is None:
            return None
        declared = None
        for name, value in self.headers:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                return None  # a chunked body: the ASGI path reads it, bounded
        if declared is None or not declared.isdigit():
            return None  # the ASGI path names the problem
        return route, int(declared) > routes.limit(route[1])

    async def _answer(self, answering: _Answering, headers: dict[bytes, bytes]) -> None:
        body = answering.chunks[0] if len(answering.chunks) == 1 else b"".join(answering.chunks)
        routes = self._routes
        assert routes is not None
        try:
            status, payload, media, more = await routes.reply(
                answering.route, headers, body, sized=not answering.discard
            )
        except Exception:  # reply() turns every failure into an answer: a bug if not
            log.exception("answering %s failed", answering.route[1])
            status, payload, media, more = _SERVER_ERROR
            answering.keep_alive = False
        if self.flow.write_paused and not answering.disconnected:
            await self.flow.drain()
        if answering.disconnected or self.transport.is_closing():
            answering.response_complete = True
            return
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += (name, b": ", value, b"\r\n")
        content += (b"content-type: ", media, b"\r\ncontent-length: %d\r\n" % len(payload))
        for name, value in more:
            content += (name, b": ", value, b"\r\n")
        if not answering.keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", payload)
        self.transport.write(b"".join(content))
        answering.response_complete = True
        if not answering.keep_alive:
            self.transport.close()
        self.on_response_complete()
