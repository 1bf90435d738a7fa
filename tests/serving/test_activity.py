"""What a deployment served, from its prediction log (per version and arm: requests,
rate, latency percentiles, fallback share, the requests per arm over time), and the live
servers of a Kiln home with their requests by outcome."""

from __future__ import annotations

import re
import socket
import time
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from _harness import FEATURES, register_linear, serving

import kiln
from kiln.errors import InvalidInput
from kiln.serving.predlog import Prediction, PredictionLog
from kiln.ui import create_app
from kiln.ui.server import running

UNTIL = datetime(2026, 5, 1, 12, tzinfo=UTC)


def _log(latencies: dict[tuple[int, str, bool], list[float]], rows: int = 1) -> None:
    log = PredictionLog(flush_interval_s=0.05)
    n = 0
    for (version, arm, shadow), values in latencies.items():
        for i, latency in enumerate(values):
            n += 1
            at = UNTIL - timedelta(minutes=59) + timedelta(seconds=i * 3)
            log.append_many(
                Prediction(
                    request_id=f"r{n}" if not shadow else f"r{n}s",
                    deployment="fraud-api",
                    model=f"fraud/{version}",
                    version=version,
                    arm=arm,
                    features={"f0": float(r)},
                    output=0.5,
                    latency_ms=latency,
                    at=at,
                    fallback=i % 10 == 0 and arm == "canary",
                    shadow=shadow,
                )
                for r in range(rows)
            )
    log.close()


def test_activity_counts_each_request_once_per_version_and_arm() -> None:
    rng = np.random.default_rng(3)
    champion = list(rng.uniform(1, 5, 900))
    challenger = list(rng.uniform(5, 50, 100))
    _log({(1, "champion", False): champion, (2, "canary", False): challenger}, rows=3)
    found = kiln.deployments.activity("fraud-api", window="1h", until=UNTIL, buckets=12)
    by_arm = {a.arm: a for a in found.arms}
    assert [(a.arm, a.side) for a in found.arms] == [
        ("champion", "champion"),
        ("canary", "challenger"),
    ]
    assert by_arm["champion"].requests == 900 and by_arm["champion"].rows == 2700
    assert by_arm["canary"].version == 2 and by_arm["canary"].requests == 100
    assert found.requests == 1000 and found.share("challenger") == pytest.approx(0.1)
    assert by_arm["champion"].per_second == pytest.approx(900 / 3600)
    assert by_arm["canary"].fallback_rate == pytest.approx(0.1)
    assert by_arm["champion"].fallback_rate == 0.0
    for arm, values in (("champion", champion), ("canary", challenger)):
        assert by_arm[arm].p50_ms == pytest.approx(np.quantile(values, 0.5), rel=0.05)
        assert by_arm[arm].p95_ms == pytest.approx(np.quantile(values, 0.95), rel=0.05)
    assert len(found.times) == 12 and found.times[0] == UNTIL - timedelta(hours=1)
    assert sum(found.timeline["champion"]) == 900 and sum(found.timeline["canary"]) == 100
    # 900 requests 3 s apart from minute 1 take 45 minutes: buckets 0..9 of 5 minutes.
    assert found.timeline["champion"][11] == 0 and found.timeline["champion"][1] == 100


def test_shadow_answers_are_their_own_lane_and_not_counted_twice() -> None:
    _log({(1, "primary", False): [2.0] * 50, (2, "shadow", True): [9.0] * 50})
    found = kiln.deployments.activity("fraud-api", window="1h", until=UNTIL)
    assert found.requests == 50 and found.share("champion") == 1.0
    assert {a.arm: (a.side, a.shadow) for a in found.arms} == {
        "primary": ("champion", False),
        "shadow": ("challenger", True),
    }
    assert sum(found.timeline["shadow"]) == 50


def test_a_quiet_window_has_no_arms_and_bad_arguments_name_themselves() -> None:
    _log({(1, "champion", False): [1.0] * 5})
    quiet = kiln.deployments.activity("fraud-api", since=UNTIL, until=UNTIL + timedelta(hours=1))
    assert quiet.arms == () and quiet.requests == 0 and quiet.timeline == {}
    assert kiln.deployments.activity("never-served", window="1d").arms == ()
    with pytest.raises(InvalidInput, match="window"):
        kiln.deployments.activity("fraud-api", window="soon")
    with pytest.raises(InvalidInput, match="buckets"):
        kiln.deployments.activity("fraud-api", buckets=0)
    with pytest.raises(InvalidInput, match="before until"):
        kiln.deployments.activity("fraud-api", since=UNTIL, until=UNTIL)
    with pytest.raises(InvalidInput, match="deployment name"):
        kiln.deployments.activity("../etc")


def test_a_live_server_is_found_and_its_requests_counted_by_outcome() -> None:
    register_linear("fraud")
    kiln.deployments.create("fraud-api", model="fraud/1")
    assert kiln.deployments.servers() == []
    with serving(["fraud-api"]) as server:
        deadline = datetime.now() + timedelta(seconds=10)
        while not kiln.deployments.servers() and datetime.now() < deadline:
            time.sleep(0.05)
        found = kiln.deployments.servers()
        assert [s.url for s in found] == [server.url]
        with server.client() as client:
            row = {f: 0.5 for f in FEATURES}
            for _ in range(7):
                ok = client.post("/deployments/fraud-api/predict", json={"request": row})
                assert ok.status_code == 200, ok.text
            for _ in range(3):
                bad = client.post("/deployments/fraud-api/predict", json={"request": {"f0": "x"}})
                assert bad.status_code == 400
        counts = kiln.deployments.server_counts("fraud-api")
        assert counts.unreachable == ()
        assert counts.total() == 10 and counts.total(arm="champion") == 7
        assert counts.counts[("fraud/1", "champion", "ok")] == 7
        assert counts.counts[("", "", "invalid")] == 3  # refused before an arm was chosen
        assert counts.error_rate() == 0.0  # the client's mistakes are not the model's errors
        with running(create_app()) as ui:  # the dashboard shows the same counts
            page = httpx.get(f"{ui}/deployments/fraud-api").text
        assert server.url in page and "(refused before routing)" in page
        # Outcomes are columns in name order (invalid, ok): the champion answered 7.
        cells = r'fraud/1</td>\s*<td class="num">0</td>\s*<td class="num">7</td>'
        assert re.search(cells, page), page
    assert kiln.deployments.servers() == []  # unregistered when it stopped
    gone = kiln.deployments.server_counts("fraud-api", among=found, timeout_s=0.5)
    assert gone.unreachable == (server.url,) and gone.counts == {}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/metrics", timeout=0.5)


def test_servers_that_hang_are_waited_for_together_and_named() -> None:
    """A server that accepts and never answers costs the page one timeout, not one each."""
    listeners = []
    for _ in range(3):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)  # connections queue in the backlog; nothing ever answers them
        listeners.append(sock)
    try:
        hung = [
            kiln.deployments.ServerInfo(
                url=f"http://127.0.0.1:{s.getsockname()[1]}", host="h", pid=1, started=0.0
            )
            for s in listeners
        ]
        began = time.perf_counter()
        counts = kiln.deployments.server_counts("fraud-api", among=hung, timeout_s=0.5)
        took = time.perf_counter() - began
    finally:
        for sock in listeners:
            sock.close()
    assert counts.unreachable == tuple(s.url for s in hung) and counts.counts == {}
    assert took < 1.2, f"three hung servers took {took:.2f} s with a 0.5 s timeout"
