"""`kiln serve` keeps serving the healthy deployments when one cannot be served.

Against a live `kiln serve` subprocess: a deployment whose model artifact fails its hash
check is reported not ready (its ready route, the server's ready route, a metric),
answers 503 with the reason, is logged once, and recovers by itself once the artifact is
whole again; the others answer throughout. Also the lines `kiln serve` prints, the exit
status for a deployment that does not exist, and serving a registry model directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from _harness import FEATURES, frame, register_linear, serving

import kiln
from kiln.core import free_local_port
from kiln.registry import ModelVersion

ROW = {"f0": 1.0, "f1": 2.0, "f2": -1.0, "f3": 0.5}
TENSOR = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}


def _blob(digest: str) -> Path:
    (path,) = Path(os.environ["KILN_HOME"]).rglob(digest)
    return path


def corrupt(version: ModelVersion, keep: ModelVersion) -> dict[Path, bytes]:
    """Overwrite the blobs of ``version`` that ``keep`` does not share; returns the
    original bytes, to put back."""
    shared = {f.digest for f in keep.files}
    saved: dict[Path, bytes] = {}
    for entry in version.files:
        if entry.digest in shared:
            continue
        path = _blob(entry.digest)
        saved[path] = path.read_bytes()
        path.chmod(0o644)
        path.write_bytes(b"not the bytes that were registered")
    assert saved
    return saved


def restore(saved: dict[Path, bytes]) -> None:
    for path, data in saved.items():
        path.write_bytes(data)


def wait_for(check: Callable[[], bool], timeout_s: float = 45.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s")
        time.sleep(0.2)


def predict(http: httpx.Client, name: str) -> httpx.Response:
    return http.post(f"/deployments/{name}/predict", json={"request": ROW})


def test_a_broken_deployment_is_not_ready_and_the_others_serve(tmp_path: Path) -> None:
    good = register_linear("good")
    bad = register_linear("bad", scale=-2.0)
    kiln.deployments.create("good-api", model="good/1")
    kiln.deployments.create("bad-api", model="bad/1")
    saved = corrupt(bad, keep=good)
    with serving(["good-api", "bad-api"]) as server, server.client() as http:
        # The healthy one started, and both are listed with their state.
        assert predict(http, "good-api").status_code == 200
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 200
        listed = ready.json()["deployments"]
        assert listed["good-api"] == {"ready": True, "model": "good/1"}
        assert listed["bad-api"]["ready"] is False and "sha256" in listed["bad-api"]["reason"]
        model_ready = http.get("/v2/models/bad-api/ready")
        assert model_ready.status_code == 503 and model_ready.json()["ready"] is False
        assert http.get("/v2/models/good-api/ready").json()["ready"] is True
        for answer in (
            predict(http, "bad-api"),
            http.post("/v2/models/bad-api/infer", json=TENSOR),
        ):
            assert answer.status_code == 503, answer.text
            assert "'bad-api' is not ready" in answer.json()["error"]
            assert "sha256" in answer.json()["error"]
            assert int(answer.headers["retry-after"]) >= 1
        metrics = http.get("/metrics").text
        assert 'kiln_serving_deployment_ready{deployment="bad-api"} 0.0' in metrics
        assert 'kiln_serving_deployment_ready{deployment="good-api"} 1.0' in metrics
        wait_for(lambda: "not serving bad-api: " in server.output(), 10.0)
        time.sleep(1.5)  # several polls and retries while it stays broken
        restore(saved)
        wait_for(lambda: predict(http, "bad-api").status_code == 200)
        assert http.get("/v2/models/bad-api/ready").json()["ready"] is True
        assert 'kiln_serving_deployment_ready{deployment="bad-api"} 1.0' in (
            http.get("/metrics").text
        )
        assert predict(http, "good-api").status_code == 200
    log = server.output()
    # One line when it broke and one when it recovered, however many polls in between.
    assert log.count("deployment 'bad-api' is not ready") == 1, log
    assert log.count("deployment 'bad-api' is ready") == 1, log
    assert "Traceback" not in log, log
    assert "serving good-api (good/1) at http://127.0.0.1:" in log


def test_a_change_that_cannot_be_served_keeps_the_version_serving(tmp_path: Path) -> None:
    v1 = register_linear("risk", scale=1.0)
    v2 = register_linear("risk", scale=-1.0)
    kiln.models.set_alias("risk", "champion", version=1)
    kiln.deployments.create("risk-api", model="risk@champion")
    saved = corrupt(v2, keep=v1)
    with serving(["risk-api"]) as server, server.client() as http:
        kiln.models.set_alias("risk", "champion", version=2)
        wait_for(lambda: "its change cannot be served" in server.output(), 10.0)
        time.sleep(1.5)
        answer = predict(http, "risk-api")
        assert answer.status_code == 200 and answer.json()["model"] == "risk/1"
        assert http.get("/v2/models/risk-api/ready").json()["ready"] is True
        restore(saved)
        wait_for(lambda: predict(http, "risk-api").json()["model"] == "risk/2")
    log = server.output()
    assert log.count("its change cannot be served") == 1, log
    assert "Traceback" not in log, log


def test_a_named_deployment_deleted_while_served_is_not_ready() -> None:
    register_linear("fraud")
    kiln.deployments.create("a-api", model="fraud/1")
    kiln.deployments.create("b-api", model="fraud/1")
    with serving(["a-api", "b-api"]) as server, server.client() as http:
        assert predict(http, "b-api").status_code == 200
        kiln.deployments.delete("b-api")
        wait_for(lambda: predict(http, "b-api").status_code == 503, 10.0)
        assert "'b-api' does not exist" in predict(http, "b-api").json()["error"]
        listed = http.get("/v2/health/ready").json()["deployments"]
        assert listed["b-api"]["ready"] is False and listed["a-api"]["ready"] is True
        assert predict(http, "a-api").status_code == 200
    assert server.output().count("deployment 'b-api' is not ready") == 1


MODULE = """
import numpy as np
from kiln.registry import PythonModel


