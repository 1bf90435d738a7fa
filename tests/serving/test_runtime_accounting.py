"""The runtime's per-batch accounting: requests answered together reach the circuit
breaker and the request metrics once per batch, and every request is counted once."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from _harness import register_linear
from test_metrics import key, samples

import kiln
from kiln.serving._runtime import Runtime
from kiln.tracking import default_client


def serve(names: list[str], requests: dict[str, int], clients: int) -> dict[str, Any]:
    """Answer ``requests[name]`` requests per deployment from ``clients`` concurrent callers;
    what the breaker and the metrics were told."""
    seen: dict[str, Any] = {"successes": [], "batched": [], "single": []}

    async def main() -> None:
        runtime = Runtime(names, client=default_client())
        await runtime.start()
        metrics = runtime.metrics
        answered, single = metrics.observe_answered, metrics.observe_request

        def batched(deployment: str, version: Any, arm: str, seconds: np.ndarray) -> None:
            seen["batched"].append(len(seconds))
            answered(deployment, version, arm, seconds)

        def one(*args: Any) -> None:
            seen["single"].append(args)
            single(*args)

        metrics.observe_answered = batched  # type: ignore[method-assign]
        metrics.observe_request = one  # type: ignore[method-assign]
        breaker = runtime.live[names[0]].champion.breaker
        success = breaker.record_success

        def counted(n: int = 1) -> None:
            seen["successes"].append(n)
            success(n)

        breaker.record_success = counted  # type: ignore[method-assign]
        try:
            work = [(name, i) for name, count in requests.items() for i in range(count)]

            async def client(c: int) -> None:
                for name, i in work[c::clients]:
                    row = np.array([[float(i), 2.0, -1.0, 0.5]])
                    answer = await runtime.infer(name, row, request_id=f"{name}-{i}")
                    assert answer.request_id == f"{name}-{i}" and not answer.fallback

            await asyncio.gather(*(client(c) for c in range(clients)))
            seen["rendered"] = samples(metrics.render()[0])
        finally:
            await runtime.stop()

    asyncio.run(main())
    return seen


def test_each_request_is_counted_once_though_batches_are_accounted_whole() -> None:
    register_linear("fraud")
    kiln.deployments.create("fraud-api", model="fraud/1")
    seen = serve(["fraud-api"], {"fraud-api": 200}, clients=16)

    assert sum(seen["successes"]) == 200  # the breaker heard of every success...
    assert len(seen["successes"]) < 200  # ...in fewer calls than requests
    assert sum(seen["batched"]) == 200 and max(seen["batched"]) > 1
    assert seen["single"] == []  # no request was counted on its own as well
    labels = {"deployment": "fraud-api", "version": "fraud/1", "arm": "champion"}
    rendered = seen["rendered"]
    assert rendered[key("kiln_serving_requests_total", **labels, outcome="ok")] == 200
    assert rendered[key("kiln_serving_request_duration_seconds_count", **labels)] == 200


def test_a_batch_shared_by_two_deployments_is_accounted_request_by_request() -> None:
    """One version serves both, so their requests share batches: each is counted under
    its own deployment, once."""
    register_linear("fraud")
    kiln.deployments.create("fraud-api", model="fraud/1")
    kiln.deployments.create("fraud-eu", model="fraud/1")
    seen = serve(["fraud-api", "fraud-eu"], {"fraud-api": 60, "fraud-eu": 60}, clients=16)

    assert sum(seen["successes"]) == 120  # one breaker per version, shared by both
    rendered = seen["rendered"]
    for name in ("fraud-api", "fraud-eu"):
        labels = {"deployment": name, "version": "fraud/1", "arm": "champion"}
        assert rendered[key("kiln_serving_requests_total", **labels, outcome="ok")] == 60
        assert rendered[key("kiln_serving_request_duration_seconds_count", **labels)] == 60
    assert seen["single"]  # the mixed batches were counted request by request
