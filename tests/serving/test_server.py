"""`kiln serve` as users run it: a subprocess on 127.0.0.1 driven by real HTTP clients."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from _harness import FEATURES, HERE, frame, register_controlled, register_linear, serving

import kiln
from kiln.serving import Breaker, Fallback, Guard
from kiln.serving.predlog import read_predictions

ROW = {"f0": 1.0, "f1": 2.0, "f2": -1.0, "f3": 0.5}
PREDICT_BODY = orjson.dumps({"request": ROW}).decode()
NAN_BODY = b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP64","data":[NaN,1,2,3]}]}'


def start_load(url: str, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "_load.py"), url, PREDICT_BODY, str(seconds), str(out)]
    )


def answers(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture
def fraud() -> None:
    v1 = register_linear("fraud", scale=1.0)
    register_linear("fraud", scale=-1.0)
    kiln.models.set_alias("fraud", "champion", version=v1.version)
    kiln.deployments.create("fraud-api", model="fraud@champion")


def test_open_inference_protocol_with_the_triton_client(fraud: None) -> None:
    import tritonclient.http as triton

    x = frame(3, seed=5).to_numpy()
    want = kiln.models.load("fraud@champion").predict(frame(3, seed=5))
    with serving(["fraud-api"]) as server:
        client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("fraud-api")
        meta = client.get_model_metadata("fraud-api")
        assert [i["name"] for i in meta["inputs"]] == list(FEATURES)
        tensor = triton.InferInput("input", list(x.shape), "FP64")
        tensor.set_data_from_numpy(x, binary_data=False)
        out = triton.InferRequestedOutput("predict", binary_data=False)
        result = client.infer("fraud-api", inputs=[tensor], outputs=[out])
        np.testing.assert_allclose(result.as_numpy("predict"), want)
        tensor.set_data_from_numpy(x, binary_data=True)
        binary = client.infer("fraud-api", inputs=[tensor])
        np.testing.assert_allclose(binary.as_numpy("predict"), want)
        versioned = client.infer("fraud-api", inputs=[tensor], model_version="1")
        np.testing.assert_allclose(versioned.as_numpy("predict"), want)
        with pytest.raises(triton.InferenceServerException, match="does not serve version 7"):
            client.infer("fraud-api", inputs=[tensor], model_version="7")


def test_mlflow_and_native_protocols_answer_alike(fraud: None) -> None:
    want = kiln.models.load("fraud@champion").predict(frame(2, seed=1)).tolist()
    rows = frame(2, seed=1)
    with serving(["fraud-api"]) as server, server.client() as http:
        assert http.get("/ping").status_code == 200
        split = {"dataframe_split": {"columns": list(rows), "data": rows.to_numpy().tolist()}}
        records = {"dataframe_records": rows.to_dict(orient="records")}
        inputs = {"inputs": {c: rows[c].tolist() for c in rows}}
        for body in (split, records, inputs):
            r = http.post("/invocations", json=body)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["predictions"], want)
        r = http.post("/deployments/fraud-api/predict", json={"request": rows.to_dict("records")})
        assert r.status_code == 200, r.text
        doc = r.json()
        np.testing.assert_allclose(doc["predictions"], want)
        assert doc["model"] == "fraud/1" and doc["arm"] == "champion" and not doc["fallback"]
        assert doc["request_id"]
        spec = http.get("/openapi.json").json()
        assert any(p.startswith("/v2/models/") and p.endswith("/infer") for p in spec["paths"])


def test_bad_input_is_a_4xx_naming_the_field(fraud: None) -> None:
    kiln.deployments.update("fraud-api", max_body_bytes=4096)
    with serving(["fraud-api"]) as server, server.client() as http:
        infer = "/v2/models/fraud-api/infer"

        def tensor(**kw: Any) -> dict[str, Any]:
            base = {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}
            return {"inputs": [{**base, **kw}]}

        cases: list[tuple[str, bytes | dict[str, Any], str]] = [
            (infer, b"{not json", "not valid JSON"),
            (infer, {"nothing": 1}, "inputs"),
            (infer, tensor(datatype="FP99"), "FP99"),
            (infer, tensor(data=["a", "b", "c", "d"]), "input"),
            (infer, tensor(shape=[1, 3]), "shape"),
            (infer, NAN_BODY, "JSON"),
            ("/invocations", {"dataframe_split": {"columns": ["f0"], "data": [[1.0]]}}, "f1"),
            ("/invocations", {"rows": []}, "dataframe_split"),
            ("/deployments/fraud-api/predict", {"request": {**ROW, "extra": 1}}, "extra"),
            ("/deployments/fraud-api/predict", {"request": {"f0": 1.0}}, "f1"),
            # The logistic regression fails on NaN: a null is refused up front, by name.
            ("/deployments/fraud-api/predict", {"request": {**ROW, "f2": None}}, "'f2'"),
            ("/invocations", {"inputs": {**{k: [v] for k, v in ROW.items()}, "f1": [None]}}, "f1"),
            ("/deployments/nope/predict", {"request": ROW}, "nope"),
            (infer, tensor(shape=[300, 4], data=[0.5] * 1200), "limit"),
        ]
        for path, body, needle in cases:
            content = body if isinstance(body, bytes) else orjson.dumps(body)
            r = http.post(path, content=content, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
            doc = r.json()  # /invocations answers in MLflow's shape, {"message": ...}
            assert needle in doc.get("error", doc.get("message", "")), (path, doc)
        assert http.get("/v2/models/fraud-api/versions/x/ready").status_code == 400
        assert http.get("/nowhere").status_code == 404
        assert http.get("/v2/health/live").status_code == 200  # the worker is still alive


def test_an_alias_move_reaches_the_server_within_two_seconds_under_load(
    fraud: None, tmp_path: Path
) -> None:
    out = tmp_path / "load.jsonl"
    with serving(["fraud-api"], workers=2) as server:
        load = start_load(f"{server.url}/deployments/fraud-api/predict", 6.0, out)
        time.sleep(2.0)
        moved = time.time()
        kiln.models.set_alias("fraud", "champion", version=2)
        load.wait(timeout=60)
    seen = answers(out)
    assert seen and all(a["status"] == 200 for a in seen), {a["status"] for a in seen}
    late = [a for a in seen if a["t"] > moved + 2.0]
    assert late and all(a["version"] == 2 for a in late)
    assert any(a["version"] == 1 for a in seen if a["t"] < moved)


def test_a_failing_canary_is_rolled_back_by_its_guard_with_no_5xx(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    register_controlled("risk", 1.0, flags / "v1")
    register_controlled("risk", 2.0, flags / "v2")
    (flags / "v2" / "fail").touch()
    kiln.deployments.create(
        "risk-api", model="risk/1", fallback=Fallback(value=0.0), breaker=Breaker(open_s=0.5)
    )
    out = tmp_path / "load.jsonl"
    with serving(["risk-api"]) as server:
        guard = Guard(max_error_rate=0.1, min_requests=10, max_psi=None)
        kiln.deployments.canary("risk-api", model="risk/2", percent=50, guard=guard)
        load = start_load(f"{server.url}/deployments/risk-api/predict", 8.0, out)
        load.wait(timeout=60)
        assert kiln.deployments.get("risk-api").traffic.policy == "single"
        kinds = [e.kind for e in kiln.deployments.history("risk-api")]
        assert kinds[-1] == "guard_breach", kinds
        assert "error rate" in (kiln.deployments.history("risk-api")[-1].reason or "")
        with server.client() as http:
            metrics = http.get("/metrics").text
        assert 'kiln_serving_fallbacks_total{deployment="risk-api"' in metrics
    seen = answers(out)
    assert seen and all(a["status"] == 200 for a in seen)
    assert any(a["fallback"] for a in seen)
    tail = [a for a in seen if a["t"] > seen[-1]["t"] - 2.0]
    assert tail and all(a["version"] == 1 and not a["fallback"] for a in tail)


def test_an_open_breaker_serves_the_fallback_and_closes_again(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    register_controlled("risk", 3.0, flags)
    kiln.deployments.create(
        "risk-api",
        model="risk/1",
        fallback=Fallback(value=-1.0),
        breaker=Breaker(consecutive_failures=3, open_s=0.5),
    )
    with serving(["risk-api"]) as server, server.client() as http:
        url = "/deployments/risk-api/predict"
        assert http.post(url, json={"request": ROW}).json()["predictions"] == [3.0]
        (flags / "fail").touch()
        docs = [http.post(url, json={"request": ROW}).json() for _ in range(6)]
        assert all(d["fallback"] and d["predictions"] == [-1.0] for d in docs)
        assert 'kiln_serving_breaker_state{deployment="risk-api",version="risk/1"} 2.0' in (
            http.get("/metrics").text
        )
        (flags / "fail").unlink()
        time.sleep(0.7)
        healed = [http.post(url, json={"request": ROW}).json() for _ in range(3)]
        assert all(not d["fallback"] and d["predictions"] == [3.0] for d in healed)
    # Fallback answers are logged as such; the model's own answers as the model's.
    logged = read_predictions(deployment="risk-api")
    answered_by = logged.column("fallback").to_pylist()
    assert (answered_by.count(True), answered_by.count(False)) == (6, 4)


def test_every_answer_is_in_the_prediction_log(fraud: None) -> None:
    n = 150
    with serving(["fraud-api"]) as server, server.client() as http:
        for i in range(n):
            body = {"request": {**ROW, "f0": float(i)}, "request_id": f"r{i}"}
            assert http.post("/deployments/fraud-api/predict", json=body).status_code == 200
    # The server has stopped (SIGTERM): everything it answered is flushed.
    logged = read_predictions(deployment="fraud-api")
    assert logged.num_rows == n
    assert sorted(logged.column("request_id").to_pylist()) == sorted(f"r{i}" for i in range(n))
    assert set(logged.column("row").to_pylist()) == {0}
    features = logged.column("features").to_pylist()  # a struct of the typed inputs
    assert sorted(f["f0"] for f in features) == [float(i) for i in range(n)]
    # predict_proba: one double column per class, summing to 1 on each row.
    total = logged.column("output_0").to_numpy() + logged.column("output_1").to_numpy()
    np.testing.assert_allclose(total, np.ones(n))


def test_concurrent_answers_are_logged_once_each_with_their_own_values(fraud: None) -> None:
    """Requests answered in one batch are logged in one piece: still one row each."""
    n, clients = 400, 16
    url = "/v2/models/fraud-api/infer"

    def body(i: int) -> dict[str, Any]:
        data = [float(i), 2.0, -1.0, 0.5]
        return {
            "id": f"c{i}",
            "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": data}],
        }

    with serving(["fraud-api"]) as server:

        def send(i: int) -> str:
            with server.client() as http:
                r = http.post(url, json=body(i))
                assert r.status_code == 200, r.text
                return str(r.headers["kiln-model-version"])

        with ThreadPoolExecutor(clients) as pool:
            versions = set(pool.map(send, range(n)))
        with server.client() as http:
            metrics = http.get("/metrics").text
    assert versions == {"fraud/1"}
    sizes = dict(re.findall(r"kiln_serving_batch_size_(sum|count)\{[^}]*\} (\S+)", metrics))
    assert float(sizes["sum"]) == n and float(sizes["count"]) < n  # several per batch
    logged = read_predictions(deployment="fraud-api")
    assert logged.num_rows == n
    assert set(logged.column("fallback").to_pylist()) == {False}
    assert set(logged.column("model").to_pylist()) == {"fraud/1"}
    latencies = logged.column("latency_ms").to_pylist()
    assert all(0.0 <= ms < 60_000 for ms in latencies)
    # Timed finer than an event loop's millisecond clock: not whole milliseconds.
    assert sum(ms != round(ms) for ms in latencies) > n // 2
    f0 = [f["f0"] for f in logged.column("features").to_pylist()]
    assert sorted(f0) == [float(i) for i in range(n)]
    # Each row's output is its own input's answer, not a neighbour's in the batch.
    inputs = pd.DataFrame({"f0": f0, "f1": 2.0, "f2": -1.0, "f3": 0.5})
    want = kiln.models.load("fraud/1").predict(inputs)[:, 1]
    np.testing.assert_allclose(logged.column("output_1").to_numpy(), want, rtol=1e-12)


def test_without_a_fallback_a_failing_model_is_a_503_with_retry_after(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    register_controlled("risk", 2.0, flags)
    kiln.deployments.create("risk-api", model="risk/1", breaker=Breaker(consecutive_failures=2))
    (flags / "fail").touch()
    with serving(["risk-api"]) as server, server.client() as http:
        # Failing calls, then the open breaker: the same answer, never a 500.
        for _ in range(4):
            r = http.post("/deployments/risk-api/predict", json={"request": ROW})
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) >= 1
            assert "no fallback" in r.json()["error"]