class Doubler(PythonModel):
    def predict(self, model_input):
        return np.asarray(model_input["f0"], dtype=np.float64) * 2.0
"""


def test_a_model_whose_code_is_missing_here_is_not_ready_until_it_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An environment mismatch: the model's class is importable where it was registered
    and not (yet) in the server's environment."""
    here, server_path = tmp_path / "registered", tmp_path / "server"
    here.mkdir()
    server_path.mkdir()
    (here / "kiln_doubler.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(here))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(server_path), os.environ.get("PYTHONPATH", "")])
    )
    from kiln_doubler import Doubler  # type: ignore[import-not-found]

    register_linear("good")
    kiln.models.register("doubler", Doubler(), input_example=frame(5))
    kiln.deployments.create("good-api", model="good/1")
    kiln.deployments.create("doubler-api", model="doubler/1")
    with serving() as server, server.client() as http:
        assert predict(http, "good-api").status_code == 200
        answer = predict(http, "doubler-api")
        assert answer.status_code == 503
        assert "kiln_doubler" in answer.json()["error"], answer.text
        assert http.get("/v2/health/ready").json()["deployments"]["doubler-api"]["ready"] is False
        (server_path / "kiln_doubler.py").write_text(MODULE)  # the fix: install the code
        wait_for(lambda: predict(http, "doubler-api").status_code == 200)
        assert predict(http, "doubler-api").json()["predictions"] == [2.0]
    assert server.output().count("deployment 'doubler-api' is not ready") == 1


def test_serve_prints_one_line_per_deployment_with_its_url() -> None:
    with serving() as server:
        wait_for(lambda: "serving no deployment yet at http://" in server.output(), 10.0)
    register_linear("fraud")
    kiln.deployments.create("fraud-api", model="fraud/1")
    kiln.deployments.create("other-api", model="fraud/1")
    with serving() as server:
        wait_for(lambda: server.output().count("serving ") >= 2, 10.0)
        lines = [line for line in server.output().splitlines() if line.startswith("serving ")]
        assert lines == [
            f"serving fraud-api (fraud/1) at {server.url}/v2/models/fraud-api",
            f"serving other-api (fraud/1) at {server.url}/v2/models/other-api",
        ]


def test_serving_a_deployment_that_does_not_exist_is_one_line_and_exit_2() -> None:
    register_linear("fraud")
    kiln.deployments.create("fraud-api", model="fraud/1")
    for argv in (["frud-api"], ["--model", "ghost@champion"], ["fraud-api", "--default", "x"]):
        command = [sys.executable, "-m", "kiln", "serve", *argv, "--port", str(free_local_port())]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert done.stderr.startswith("kiln: error: "), done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert (
        "did you mean fraud-api"
        in subprocess.run(
            [sys.executable, "-m", "kiln", "serve", "frud-api"], capture_output=True, text=True
        ).stderr
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_a_registry_model_directly(workers: int) -> None:
    register_linear("fraud", scale=1.0)
    register_linear("fraud", scale=-1.0)
    kiln.models.set_alias("fraud", "champion", version=1)
    rows = frame(2, seed=3)
    want = {v: kiln.models.load(f"fraud/{v}").predict(rows).tolist() for v in (1, 2)}
    split = {"dataframe_split": {"columns": list(FEATURES), "data": rows.to_numpy().tolist()}}
    tensor = {
        "inputs": [
            {
                "name": "input",
                "shape": [2, 4],
                "datatype": "FP64",
                "data": rows.to_numpy().ravel().tolist(),
            }
        ]
    }
    native = {"request": rows.to_dict(orient="records")}
    with serving(workers=workers, args=["--model", "fraud@champion"]) as server:
        with server.client() as http:

            def answers(version: int) -> bool:
                v2 = http.post("/v2/models/fraud/infer", json=tensor)
                mlflow = http.post("/invocations", json=split)
                own = http.post("/deployments/fraud/predict", json=native)
                assert (v2.status_code, mlflow.status_code, own.status_code) == (200, 200, 200)
                expected = np.asarray(want[version])
                return (
                    own.json()["model"] == f"fraud/{version}"
                    and np.allclose(mlflow.json()["predictions"], expected)
                    and np.allclose(own.json()["predictions"], expected)
                    and np.allclose(
                        orjson.loads(v2.content)["outputs"][0]["data"], expected.ravel()
                    )
                )

            assert answers(1)
            assert http.get("/v2/models/fraud/ready").json()["ready"] is True
            assert kiln.deployments.list() == []  # nothing was stored
            kiln.models.set_alias("fraud", "champion", version=2)
            wait_for(lambda: all(answers(2) for _ in range(4)), 15.0)
        wait_for(lambda: "serving fraud (fraud/" in server.output(), 10.0)
