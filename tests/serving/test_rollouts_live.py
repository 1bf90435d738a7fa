"""Rollouts and fault tolerance on a live ``kiln serve``, under load from a second process.

Each test starts the server as users do (a subprocess on 127.0.0.1), changes traffic
through the SDK while ``_load.py`` posts continuously, and counts the answers by model
version and traffic arm.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from _harness import HERE, register_controlled, register_paced, serving

import kiln
from kiln.serving import Batching
from kiln.serving.predlog import read_predictions
from kiln.serving.traffic import key_point

ROW = {"f0": 1.0, "f1": 2.0, "f2": -1.0, "f3": 0.5}
URL = "/deployments/risk-api/predict"


def start_load(url: str, seconds: float, out: Path, row: dict[str, float] = ROW) -> Any:
    body = orjson.dumps({"request": row}).decode()
    return subprocess.Popen(
        [sys.executable, str(HERE / "_load.py"), url, body, str(seconds), str(out)]
    )


def answers(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def two_versions(flags: Path) -> None:
    """``risk/1`` answers ``f0``, ``risk/2`` answers ``2 * f0``; each has its own flags."""
    register_controlled("risk", 1.0, flags / "v1")
    register_controlled("risk", 2.0, flags / "v2")


def wait_for(predicate: Any, timeout_s: float, what: str) -> float:
    """Seconds until ``predicate()`` held (polled), or fail naming ``what``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what} not seen within {timeout_s} s")
        time.sleep(0.05)
    return time.monotonic() - start


def post(url: str, row: dict[str, float] = ROW) -> httpx.Response:
    """One request on a new connection (so that any worker may take it)."""
    with httpx.Client(timeout=10.0, headers={"connection": "close"}) as client:
        return client.post(url, json={"request": row})


def test_shadow_answers_are_only_logged_and_a_stalling_shadow_slows_nothing(
    tmp_path: Path,
) -> None:
    flags = tmp_path / "flags"
    two_versions(flags)
    kiln.deployments.create("risk-api", model="risk/1")
    out = tmp_path / "load.jsonl"
    probes: list[dict[str, Any]] = []
    with serving(["risk-api"]) as server, server.client() as http:

        def probe() -> str:
            probes.append(http.post(URL, json={"request": ROW}).json())
            return str(probes[-1]["arm"])

        load = start_load(server.url + URL, 6.0, out)
        kiln.deployments.shadow("risk-api", model="risk/2")
        wait_for(lambda: probe() == "primary", 5, "the shadow policy")
        time.sleep(1.0)  # the shadow answers promptly for a while ...
        stalled = time.time()
        (flags / "v2" / "stall").touch()  # ... then takes 2 s per predict
        load.wait(timeout=60)
        (flags / "v2" / "stall").unlink()
        metrics = http.get("/metrics").text
    # The stalled mirrors did not answer within the deployment's timeout (1 s).
    failed = re.search(
        r'kiln_serving_shadow_requests_total\{[^}]*outcome="error"[^}]*\} (\S+)', metrics
    )
    assert failed and float(failed.group(1)) > 0, metrics
    seen = answers(out)
    assert seen and all(a["status"] == 200 for a in seen), {a["status"] for a in seen}
    assert all(a["version"] == 1 and a["arm"] in ("champion", "primary") for a in seen)
    assert all(p["version"] == 1 for p in probes)
    # One sequential client: the gap between two request starts bounds the first's latency.
    starts = np.array([a["t"] for a in seen if a["t"] > stalled + 0.1])
    assert len(starts) > 20, len(starts)
    p99 = float(np.percentile(np.diff(starts), 99))
    assert p99 < 0.5, f"primary p99 {p99 * 1000:.0f} ms while the shadow stalls"
    # After the server stopped, its log holds the shadow's answers, never returned.
    logged = read_predictions(deployment="risk-api")
    shadow = logged.filter(logged.column("shadow"))
    primary = logged.filter(np.logical_not(logged.column("shadow").to_numpy(False)))
    assert shadow.num_rows > 0
    assert set(shadow.column("version").to_pylist()) == {2}
    assert set(shadow.column("arm").to_pylist()) == {"shadow"}
    assert set(primary.column("version").to_pylist()) == {1}
    mirrored = set(shadow.column("request_id").to_pylist())
    assert mirrored <= set(primary.column("request_id").to_pylist())
    assert primary.num_rows == len(seen) + len(probes)  # every answer is logged, once


