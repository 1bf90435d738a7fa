"""Local networking helpers shared by the demo, the tests and the benchmarks."""

from __future__ import annotations

import socket

__all__ = ["free_local_port"]


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment of asking.

    Another process may take it before the caller binds it; the servers Kiln starts on
    such a port are its own children, started right after, so that race is rare.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
