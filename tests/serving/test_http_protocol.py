"""The prediction routes answered from uvicorn's parser callbacks, not through ASGI.

A live ``kiln serve`` on raw sockets: what HTTP allows a client to do (pipeline, close,
speak HTTP/1.0, send a chunked body, expect 100-continue, go away) must work the same as
through the ASGI app, which still answers every request the short way does not take.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from _harness import frame, register_linear, register_paced, serving

import kiln

V2 = "/v2/models/fraud-api/infer"
NATIVE = "/deployments/fraud-api/predict"


def v2_body(row: list[float], request_id: str = "r") -> bytes:
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": row}
    return orjson.dumps({"id": request_id, "inputs": [tensor]})


def request(
    path: str, body: bytes, *, version: str = "1.1", headers: tuple[str, ...] = ()
) -> bytes:
    head = [f"POST {path} HTTP/{version}", "Host: 127.0.0.1", "Content-Type: application/json"]
    head += [f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked(path: str, body: bytes) -> bytes:
    """The same request with its body in two chunks (no Content-Length)."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n"
    half = len(body) // 2
    parts = [body[:half], body[half:]]
    return head.encode() + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return orjson.loads(self.body)


class Raw:
    """One TCP connection; answers are read one at a time, by their Content-Length."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10.0)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def answer(self) -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            assert self._more(), f"connection closed mid-answer: {self.buffer!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        size = int(headers.get("content-length", "0"))
        while len(self.buffer) < size:
            assert self._more(), "connection closed mid-body"
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return Answer(status, headers, body)

    def closed_by_server(self) -> bool:
        try:
            return not self._more()
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server() -> Iterator[str]:
    register_linear("fraud")
    kiln.deployments.create("fraud-api", model="fraud/1")
    with serving(["fraud-api"], args=["--default", "fraud-api"]) as live:
        yield live.url


@pytest.fixture
def raw(server: str) -> Iterator[Raw]:
    conn = Raw(server)
    yield conn
    conn.close()


ROWS = frame(3).to_numpy().tolist()


def test_pipelined_requests_are_answered_in_order(server: str, raw: Raw) -> None:
    alone = []
    for i, row in enumerate(ROWS):
        raw.send(request(V2, v2_body(row, f"alone-{i}")))
        alone.append(raw.answer().json()["outputs"])
    # three predictions with a GET between them, all in one write: answers in order
    burst = request(V2, v2_body(ROWS[0], "p0")) + request(V2, v2_body(ROWS[1], "p1"))
    burst += b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    burst += request(V2, v2_body(ROWS[2], "p2"))
    raw.send(burst)
    answers = [raw.answer() for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 200]
    assert [answers[i].json()["id"] for i in (0, 1, 3)] == ["p0", "p1", "p2"]
    assert [answers[i].json()["outputs"] for i in (0, 1, 3)] == alone
    assert answers[2].json() == {"live": True}


def test_keep_alive_serves_many_requests_on_one_connection(server: str, raw: Raw) -> None:
    for i in range(50):
        raw.send(request(V2, v2_body(ROWS[i % 3], f"k{i}")))
        a = raw.answer()
        assert a.status == 200 and a.json()["id"] == f"k{i}"
        assert a.headers["kiln-model-version"] == "fraud/1"
        assert a.headers["content-type"] == "application/json"
        assert "date" in a.headers and "server" in a.headers


def test_connection_close_is_honoured(server: str, raw: Raw) -> None:
    raw.send(request(V2, v2_body(ROWS[0]), headers=("Connection: close",)))
    a = raw.answer()
    assert a.status == 200
    assert a.headers["connection"] == "close"
    assert raw.closed_by_server()


def test_http_1_0_is_answered_then_closed(server: str, raw: Raw) -> None:
    raw.send(request(V2, v2_body(ROWS[0]), version="1.0"))
    a = raw.answer()
    assert a.status == 200 and a.json()["outputs"]
    assert a.headers["connection"] == "close"
    assert raw.closed_by_server()


BODIES = [
    (V2, v2_body(ROWS[0], "same")),
    (V2, b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64"}]}'),
    (V2, b"{not json"),
    ("/v2/models/nope/infer", v2_body(ROWS[0], "same")),
    (
        "/invocations",
        orjson.dumps({"dataframe_records": [dict(zip("abcd", ROWS[0], strict=True))]}),
    ),
    ("/invocations", orjson.dumps({"inputs": [ROWS[0]]})),
    (NATIVE, orjson.dumps({"request": {"f0": 1.0, "f1": 2.0, "f2": 0.5, "f3": -1.0}})),
    (NATIVE, b"{}"),
]


@pytest.mark.parametrize(("path", "body"), BODIES)
def test_the_short_way_answers_as_the_asgi_app_does(
    server: str, raw: Raw, path: str, body: bytes
) -> None:
    """A chunked body takes the ASGI path: the two answers must be the same."""
    raw.send(request(path, body))
    short = raw.answer()
    raw.send(chunked(path, body))
    asgi = raw.answer()
    assert short.status == asgi.status
    strip = re.compile(rb'"request_id":\s*"[^"]+"')  # native ids differ per request
    assert strip.sub(b"", short.body) == strip.sub(b"", asgi.body)
    for name in ("content-type", "kiln-model-version", "kiln-arm", "retry-after"):
        assert short.headers.get(name) == asgi.headers.get(name), name
    if short.status >= 400:
        assert "error" in short.json() or "error_code" in short.json()


def test_expect_100_continue_gets_its_interim_answer(server: str, raw: Raw) -> None:
    body = v2_body(ROWS[0], "wait")
    head = request(V2, b"", headers=("Expect: 100-continue",)).replace(
        b"Content-Length: 0", b"Content-Length: %d" % len(body)
    )
    raw.send(head)
    interim = b""
    while b"\r\n\r\n" not in interim:
        interim += raw.sock.recv(1024)
    assert interim.startswith(b"HTTP/1.1 100")
    raw.buffer = interim.partition(b"\r\n\r\n")[2]
    raw.send(body)
    a = raw.answer()
    assert a.status == 200 and a.json()["id"] == "wait"


def test_a_body_declared_over_the_limit_is_a_413_before_it_is_sent(server: str, raw: Raw) -> None:
    raw.send(
        b"POST " + V2.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n"
    )
    a = raw.answer()
    assert a.status == 413
    assert "999999999" in a.json()["error"]


def test_a_client_gone_before_its_answer_harms_no_one(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    register_paced("slow", 1.0, flags, delay_s=0.3)
    kiln.deployments.create("slow-api", model="slow/1", timeout_ms=5000)
    with serving(["slow-api"]) as live:
        (flags / "slow").touch()
        path = "/deployments/slow-api/predict"
        body = orjson.dumps({"request": {"f0": 2.0, "f1": 0.0, "f2": 0.0, "f3": 0.0}})
        for _ in range(5):  # each asks, then hangs up while the model works
            gone = Raw(live.url)
            gone.send(request(path, body))
            gone.close()
        (flags / "slow").unlink()
        time.sleep(0.5)
        other = Raw(live.url)
        other.send(request(path, body))
        a = other.answer()
        other.close()
        assert a.status == 200 and a.json()["predictions"] == [2.0]
        assert "Traceback" not in live.output()


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout_a_busy_one_is_not(
    server: str,
) -> None:
    """uvicorn's keep-alive timeout (5 s) holds with one timer per idle spell."""
    idle, busy = Raw(server), Raw(server)
    try:
        for conn in (idle, busy):
            conn.send(request(V2, v2_body(ROWS[0])))
            assert conn.answer().status == 200
        deadline = time.monotonic() + 6.5
        while time.monotonic() < deadline:  # busy asks every 0.5 s, idle says nothing
            time.sleep(0.5)
            busy.send(request(V2, v2_body(ROWS[1])))
            assert busy.answer().status == 200
        assert idle.closed_by_server()
        busy.send(request(V2, v2_body(ROWS[2])))
        assert busy.answer().status == 200
    finally:
        idle.close()
        busy.close()


