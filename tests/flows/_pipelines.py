"""Flows the tests run; importable by worker processes (they import this module by name).

Each step appends its task's name to ``<work>/ran.txt`` when it runs, so a test can count
what was computed (and what was reused) across processes.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import kiln


def mark(work: str, what: str) -> None:
    with open(Path(work) / "ran.txt", "a") as out:
        out.write(f"{what}\n")


def ran(work: str | Path) -> list[str]:
    path = Path(work) / "ran.txt"
    return path.read_text().split() if path.exists() else []


def flag(work: str, name: str) -> bool:
    return (Path(work) / name).exists()


@kiln.step
def load(work: str, n: int) -> pd.DataFrame:
    mark(work, "load")
    print(f"loading {n} rows")
    return pd.DataFrame({"x": np.arange(n, dtype=float), "y": np.arange(n) % 3})


@kiln.step
def features(work: str, df: pd.DataFrame, scale: float) -> np.ndarray:
    mark(work, "features")
    if flag(work, "fail-features"):
        raise RuntimeError("features failed on purpose")
    return df["x"].to_numpy() * scale


@dataclass
class Summary:
    total: float
    count: int


@kiln.step
def summarize(work: str, values: np.ndarray) -> Summary:
    mark(work, "summarize")
    return Summary(total=float(values.sum()), count=len(values))


@kiln.step
def report(work: str, total: float, count: int) -> dict[str, float]:
    mark(work, "report")
    return {"mean": total / count, "count": count}


@kiln.flow
def linear(work: str, n: int = 10, scale: float = 2.0) -> dict[str, float]:
    df = load(work, n)
    values = features(work, df, scale)
    summary = summarize(work, values)
    return report(work, summary.total, summary.count)


@kiln.step
def square(work: str, x: int) -> int:
    mark(work, f"square-{x}")
    return x * x


@kiln.step
def total(work: str, squares: list[int]) -> int:
    mark(work, "total")
    return sum(squares)


@kiln.step
def numbers(work: str, n: int) -> list[int]:
    mark(work, "numbers")
    return list(range(n))


@kiln.flow
def fan(work: str, n: int = 20) -> int:
    squares = square.map(work=work, x=list(range(n)))
    return total(work, squares)


@kiln.flow
def dynamic_fan(work: str, n: int = 5) -> int:
    items = numbers(work, n)
    squares = square.map(work=work, x=items.each())
    return total(work, squares)


@kiln.step(retries=2, retry_delay=0.01)
def flaky(work: str) -> str:
    """Fails its first two attempts (counted in a file), then answers."""
    path = Path(work) / "flaky-attempts"
    attempts = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempts))
    mark(work, f"flaky-{attempts}")
    if attempts < 3:
        raise ValueError(f"attempt {attempts} fails")
    return f"ok after {attempts}"


@kiln.flow
def retrying(work: str) -> str:
    return flaky(work)


@kiln.step(retries=1, retry_delay=0.01)
def dies_once(work: str) -> int:
    """The first attempt kills its own worker process, as an OOM kill would."""
    path = Path(work) / "died"
    mark(work, "dies_once")
    if not path.exists():
        path.write_text("1")
        os.kill(os.getpid(), signal.SIGKILL)
    return 7


@kiln.flow
def dying(work: str) -> int:
    return dies_once(work)


@kiln.step(timeout=1)
def sleepy(work: str, seconds: float) -> float:
    mark(work, "sleepy")
    time.sleep(seconds)
    return seconds


@kiln.flow
def slow(work: str, seconds: float = 30.0) -> float:
    return sleepy(work, seconds)


@kiln.step
def slow_step(work: str, previous: int, seconds: float) -> int:
    mark(work, f"slow-{previous + 1}")
    time.sleep(seconds)
    return previous + 1


@kiln.flow
def chain(work: str, steps: int = 5, seconds: float = 0.3) -> int:
    """Steps one after the other, each taking ``seconds``: a run to kill midway."""
    value = slow_step(work, 0, seconds)
    for _ in range(1, steps):
        value = slow_step(work, value, seconds)
    return value


@kiln.step
def weigh(x: int, weights: list[int], shift: int) -> int:
    return x * sum(weights) + shift


@kiln.flow
def weighted(work: str, n: int = 3, count: int = 3) -> int:
    """A list for every task (unmapped) beside two fanned out; ``count`` != ``n`` makes the
    fan-out's lengths differ once ``numbers`` has run."""
    items = numbers(work, n)
    weights = kiln.flows.unmapped([1, 2, 3])
    return total(work, weigh.map(x=items.each(), weights=weights, shift=list(range(count))))


@kiln.step
def read_training_data(n: int) -> pd.DataFrame:
    """Declares what it read, as ``TrainingSet.save`` does for a feature-store snapshot."""
    run = kiln.active_run()
    assert run is not None
    run.log_input("dataset", "train@abc123", name="train", rows=n)
    x = np.arange(n, dtype=float)
    return pd.DataFrame({"x": x, "y": 2 * x + 1})


@kiln.step
def fit_and_register(df: pd.DataFrame) -> str:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(df[["x"]], df["y"])
    return kiln.models.register("flow-model", model, input_example=df[["x"]].head()).ref


@kiln.flow
def train_and_register(n: int = 20) -> str:
    return fit_and_register(read_training_data(n))
