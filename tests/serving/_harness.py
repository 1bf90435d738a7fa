"""A real ``kiln serve`` subprocess on 127.0.0.1, and models to serve.

Tests drive the server with real HTTP clients; the process is the same one users start,
with the test's settings (its ``KILN_HOME``) in its environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

import kiln
from kiln.core import free_local_port
from kiln.registry import ModelVersion, PythonModel

HERE = Path(__file__).resolve().parent
FEATURES = ("f0", "f1", "f2", "f3")


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.standard_normal((rows, len(FEATURES))), columns=list(FEATURES))


def register_linear(name: str, scale: float = 1.0) -> ModelVersion:
    """A scikit-learn logistic regression on four float columns."""
    from sklearn.linear_model import LogisticRegression

    x = frame(200)
    y = (x["f0"] * scale + x["f1"] > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    return kiln.models.register(name, model, input_example=x.head(5), method="predict_proba")


class Controlled(PythonModel):
    """Answers ``f0 * factor``; fails or stalls while a flag file exists (breaker tests)."""

    def __init__(self, factor: float, flags: str) -> None:
        self.factor = factor
        self.flags = flags

    def predict(self, model_input: Any) -> Any:
        if os.path.exists(os.path.join(self.flags, "fail")):
            raise RuntimeError("failing on purpose")
        if os.path.exists(os.path.join(self.flags, "stall")):
            time.sleep(2.0)
        return np.asarray(model_input["f0"], dtype=np.float64) * self.factor


def register_controlled(name: str, factor: float, flags: Path) -> ModelVersion:
    flags.mkdir(parents=True, exist_ok=True)
    return kiln.models.register(name, Controlled(factor, str(flags)), input_example=frame(5))


class Server:
    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, **kw)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def serving(
    deployments: Sequence[str] = (),
    *,
    workers: int = 1,
    args: Sequence[str] = (),
    ready_timeout_s: float = 60.0,
    log_dir: Path | None = None,
) -> Iterator[Server]:
    """``kiln serve`` in a subprocess until the block ends (then SIGTERM, as in production)."""
    port = free_local_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    log = (log_dir or Path(env.get("KILN_HOME", "."))) / f"serve-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "kiln",
        "serve",
        *deployments,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--poll",
        "0.2",
        "--log-level",
        "info",
        *args,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"kiln serve exited with {process.returncode}:\n{server.output()}"
                )
            try:
                if httpx.get(f"{server.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"kiln serve not ready in {ready_timeout_s} s:\n{server.output()}"
                )
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Paced(Controlled):
    """A :class:`Controlled` model that also takes ``delay_s`` while a ``slow`` flag exists.

    Each slow predict first appends its row count to the file ``started`` in ``flags``.
    """

    def __init__(self, factor: float, flags: str, delay_s: float = 0.5) -> None:
        super().__init__(factor, flags)
        self.delay_s = delay_s

    def predict(self, model_input: Any) -> Any:
        if os.path.exists(os.path.join(self.flags, "slow")):
            with open(os.path.join(self.flags, "started"), "a") as fh:
                fh.write(f"{len(model_input)}\n")
            time.sleep(self.delay_s)
        return super().predict(model_input)


def register_paced(name: str, factor: float, flags: Path, delay_s: float = 0.5) -> ModelVersion:
    """Like :func:`register_controlled`, plus a ``slow`` flag (``delay_s`` per predict)."""
    flags.mkdir(parents=True, exist_ok=True)
    return kiln.models.register(name, Paced(factor, str(flags), delay_s), input_example=frame(5))