class _Transport(asyncio.Transport):
    """What the protocol writes, kept; the connection as uvicorn hands it over."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_predictions_take_the_short_way_and_everything_else_asgi() -> None:
    """In process, so the way each request took can be seen: the cycle it left behind."""
    from uvicorn.config import Config
    from uvicorn.lifespan.on import LifespanOn
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
    from uvicorn.server import ServerState

    from kiln.serving import ServeConfig, build_app
    from kiln.serving._http_protocol import PredictionProtocol, _Answering

    register_linear("fraud")
    kiln.deployments.create("fraud-api", model="fraud/1")
    app = build_app(ServeConfig(deployments=("fraud-api",), log_predictions=False))

    async def main() -> list[tuple[str, bytes]]:
        config = Config(app=app, http=PredictionProtocol, access_log=False, log_level="warning")
        config.load()
        lifespan = LifespanOn(config)
        before = sys.getswitchinterval()
        await lifespan.startup()
        # while serving, a thread holding the GIL hands it back within 1 ms (not 5)
        assert sys.getswitchinterval() == pytest.approx(0.001)
        ways = []
        try:
            for data in (
                request(V2, v2_body(ROWS[0], "short")),
                chunked(V2, v2_body(ROWS[0], "chunked")),
                b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
                request("/v2/models/fraud-api/infer?x=1", v2_body(ROWS[0], "query")),
            ):
                transport = _Transport()
                protocol = PredictionProtocol(
                    config=config, server_state=ServerState(), app_state={}
                )
                protocol.connection_made(transport)
                protocol.data_received(data)
                for _ in range(200):
                    if transport.written.count(b"\r\n\r\n") and protocol.cycle.response_complete:
                        break
                    await asyncio.sleep(0.01)
                way = "short" if isinstance(protocol.cycle, _Answering) else "asgi"
                assert isinstance(protocol.cycle, (_Answering, RequestResponseCycle))
                ways.append((way, transport.written.split(b"\r\n", 1)[0]))
                protocol.connection_lost(None)
        finally:
            await lifespan.shutdown()
        assert sys.getswitchinterval() == before
        return ways

    ways = asyncio.run(main())
    assert ways == [
        ("short", b"HTTP/1.1 200 OK"),
        ("asgi", b"HTTP/1.1 200 OK"),
        ("asgi", b"HTTP/1.1 200 OK"),
        ("short", b"HTTP/1.1 200 OK"),
    ]
