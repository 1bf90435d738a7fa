"""A client's mistake never hurts other clients: malformed requests against a live server.

Every malformed request is a 4xx counted as ``invalid``; none counts toward a circuit
breaker (a hair trigger here: one failure opens it, and there is no fallback, so a
counted mistake would turn the valid requests after it into 503s), a guard's error rate
(a canary that tolerates no error at all) or the failure metrics.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle, islice
from typing import Any

import orjson
import pytest
from _harness import FEATURES, frame, register_linear, serving

import kiln
from kiln.serving import Breaker, Guard

MALFORMED = 1000
JSON = "application/json"
ROW = [1.0, 2.0, -1.0, 0.5]
Case = tuple[str, bytes, str]  # path, body, content type


def _register_numpy(name: str, scale: float) -> None:
    """A model registered from a numpy example: one unnamed [n, 4] tensor."""
    from sklearn.linear_model import LogisticRegression

    x = frame(200).to_numpy()
    y = (x[:, 0] * scale + x[:, 1] > 0).astype(int)
    kiln.models.register(name, LogisticRegression().fit(x, y), input_example=x[:5])


def _tensor(**changes: Any) -> bytes:
    base = {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW}
    return orjson.dumps({"inputs": [{**base, **changes}]})


def _cases(name: str, native_ok: bool) -> tuple[list[Case], list[Case]]:
    """(valid, malformed) requests for every endpoint of deployment ``name``."""
    infer = f"/v2/models/{name}/infer"
    native = f"/deployments/{name}/predict"
    record = dict(zip(FEATURES, ROW, strict=True))
    valid: list[Case] = [
        (infer, _tensor(), JSON),
        (f"/v2/models/{name}/versions/1/infer", _tensor(shape=[2, 4], data=ROW * 2), JSON),
        ("/invocations", orjson.dumps({"instances": [ROW]}), JSON),
        ("/invocations", orjson.dumps({"inputs": [ROW, ROW]}), JSON),
    ]
    if native_ok:
        valid.append((native, orjson.dumps({"request": record}), JSON))
    malformed: list[Case] = [
        (infer, b"{not json", JSON),
        (infer, b"{}", JSON),
        (infer, b"[]", JSON),
        (infer, _tensor(shape=[0, 4], data=[]), JSON),
        (infer, _tensor(shape=[1, 3]), JSON),
        (infer, _tensor(shape=[1, 5], data=[*ROW, 1.0]), JSON),
        (infer, _tensor(datatype="BYTES", data=["a", "b", "c", "d"]), JSON),
        (infer, _tensor(datatype="FP99"), JSON),
        (infer, _tensor(data=["1", 2, 3, 4]), JSON),
        (
            infer,
            b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP64","data":[NaN,1,2,3]}]}',
            JSON,
        ),
        (f"/v2/models/{name}/versions/9/infer", _tensor(), JSON),
        ("/invocations", b"{}", JSON),
        ("/invocations", b"{not json", JSON),
        ("/invocations", orjson.dumps({"instances": []}), JSON),
        ("/invocations", orjson.dumps({"inputs": [[1.0, 2.0, 3.0]]}), JSON),
        ("/invocations", orjson.dumps({"instances": [["a", 2, 3, 4]]}), JSON),
        ("/invocations", orjson.dumps({"dataframe_split": {"columns": ["f0"], "data": []}}), JSON),
        ("/invocations", orjson.dumps({"instances": [ROW], "inputs": [ROW]}), JSON),
        ("/invocations", b"f0,f1\n1,2\n", "text/plain"),
        (native, b"{}", JSON),
        (native, b"[1, 2]", JSON),
        (native, orjson.dumps({"request": []}), JSON),
        (native, orjson.dumps({"request": {}}), JSON),
        (native, orjson.dumps({"request": {**record, "f0": "x"}}), JSON),
        (native, orjson.dumps({"request": {**record, "extra": 1}}), JSON),
        (native, orjson.dumps({"request": {**record, "f2": None}}), JSON),
        (native, orjson.dumps({"entities": {"user": 1}, "request": record}), JSON),
    ]
    return valid, malformed


def _sample(text: str, name: str, labels: str) -> float:
    """The summed value of ``name`` samples whose labels contain every ``k="v"`` given."""
    total = 0.0
    wanted = labels.split(",") if labels else []
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and all(w in match.group(1) for w in wanted):
            total += float(match.group(2))
    return total


@pytest.mark.parametrize("kind", ["dataframe", "numpy"])
def test_malformed_requests_never_count_as_failures(kind: str) -> None:
    if kind == "dataframe":
        register_linear("m", scale=1.0)
        register_linear("m", scale=-1.0)
    else:
        _register_numpy("m", 1.0)
        _register_numpy("m", -1.0)
    kiln.deployments.create(
        "m-api", model="m/1", breaker=Breaker(consecutive_failures=1, min_calls=1, open_s=30)
    )
    guard = Guard(max_error_rate=0.0, min_requests=10, max_psi=None)
    kiln.deployments.canary("m-api", model="m/2", percent=50, guard=guard)
    valid, malformed = _cases("m-api", native_ok=kind == "dataframe")
    bad = list(islice(cycle(malformed), MALFORMED))
    good = list(islice(cycle(valid), MALFORMED))
    work = [case for pair in zip(bad, good, strict=True) for case in pair]
    with serving(["m-api"]) as server, server.client() as http:

        def send(case: Case) -> tuple[Case, int, str]:
            path, body, content_type = case
            r = http.post(path, content=body, headers={"content-type": content_type})
            return case, r.status_code, r.text

        # Eight requests at once, so malformed requests meet valid ones in batches.
        with ThreadPoolExecutor(8) as pool:
            done = list(pool.map(send, work))
        metrics = http.get("/metrics").text
        ready = http.get("/v2/models/m-api/ready")
    wrong = [
        (c[0], c[1][:80], status, text[:200]) for c, status, text in done[1::2] if status != 200
    ]
    assert not wrong, wrong[:5]
    refused = [(c[0], c[1][:80], status) for c, status, _ in done[::2] if not 400 <= status < 500]
    assert not refused, refused[:5]
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert _sample(metrics, "kiln_serving_requests_total", 'outcome="invalid"') == MALFORMED
    assert _sample(metrics, "kiln_serving_requests_total", 'outcome="ok"') == MALFORMED
    for outcome in ("error", "timeout", "fallback", "overloaded"):
        assert _sample(metrics, "kiln_serving_requests_total", f'outcome="{outcome}"') == 0
    assert _sample(metrics, "kiln_serving_errors_total", "") == 0
    breakers = re.findall(r"kiln_serving_breaker_state\{.*\} (\S+)", metrics)
    assert breakers and all(float(v) == 0.0 for v in breakers)
    # The guard judged only valid requests (error rate 0): the canary still runs.
    deployment = kiln.deployments.get("m-api")
    assert deployment.traffic.policy == "canary"
    assert "guard_breach" not in [e.kind for e in kiln.deployments.history("m-api")]
