"""``kiln ui``: the dashboard on uvicorn, saying where it listens once it does."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kiln.core import InvalidInput
from kiln.ui.app import UISettings, create_app

__all__ = ["TOKEN_ENV", "running", "serve_ui"]

TOKEN_ENV = "KILN_UI_TOKEN"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_ui(
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    token: str | None = None,
    allow_writes: bool = False,
    announce: bool = True,
) -> None:
    """Serve the dashboard until interrupted. Beyond this machine (``host`` not a loopback
    address) a token is required: ``token`` or the ``KILN_UI_TOKEN`` variable."""
    import uvicorn

    token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
    if token is None and not _loopback(host):
        raise InvalidInput(
            f"--host {host} serves beyond this machine: give a token with --token or "
            f"{TOKEN_ENV} (everyone who can reach the port could read every run otherwise)"
        )
    app = create_app(UISettings(token=token, allow_writes=allow_writes))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started and announce:
            bound = server.servers[0].sockets[0].getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            mode = "actions enabled" if allow_writes else "read-only"
            print(f"kiln ui: serving http://{shown}:{bound}/ ({mode})", flush=True)
        await task

    try:
        asyncio.run(run())
    except OSError as exc:
        raise InvalidInput(f"--host {host} --port {port}: cannot listen there: {exc}") from None


@contextmanager
def running(app: Any, host: str = "127.0.0.1", ready_timeout_s: float = 20.0) -> Iterator[str]:
    """``app`` on uvicorn in a background thread, on a free port of ``host``, until the
    block ends; yields its base URL (tests and benchmarks talk to a real server)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="kiln-ui", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"the dashboard did not start on {host} in {ready_timeout_s:g} s")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
