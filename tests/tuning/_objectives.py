"""Objectives the tuning tests run, importable by worker processes and by `kiln tune
resume` (which loads a study's objective in a fresh process)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def quadratic(trial: Any) -> float:
    """Minimum 0 at x=0.3, y=-1, kind='b'."""
    x = trial.suggest_float("x", -2.0, 2.0)
    y = trial.suggest_int("y", -3, 3)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    return (x - 0.3) ** 2 + (y + 1) ** 2 + (0.0 if kind == "b" else 0.5)


def from_params(trial: Any) -> float:
    """For a study with a ``space``: reads the sampled params."""
    p = trial.params
    return (p["lr"] - 0.01) ** 2 * 1e4 + p["leaves"] / 100


def slow_quadratic(trial: Any) -> float:
    """Long enough for its params to reach the store while it runs (a trial's params
    are written at its end, or half a second into it)."""
    x = trial.suggest_float("x", -2.0, 2.0)
    time.sleep(0.6)
    return (x - 0.3) ** 2


def one_second(trial: Any) -> float:
    x = trial.suggest_float("x", -2.0, 2.0)
    time.sleep(float(os.environ.get("KILN_TEST_TRIAL_S", "1.0")))
    return (x - 0.3) ** 2


def curves(trial: Any) -> float:
    """A learning curve per trial: high 'offset' trials stay bad at every step."""
    offset = trial.suggest_float("offset", 0.0, 10.0)
    value = 0.0
    for step in range(8):
        value = offset + 1.0 / (step + 1)
        trial.report(value, step)
    return value


def auc_vs_latency(trial: Any) -> dict[str, float]:
    depth = trial.suggest_int("depth", 1, 12)
    width = trial.suggest_float("width", 0.0, 1.0)
    return {"auc": 1 - 1 / (depth + 1) - 0.1 * width, "latency_ms": depth * (1 + width)}


def flaky(trial: Any) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    if x > 0.5:
        raise RuntimeError(f"diverged at x={x:.3f}")
    return x


def broken(trial: Any) -> float:
    raise KeyError("no column 'label'")


def dies_once(trial: Any) -> float:
    """The worker process of the first trial to get here is killed (a real SIGKILL)."""
    x = trial.suggest_float("x", 0.0, 1.0)
    marker = Path(os.environ["KILN_TEST_MARKER"])
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), 9)
    return x


def with_model(trial: Any) -> float:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    c = trial.suggest_float("C", 1e-3, 10.0, log=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)
    model = LogisticRegression(C=c).fit(x[:150], y[:150])
    trial.log_model(model, input_example=x[:5])
    return float(model.score(x[150:], y[150:]))