def test_ab_split_is_sticky_by_key_and_even_over_keys(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    two_versions(flags)
    kiln.deployments.create("risk-api", model="risk/1")
    out = tmp_path / "load.jsonl"
    with serving(["risk-api"]) as server, server.client() as http:
        kiln.deployments.ab("risk-api", model="risk/2", sticky_key="f3", percent=50)
        wait_for(
            lambda: http.post(URL, json={"request": ROW}).json()["arm"] in ("A", "B"), 5, "A/B"
        )
        load = start_load(server.url + URL, 4.0, out)  # one user (f3 = 0.5), all along
        arms: dict[int, set[tuple[str, int]]] = {}
        for _ in range(2):
            for key in range(200):
                doc = http.post(URL, json={"request": {**ROW, "f3": float(key)}}).json()
                arms.setdefault(key, set()).add((doc["arm"], doc["version"]))
        load.wait(timeout=60)
    for key, got in arms.items():
        want = ("B", 2) if key_point(str(key)) < 50 else ("A", 1)
        assert got == {want}, (key, got)
    share = sum(("B", 2) in got for got in arms.values()) / len(arms)
    assert 0.4 < share < 0.6, share
    seen = answers(out)
    assert seen and all(a["status"] == 200 for a in seen)
    want = ("B", 2) if key_point("0.5") < 50 else ("A", 1)
    assert {(a["arm"], a["version"]) for a in seen} == {want}
    logged = read_predictions(deployment="risk-api")
    assert {"A", "B"} <= set(logged.column("arm").to_pylist())


def test_blue_green_switches_and_switches_back_within_two_seconds(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    two_versions(flags)
    kiln.deployments.create("risk-api", model="risk/1")
    out = tmp_path / "load.jsonl"
    with serving(["risk-api"]) as server:
        load = start_load(server.url + URL, 8.0, out)
        wait_for(lambda: out.exists() and len(answers(out)) >= 5, 30.0, "the first answers")
        switched = time.time()
        kiln.deployments.blue_green("risk-api", model="risk/2")
        time.sleep(2.6)
        back = time.time()
        kiln.deployments.switch_back("risk-api")
        load.wait(timeout=60)
    seen = answers(out)
    assert seen and all(a["status"] == 200 for a in seen), {a["status"] for a in seen}
    before = [a for a in seen if a["t"] < switched]
    green = [a for a in seen if switched + 2.0 < a["t"] < back]
    blue = [a for a in seen if a["t"] > back + 2.0]
    assert before and all(a["version"] == 1 for a in before)
    assert green and all(a["version"] == 2 and a["arm"] == "green" for a in green)
    assert blue and all(a["version"] == 1 and a["arm"] == "blue" for a in blue)
    cli = subprocess.run(
        [sys.executable, "-m", "kiln", "deployments", "history", "risk-api", "--json"],
        capture_output=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr.decode(errors="replace")
    events = orjson.loads(cli.stdout)
    assert [e["kind"] for e in events] == ["created", "switched", "switched_back"]
    assert [e["revision"] for e in events] == sorted({e["revision"] for e in events})
    assert events[1]["detail"]["challenger"] == "risk/2"


def test_overload_answers_503_with_retry_after_at_once_and_recovers(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    register_controlled("risk", 1.0, flags)
    kiln.deployments.create(
        "risk-api", model="risk/1", batching=Batching(max_queue=2), timeout_ms=10_000
    )
    with serving(["risk-api"]) as server:
        url = server.url + URL
        for _ in range(5):  # warm: the model has answered quickly before it stalls
            assert post(url).status_code == 200
        # 20 clients, each with its connection open, send one request at the same moment.
        clients = [httpx.Client(timeout=10.0) for _ in range(20)]
        for client in clients:
            assert client.get(server.url + "/v2/health/live").status_code == 200
        (flags / "stall").touch()
        go = threading.Barrier(len(clients))

        def timed(client: httpx.Client) -> tuple[httpx.Response, float]:
            go.wait()
            start = time.monotonic()
            r = client.post(url, json={"request": ROW})
            return r, time.monotonic() - start

        with ThreadPoolExecutor(len(clients)) as pool:
            results = list(pool.map(timed, clients))
        for client in clients:
            client.close()
        (flags / "stall").unlink()
        statuses = [r.status_code for r, _ in results]
        assert set(statuses) <= {200, 503}, statuses
        refused = [(r, s) for r, s in results if r.status_code == 503]
        assert len(refused) >= 10, statuses
        for r, seconds in refused:
            assert seconds < 1.0, f"a 503 took {seconds:.2f} s"
            assert int(r.headers["retry-after"]) >= 1
            assert "max_queue" in r.json()["error"]
        wait_for(lambda: post(url).status_code == 200, 5, "recovery")
        assert all(post(url).status_code == 200 for _ in range(10))


def test_sigterm_lets_requests_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    register_paced("risk", 1.0, flags, delay_s=0.5)
    kiln.deployments.create("risk-api", model="risk/1", timeout_ms=10_000)
    with serving(["risk-api"]) as server:
        (flags / "slow").touch()  # after loading: the server's load-time probe runs fast
        url = server.url + URL
        clients = [httpx.Client(timeout=20.0) for _ in range(6)]
        for client in clients:  # connections open before the requests go
            assert client.get(server.url + "/v2/health/live").status_code == 200
        go = threading.Barrier(len(clients))

        def call(client: httpx.Client) -> int | str:
            go.wait()
            try:
                return client.post(url, json={"request": ROW}).status_code
            except httpx.HTTPError as exc:
                return repr(exc)

        with ThreadPoolExecutor(len(clients)) as pool:
            pending = [pool.submit(call, client) for client in clients]
            # The first 0.5 s predict has started; the other requests wait in its queue.
            wait_for((flags / "started").exists, 10, "a slow predict")
            time.sleep(0.15)
            server.process.send_signal(signal.SIGTERM)
            results = [f.result(timeout=30) for f in pending]
        code = server.process.wait(timeout=30)
        for client in clients:
            client.close()
    assert results == [200] * 6, results
    assert code == 0, server.output()[-3000:]
    rows = [int(n) for n in (flags / "started").read_text().split()]
    assert sum(rows) == 6, rows  # all six reached the model (after the first began)


def test_a_canary_started_through_the_sdk_reaches_both_workers(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    two_versions(flags)
    kiln.deployments.create("risk-api", model="risk/1")
    out = tmp_path / "load.jsonl"

    def by_worker(n: int) -> dict[str, list[str]]:
        """Arms answered per worker, each request on a new connection ("close")."""
        arms: dict[str, list[str]] = {}
        for _ in range(n):
            doc = fresh.post(url, json={"request": ROW}).json()
            worker = doc["request_id"].split("-")[0]  # the answering process's pid, in hex
            arms.setdefault(worker, []).append(doc["arm"])
        return arms

    with (
        serving(["risk-api"], workers=2) as server,
        httpx.Client(timeout=10.0, headers={"connection": "close"}) as fresh,
    ):
        url = server.url + URL
        load = start_load(url, 4.5, out)
        before = by_worker(20)
        assert all(arm == "champion" for arms in before.values() for arm in arms)
        # All of the traffic, so that every answer after the 2 s tells the change arrived.
        kiln.deployments.canary("risk-api", model="risk/2", percent=100)
        time.sleep(2.0)
        after = by_worker(40)
        load.wait(timeout=60)
    assert server.process.returncode == 0  # SIGTERM: workers drained, supervisor exits 0
    assert len(after) == 2, {w: len(a) for w, a in after.items()}
    for worker, arms in after.items():
        assert set(arms) == {"canary"}, (worker, arms)
    seen = answers(out)
    assert seen and all(a["status"] == 200 for a in seen), {a["status"] for a in seen}
    assert {a["version"] for a in seen} <= {1, 2}
