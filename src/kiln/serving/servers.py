"""Where ``kiln serve`` processes listen, and what their metrics count.

A server that is ready writes one small file under ``KILN_HOME/serving/servers`` naming
its URL, host and process, and removes it when it stops; a file left by a process that
died is ignored (and removed) by the next reader on the same host. That is how the
dashboard finds the live servers of this Kiln home without configuration, and reads
their Prometheus metrics: requests by outcome (``ok``, ``fallback``, ``invalid``,
``overloaded``, ``timeout``, ``error``) per version and arm, the failures the
prediction log cannot hold because no answer was given.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from kiln.core import get_settings
from kiln.serving.specs import check_name

__all__ = ["ServerCounts", "ServerInfo", "register_server", "server_counts", "servers"]

_REQUESTS = "kiln_serving_requests"


@dataclass(frozen=True, kw_only=True)
class ServerInfo:
    """A live ``kiln serve``: its base URL, host name, process id and start (epoch s)."""

    url: str
    host: str
    pid: int
    started: float


@dataclass(frozen=True, kw_only=True)
class ServerCounts:
    """Requests one deployment was sent, summed over the live servers since each started:
    ``counts[(version, arm, outcome)]``. ``unreachable`` names the servers that did not
    answer (their requests are missing from the counts). ``version`` is the reference that
    answered (``fraud/3``); a request refused as the client's mistake has none (``""``)."""

    deployment: str
    servers: tuple[ServerInfo, ...]
    counts: dict[tuple[str, str, str], float] = field(default_factory=dict)
    unreachable: tuple[str, ...] = ()

    def total(self, *, version: str | None = None, arm: str | None = None) -> float:
        return sum(
            n
            for (v, a, _), n in self.counts.items()
            if (version is None or v == version) and (arm is None or a == arm)
        )

    def error_rate(self, *, version: str | None = None, arm: str | None = None) -> float:
        """Model failures and timeouts over requests the model was asked (refused
        requests, which are the client's mistake, are left out of both)."""
        asked = failed = 0.0
        for (v, a, outcome), n in self.counts.items():
            if (version is not None and v != version) or (arm is not None and a != arm):
                continue
            if outcome == "invalid":
                continue
            asked += n
            if outcome in ("error", "timeout"):
                failed += n
        return failed / asked if asked else 0.0


def _folder() -> Path:
    return get_settings().home / "serving" / "servers"


def register_server(url: str) -> Path:
    """Record that this process serves at ``url``; returns the file to remove at exit."""
    path = _folder() / f"{socket.gethostname()}-{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"url": url, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(orjson.dumps(payload))
    os.replace(tmp, path)  # a reader sees the whole file or none
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def servers() -> list[ServerInfo]:
    """The live ``kiln serve`` processes of this Kiln home, oldest first."""
    folder = _folder()
    if not folder.is_dir():
        return []
    here = socket.gethostname()
    found = []
    for path in folder.glob("*.json"):
        try:
            data = orjson.loads(path.read_bytes())
            info = ServerInfo(
                url=str(data["url"]),
                host=str(data["host"]),
                pid=int(data["pid"]),
                started=float(data["started"]),
            )
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # being written, or not ours
        if info.host == here and not _alive(info.pid):
            path.unlink(missing_ok=True)
            continue
        found.append(info)
    return sorted(found, key=lambda s: s.started)


def server_counts(
    deployment: str, *, among: Iterable[ServerInfo] | None = None, timeout_s: float = 1.0
) -> ServerCounts:
    """Scrape ``/metrics`` of every live server (or ``among``) for ``deployment``'s
    request counts by version, arm and outcome.

    The servers are asked at once, so a page waits for the slowest answer (at most
    ``timeout_s``), not for the sum of them.
    """
    check_name(deployment)
    chosen = tuple(servers() if among is None else among)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def scrape(server: ServerInfo) -> str | None:
        try:
            with opener.open(f"{server.url}/metrics", timeout=timeout_s) as response:
                text: str = response.read().decode()
                return text
        except (OSError, urllib.error.URLError):
            return None

    texts: list[str | None] = []
    if chosen:
        with ThreadPoolExecutor(min(len(chosen), 16), thread_name_prefix="kiln-scrape") as pool:
            texts = list(pool.map(scrape, chosen))
    counts: dict[tuple[str, str, str], float] = {}
    unreachable = []
    for server, text in zip(chosen, texts, strict=True):
        if text is None:
            unreachable.append(server.url)
            continue
        for family in text_string_to_metric_families(text):
            if family.name != _REQUESTS:
                continue
            for sample in family.samples:
                labels = sample.labels
                if not sample.name.endswith("_total") or labels.get("deployment") != deployment:
                    continue
                key = (labels.get("version", ""), labels.get("arm", ""), labels.get("outcome", ""))
                counts[key] = counts.get(key, 0.0) + float(sample.value)
    return ServerCounts(
        deployment=deployment, servers=chosen, counts=counts, unreachable=tuple(unreachable)
    )
