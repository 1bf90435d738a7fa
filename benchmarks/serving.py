"""Serving benchmark: `kiln serve` under load from wrk, beside the HTTP floor and MLflow.

    python benchmarks/serving.py [--quick] [--duration 20] [--workers 1 2]
        [--mlflow-python PATH] [--write docs/benchmarks.md]
    python benchmarks/serving.py --spread 8 [--workers 2] [--write docs/benchmarks.md]

A LightGBM binary classifier (100 trees, 31 leaves, 20 float features, trained on
generated data) is registered in a temporary Kiln home and deployed. Every server runs as
a separate process on 127.0.0.1 and wrk (another process, Lua-scripted bodies) loads it
for ``--duration`` seconds per point after a warm-up. For each worker count in
``--workers``, these servers run with that many workers, one after the other:

(1) the HTTP floor (`_http_floor.py`): a bare ASGI app on the same uvicorn stack as
    `kiln serve` (httptools, uvloop, no access log) that reads and parses the same JSON
    bodies and answers a fixed prediction, loaded with single-row requests at
    concurrency 64: what any Python JSON server on this machine can do at best;
(2) `kiln serve`, prediction log on as in production: single-row Open Inference Protocol
    v2 requests at concurrency 1, 8 and 64, and the same through the MLflow protocol
    (`/invocations`, `dataframe_split`); 100-row requests at concurrency 8 (rows/s); the
    native endpoint with an online lookup of 8 features per request at concurrency 8;
(3) `mlflow models serve --workers N` (from the interpreter given by ``--mlflow-python``,
    which must have mlflow and lightgbm) with the same model and the same `/invocations`
    loads;
(4) the HTTP floor without ASGI (`_http_floor.py`'s ``Protocol``): the same fixed answer
    from uvicorn's httptools protocol's parser callbacks, the way `kiln serve` answers
    predictions (single-row v2 bodies at concurrency 64);
(5) the batching ceiling (`_batching_ceiling.py`): the same uvicorn stack and the same
    booster, doing only what a batching server cannot skip (parse, queue, one
    `Booster.predict` per event-loop turn, answer), single-row v2 requests at concurrency
    64: what batching and the model cost on this machine whoever serves them, so that
    Kiln's distance from the floor splits into that and what its own features cost.

The same-run in-process baselines are `Booster.predict` on 1 row and on 100,000 rows.

``--spread N`` measures instead how much the closest figures move between runs: N short
runs (``--spread-seconds`` each) of single-row v2 requests against one `kiln serve`
(prediction log on, and a second one with it off), the batching ceiling and the HTTP
floor with and without ASGI, reporting the range and median of each. Figures are
printed; ``--write`` puts them in the page.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import kiln
from _common import Stats, replace_section, verdict
from kiln.core import free_local_port

SEED = 11
N_FEATURES = 20
NAMES = [f"f{i:02d}" for i in range(N_FEATURES)]
USER_FEATURES = [f"u{i}" for i in range(8)]


@dataclass(frozen=True)
class Load:
    """What wrk measured at one point."""

    label: str
    concurrency: int
    rows_per_request: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int

    @property
    def rows_per_s(self) -> float:
        return self.requests_per_s * self.rows_per_request


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server not ready at {url} after {timeout_s} s:\n{log.read_text()[-3000:]}")


@contextmanager
def process(command: list[str], ready_url: str, log: Path, env: dict[str, str]) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(ready_url, proc, log)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_DURATION = re.compile(r"([\d.]+)(us|ms|s|m)\b")
_SCALE = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = _DURATION.match(text.strip())
    if match is None:
        raise SystemExit(f"cannot read wrk duration {text!r}")
    return float(match.group(1)) * _SCALE[match.group(2)]


def wrk(
    url: str, body: bytes | None, lua_body: str | None, concurrency: int, seconds: float, tmp: Path
) -> tuple[float, float, float, int, int]:
    """requests/s, p50 ms, p99 ms, errors, requests from one wrk run."""
    script = tmp / f"wrk-{concurrency}-{time.monotonic_ns()}.lua"
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    if body is not None:
        lines.append(f"wrk.body = [==[{body.decode()}]==]")
    if lua_body is not None:
        lines.append(lua_body)
    script.write_text("\n".join(lines) + "\n")
    threads = min(2, concurrency)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return rps, p50, p99, errors, total


def point(
    label: str,
    url: str,
    concurrency: int,
    rows: int,
    seconds: float,
    warmup: float,
    tmp: Path,
    body: bytes | None = None,
    lua_body: str | None = None,
) -> Load:
    wrk(url, body, lua_body, concurrency, warmup, tmp)
    rps, p50, p99, errors, total = wrk(url, body, lua_body, concurrency, seconds, tmp)
    print(
        f"  {label:<34} c={concurrency:<3} {rps:>9.0f} req/s  p50 {p50:6.2f} ms  "
        f"p99 {p99:7.2f} ms  errors {errors}",
        flush=True,
    )
    return Load(label, concurrency, rows, rps, p50, p99, errors, total)


def v2_body(x: np.ndarray) -> bytes:
    return orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP64",
                    "data": x.ravel().tolist(),
                }
            ]
        }
    )


def mlflow_body(x: np.ndarray) -> bytes:
    return orjson.dumps({"dataframe_split": {"columns": NAMES, "data": x.tolist()}})


# -- the model and the features ------------------------------------------------------------


def train(rng: np.random.Generator) -> tuple[lgb.Booster, np.ndarray]:
    x = rng.standard_normal((20_000, N_FEATURES))
    logits = x[:, :5] @ np.array([1.5, -2.0, 1.0, 0.5, -1.0]) + 0.3 * x[:, 5] * x[:, 6]
    y = (logits + rng.standard_normal(len(x)) > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 31, "verbose": -1, "seed": SEED}
    booster = lgb.train(params, lgb.Dataset(x, y, feature_name=NAMES), num_boost_round=100)
    return booster, x


def in_process(booster: lgb.Booster, x: np.ndarray) -> tuple[Stats, float]:
    """Seconds per 1-row predict, and rows/s on 100,000 rows."""
    one = x[:1]
    for _ in range(200):
        booster.predict(one)
    samples = []
    for i in range(2000):
        row = x[i : i + 1]
        start = time.perf_counter()
        booster.predict(row)
        samples.append(time.perf_counter() - start)
    bulk = np.tile(x, (5, 1))[:100_000]
    times = []
    for _ in range(5):
        start = time.perf_counter()
        booster.predict(bulk)
        times.append(time.perf_counter() - start)
    return Stats(tuple(samples)), len(bulk) / float(np.median(times))


def setup_features(root: Path, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """``user_stats`` with 8 float features for 10,000 users, materialized; a model on them."""
    now = datetime.now(UTC).replace(microsecond=0)
    users = 10_000
    values = rng.standard_normal((users, len(USER_FEATURES)))
    stamps = pa.array([now - timedelta(hours=1)] * users, pa.timestamp("us", tz="UTC"))
    table = {"user_id": pa.array(np.arange(users)), "event_timestamp": stamps, "created": stamps}
    for j, name in enumerate(USER_FEATURES):
        table[name] = pa.array(values[:, j])
    path = root / "user_stats.parquet"
    pq.write_table(pa.table(table), path)
    user = kiln.Entity("user", join_keys=["user_id"])
    view = kiln.FeatureView(
        "user_stats",
        entities=[user],
        source=kiln.ParquetSource(str(path), created="created"),
        schema=[kiln.Field(f, "float64") for f in USER_FEATURES],
        ttl="2d",
    )
    fs = kiln.FeatureStore()
    fs.apply([user, view])
    fs.materialize(end=now)
    return [f"user_stats:{f}" for f in USER_FEATURES], values


# -- mlflow ---------------------------------------------------------------------------------------

_SAVE_MLFLOW = textwrap.dedent(
    """
    import sys
    import lightgbm as lgb
    import mlflow.lightgbm
    booster = lgb.Booster(model_file=sys.argv[1])
    mlflow.lightgbm.save_model(booster, sys.argv[2])
    """
)


def mlflow_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import mlflow; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


# -- the servers ---------------------------------------------------------------------------

BENCH_DIR = Path(__file__).resolve().parent
# What uvicorn runs the floor with: the options `kiln serve` gives uvicorn.
UVICORN_OPTIONS = ["--loop", "uvloop", "--no-access-log"]


@dataclass(frozen=True)
class Spec:
    """One load point: which path, how many connections, which body."""

    key: str
    label: str
    path: str
    concurrency: int
    rows: int
    body: bytes | None = None
    lua: str | None = None


@dataclass(frozen=True)
class Round:
    """Every server's loads at one worker count, keyed like ``v2-64``."""

    workers: int
    floor: dict[str, Load]
    bare: dict[str, Load]  # the floor without ASGI
    ceiling: dict[str, Load]
    kiln: dict[str, Load]
    mlflow: dict[str, Load]


NATIVE_LUA = (
    "request = function()\n"
    "  local body = '{\"entities\": {\"user_id\": ' .. math.random(0, 9999) .. '}}'\n"
    "  return wrk.format(nil, nil, nil, body)\n"
    "end"
)


def kiln_command(port: int, workers: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "kiln", "serve", "bench", "bench-native", "--port", str(port),
        "--workers", str(workers), "--default", "bench", *extra,
    ]  # fmt: skip


def uvicorn_command(app: str, port: int, workers: int, http: str = "httptools") -> list[str]:
    """A benchmark app under uvicorn with the options `kiln serve` gives it."""
    return [
        sys.executable, "-m", "uvicorn", app, "--app-dir", str(BENCH_DIR),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--lifespan", "off", "--log-level", "warning", "--http", http, *UVICORN_OPTIONS,
    ]  # fmt: skip


def floor_command(port: int, workers: int) -> list[str]:
    return uvicorn_command("_http_floor:app", port, workers)


def bare_floor_command(port: int, workers: int) -> list[str]:
    """The floor without ASGI, as `kiln serve` answers predictions."""
    return uvicorn_command("_http_floor:app", port, workers, http="_http_floor:Protocol")


def ceiling_command(port: int, workers: int) -> list[str]:
    return uvicorn_command("_batching_ceiling:app", port, workers)


def mlflow_command(python: str, model_dir: Path, port: int, workers: int) -> list[str]:
    mlflow_bin = str(Path(python).parent / "mlflow")
    return [
        mlflow_bin, "models", "serve", "-m", str(model_dir), "-h", "127.0.0.1", "-p", str(port),
        "--workers", str(workers), "--env-manager", "local",
    ]  # fmt: skip


def run_points(url: str, specs: list[Spec], args: argparse.Namespace, tmp: Path) -> dict[str, Load]:
    return {
        s.key: point(
            s.label,
            f"{url}{s.path}",
            s.concurrency,
            s.rows,
            args.duration,
            args.warmup,
            tmp,
            s.body,
            s.lua,
        )
        for s in specs
    }


def kiln_specs(one: np.ndarray, hundred: np.ndarray) -> list[Spec]:
    infer = "/v2/models/bench/infer"
    specs = [Spec(f"v2-{c}", "Kiln v2, 1 row", infer, c, 1, v2_body(one)) for c in (1, 8, 64)]
    specs.append(Spec("v2-100", "Kiln v2, 100 rows", infer, 8, 100, v2_body(hundred)))
    specs += [
        Spec(f"inv-{c}", "Kiln /invocations, 1 row", "/invocations", c, 1, mlflow_body(one))
        for c in (1, 8, 64)
    ]
    specs.append(
        Spec("inv-100", "Kiln /invocations, 100 rows", "/invocations", 8, 100, mlflow_body(hundred))
    )
    specs.append(
        Spec(
            "native-8",
            "Kiln native, 8 online features",
            "/deployments/bench-native/predict",
            8,
            1,
            lua=NATIVE_LUA,
        )
    )
    return specs


def floor_specs(one: np.ndarray) -> list[Spec]:
    return [
        Spec("v2-64", "HTTP floor, v2 body", "/v2/models/bench/infer", 64, 1, v2_body(one)),
        Spec("inv-64", "HTTP floor, /invocations body", "/invocations", 64, 1, mlflow_body(one)),
    ]


def bare_specs(one: np.ndarray) -> list[Spec]:
    path = "/v2/models/bench/infer"
    return [Spec("v2-64", "HTTP floor without ASGI, v2 body", path, 64, 1, v2_body(one))]


def ceiling_specs(one: np.ndarray) -> list[Spec]:
    return [
        Spec("v2-64", "batching ceiling, v2 body", "/v2/models/bench/infer", 64, 1, v2_body(one))
    ]


def mlflow_specs(one: np.ndarray, hundred: np.ndarray, version: str) -> list[Spec]:
    specs = [
        Spec(f"inv-{c}", f"MLflow {version}, 1 row", "/invocations", c, 1, mlflow_body(one))
        for c in (1, 8, 64)
    ]
    specs.append(
        Spec("inv-100", f"MLflow {version}, 100 rows", "/invocations", 8, 100, mlflow_body(hundred))
    )
    return specs


# -- report ----------------------------------------------------------------------------------


def _times(value: float, base: Load | None) -> str:
    return f"{value / base.requests_per_s:.2f}x" if base else ""


def _row(load: Load, floor: Load | None = None, mlflow: Load | None = None) -> str:
    return (
        f"| {load.label} | {load.concurrency} | {load.requests_per_s:,.0f} | "
        f"{load.rows_per_s:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | {load.errors} | "
        f"{_times(load.requests_per_s, floor)} | {_times(load.requests_per_s, mlflow)} |"
    )


def _at_least(value: float, target: float) -> str:
    """Met or not for a floor-type target, with the margin."""
    if value >= target:
        return f"yes ({value / target - 1:.0%} over)"
    return f"**no** ({value / target:.0%} of the target)"


def round_section(r: Round, mlflow_ver: str | None) -> list[str]:
    k = r.kiln
    each = "one worker each" if r.workers == 1 else f"{r.workers} workers each"
    lines = [
        f"### {each.capitalize()}",
        "",
        f"The HTTP floor (with and without ASGI), the batching ceiling, "
        f"`kiln serve --workers {r.workers}` and "
        + (f"`mlflow models serve --workers {r.workers}`" if r.mlflow else "no MLflow")
        + ", one after the other.",
        "",
        "| load | concurrency | requests/s | rows/s | p50 ms | p99 ms | errors | vs floor "
        "| vs MLflow |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(load) for load in r.floor.values()]
    lines += [_row(load, r.floor.get(key)) for key, load in r.bare.items()]
    lines += [_row(load, r.floor.get(key)) for key, load in r.ceiling.items()]
    lines += [
        _row(load, r.floor.get(key), r.mlflow.get(key) if key.startswith("inv") else None)
        for key, load in k.items()
    ]
    lines += [_row(load) for load in r.mlflow.values()]
    v8, v64, inv64 = k["v2-8"], k["v2-64"], k["inv-64"]
    floor64 = r.floor["v2-64"]
    share = v64.requests_per_s / floor64.requests_per_s
    errors = sum(x.errors for x in k.values())
    lines += [
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| single-row p99 at concurrency 8 < 5 ms | {v8.p99_ms:.2f} ms | "
        f"{verdict(v8.p99_ms, 5.0)} |",
        f"| single-row p99 at concurrency 64 < 50 ms | {v64.p99_ms:.2f} ms | "
        f"{verdict(v64.p99_ms, 50.0)} |",
        f"| single-row throughput at concurrency 64 >= 60% of the HTTP floor (same uvicorn "
        f"stack, {each}) | {share:.0%} ({v64.requests_per_s:,.0f} vs "
        f"{floor64.requests_per_s:,.0f} req/s) | {_at_least(share, 0.6)} |",
    ]
    ml64 = r.mlflow.get("inv-64")
    if ml64 is not None:
        ratio = inv64.requests_per_s / ml64.requests_per_s
        lines.append(
            f"| single-row throughput at concurrency 64 >= 10x `mlflow models serve` "
            f"(MLflow {mlflow_ver}, {each}, same `/invocations` load) | {ratio:.1f}x "
            f"({inv64.requests_per_s:,.0f} vs {ml64.requests_per_s:,.0f} req/s) | "
            f"{_at_least(ratio, 10.0)} |"
        )
    else:
        lines.append(
            "| throughput vs `mlflow models serve` | not measured (no --mlflow-python) | — |"
        )
    b100, native = k["v2-100"], k["native-8"]
    lines += [
        f"| 100-row requests >= 100,000 rows/s | {b100.rows_per_s:,.0f} rows/s | "
        f"{_at_least(b100.rows_per_s, 100_000)} |",
        f"| native with 8 online features, p99 at concurrency 8 < 8 ms | {native.p99_ms:.2f} ms | "
        f"{verdict(native.p99_ms, 8.0)} |",
        f"| errors | {errors} | {'yes' if errors == 0 else '**no**'} |",
        "",
    ]
    bare64 = r.bare.get("v2-64")
    if bare64 is not None:
        lines += [
            "`kiln serve` answers predictions without ASGI: uvicorn's httptools protocol "
            "answers them from its parser callbacks (docs/serving.md). The floor it is held "
            "to above is the issue's, an ASGI app. Like for like, the same fixed answer "
            "from the same protocol's callbacks (`_http_floor.py`'s `Protocol`) reached "
            f"{bare64.requests_per_s:,.0f} req/s at concurrency 64, "
            f"{bare64.requests_per_s / floor64.requests_per_s:.2f}x the ASGI floor, and Kiln "
            f"{v64.requests_per_s / bare64.requests_per_s:.0%} of it.",
            "",
        ]
    ceiling64 = r.ceiling.get("v2-64")
    if ceiling64 is not None:
        lines += [
            f"Where the distance to the floor goes: the batching ceiling "
            f"(`benchmarks/_batching_ceiling.py`: parse, queue, one `Booster.predict` per "
            f"event-loop turn, answer; nothing else) reached "
            f"{ceiling64.requests_per_s / floor64.requests_per_s:.0%} of the floor at "
            f"concurrency 64 ({ceiling64.requests_per_s:,.0f} req/s), and Kiln "
            f"{v64.requests_per_s / ceiling64.requests_per_s:.0%} of the ceiling: the first "
            "is what batching and the model cost on this machine whoever serves them, the "
            "second what Kiln's validation, metrics, prediction log, breakers and timeouts "
            "cost.",
            "",
        ]
    return lines


def machine(load_avg: tuple[float, float]) -> str:
    return (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, LightGBM {lgb.__version__}, uvicorn "
        f"{metadata.version('uvicorn')}; load average {load_avg[0]:.1f} before, "
        f"{load_avg[1]:.1f} after (the load generator shares the machine)."
    )


def command_line() -> str:
    """How this run was started, for the page (paths shortened to their names)."""
    words = [w if not os.path.isabs(w) else Path(w).name for w in sys.argv[1:]]
    return " ".join(["python benchmarks/serving.py", *(w for w in words)])


def report(
    rounds: list[Round],
    one_row: Stats,
    bulk_rows_s: float,
    args: argparse.Namespace,
    mlflow_ver: str | None,
    load_avg: tuple[float, float],
) -> str:
    lines = [
        "## Serving",
        "",
        f"{machine(load_avg)} Command: `{command_line()}`. wrk on 127.0.0.1, "
        f"{args.duration:g} s per point after a {args.warmup:g} s warm-up; `kiln serve` with "
        "the prediction log on. In each comparison every server runs the same number of "
        "uvicorn workers; the HTTP floor is a bare ASGI app on the same uvicorn stack as "
        "`kiln serve` (httptools, uvloop) that parses the same JSON body and answers a fixed "
        "prediction (`benchmarks/_http_floor.py`).",
        "",
        f"In-process baselines, same run: `Booster.predict` on 1 row {one_row.median * 1e6:.0f} "
        f"µs median (p99 {one_row.pct(99) * 1e6:.0f} µs); on 100,000 rows "
        f"{bulk_rows_s:,.0f} rows/s.",
        "",
    ]
    for r in rounds:
        lines += round_section(r, mlflow_ver)
    return "\n".join(lines)


# -- the run --------------------------------------------------------------------------------


def setup(tmp: Path, rng: np.random.Generator) -> tuple[lgb.Booster, np.ndarray]:
    """Registers and deploys ``bench`` (the 20-feature model) and ``bench-native``."""
    kiln.configure(home=tmp / "home")
    booster, x = train(rng)
    kiln.models.register("bench", booster, input_example=pd.DataFrame(x[:5], columns=NAMES))
    kiln.models.set_alias("bench", "champion", version=1)
    features, _ = setup_features(tmp, rng)
    booster8 = lgb.train(
        {"objective": "binary", "num_leaves": 31, "verbose": -1},
        lgb.Dataset(
            rng.standard_normal((5000, 8)), rng.integers(0, 2, 5000), feature_name=USER_FEATURES
        ),
        num_boost_round=100,
    )
    example8 = pd.DataFrame(rng.standard_normal((5, 8)), columns=USER_FEATURES)
    kiln.models.register("bench8", booster8, input_example=example8)
    kiln.deployments.create("bench", model="bench@champion")
    kiln.deployments.create("bench-native", model="bench8/1", features=features)
    return booster, x


def serve_round(
    workers: int,
    x: np.ndarray,
    args: argparse.Namespace,
    tmp: Path,
    env: dict[str, str],
    mlflow_model: tuple[Path, str] | None,
) -> Round:
    one, hundred = x[:1], x[:100]
    print(f"-- {workers} worker(s) each", flush=True)
    port = free_local_port()
    url = f"http://127.0.0.1:{port}"
    with process(floor_command(port, workers), f"{url}/", tmp / "floor.log", env):
        floor = run_points(url, floor_specs(one), args, tmp)
    port = free_local_port()
    url = f"http://127.0.0.1:{port}"
    with process(bare_floor_command(port, workers), f"{url}/", tmp / "bare.log", env):
        bare = run_points(url, bare_specs(one), args, tmp)
    port = free_local_port()
    url = f"http://127.0.0.1:{port}"
    with process(ceiling_command(port, workers), f"{url}/", tmp / "ceiling.log", env):
        ceiling = run_points(url, ceiling_specs(one), args, tmp)
    port = free_local_port()
    url = f"http://127.0.0.1:{port}"
    with process(kiln_command(port, workers), f"{url}/v2/health/ready", tmp / "kiln.log", env):
        kiln_loads = run_points(url, kiln_specs(one, hundred), args, tmp)
    mlflow_loads: dict[str, Load] = {}
    if mlflow_model is not None:
        model_dir, version = mlflow_model
        port = free_local_port()
        url = f"http://127.0.0.1:{port}"
        command = mlflow_command(args.mlflow_python, model_dir, port, workers)
        # mlflow starts `uvicorn` by name: its own environment's scripts come first.
        menv = {**env, "PATH": f"{Path(args.mlflow_python).parent}{os.pathsep}{env['PATH']}"}
        with process(command, f"{url}/ping", tmp / "mlflow.log", menv):
            mlflow_loads = run_points(url, mlflow_specs(one, hundred, version), args, tmp)
    return Round(workers, floor, bare, ceiling, kiln_loads, mlflow_loads)


def prepare_mlflow(python: str, booster: lgb.Booster, tmp: Path) -> tuple[Path, str]:
    """The same booster saved as an MLflow model by MLflow's own environment."""
    model_file, model_dir = tmp / "booster.txt", tmp / "mlflow-model"
    booster.save_model(str(model_file))
    subprocess.run([python, "-c", _SAVE_MLFLOW, str(model_file), str(model_dir)], check=True)
    return model_dir, mlflow_version(python)


# -- run-to-run spread --------------------------------------------------------------------


def spread(
    workers: int, x: np.ndarray, args: argparse.Namespace, tmp: Path, env: dict[str, str]
) -> list[str]:
    """N short runs against five servers up side by side, interleaved, so each run's
    figures share the machine's state of that moment."""
    body = v2_body(x[:1])
    path = "/v2/models/bench/infer"
    ports = [free_local_port() for _ in range(5)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    runs: dict[str, list[float]] = {
        k: [] for k in ("p99", "p99-nolog", "kiln64", "ceiling64", "floor64", "bare64")
    }
    seconds = args.spread_seconds
    with (
        process(kiln_command(ports[0], workers), f"{urls[0]}/v2/health/ready", tmp / "k.log", env),
        process(
            kiln_command(ports[1], workers, "--no-prediction-log"),
            f"{urls[1]}/v2/health/ready",
            tmp / "k-nolog.log",
            env,
        ),
        process(floor_command(ports[2], workers), f"{urls[2]}/", tmp / "floor.log", env),
        process(ceiling_command(ports[3], workers), f"{urls[3]}/", tmp / "ceiling.log", env),
        process(bare_floor_command(ports[4], workers), f"{urls[4]}/", tmp / "bare.log", env),
    ):
        for url in urls:
            wrk(f"{url}{path}", body, None, 64, args.warmup, tmp)
        for i in range(args.spread):
            print(f"  run {i + 1}/{args.spread}", flush=True)
            runs["p99"].append(wrk(f"{urls[0]}{path}", body, None, 8, seconds, tmp)[2])
            runs["p99-nolog"].append(wrk(f"{urls[1]}{path}", body, None, 8, seconds, tmp)[2])
            runs["kiln64"].append(wrk(f"{urls[0]}{path}", body, None, 64, seconds, tmp)[0])
            runs["ceiling64"].append(wrk(f"{urls[3]}{path}", body, None, 64, seconds, tmp)[0])
            runs["floor64"].append(wrk(f"{urls[2]}{path}", body, None, 64, seconds, tmp)[0])
            runs["bare64"].append(wrk(f"{urls[4]}{path}", body, None, 64, seconds, tmp)[0])

    def ratio(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(runs[a], runs[b], strict=True)]

    each = "one worker each" if workers == 1 else f"{workers} workers each"

    def row(what: str, values: list[float], fmt: str) -> str:
        low, mid, high = min(values), statistics.median(values), max(values)
        return f"| {what} | {len(values)} | {low:{fmt}} | {mid:{fmt}} | {high:{fmt}} |"

    return [
        f"### Run-to-run spread, {each}",
        "",
        f"{args.spread} runs of {seconds:g} s each (`wrk -t2`), interleaved over five servers "
        f"up side by side: `kiln serve --workers {workers}` with the prediction log on, the "
        "same with `--no-prediction-log`, the batching ceiling, the HTTP floor and the HTTP "
        "floor without ASGI (which is how `kiln serve` answers predictions). The "
        "figures above are one run each; this is how far one run moves on this machine.",
        "",
        "| measure | runs | lowest | median | highest |",
        "|---|---|---|---|---|",
        row("single-row p99 at concurrency 8, ms", runs["p99"], ".2f"),
        row("the same without the prediction log, ms", runs["p99-nolog"], ".2f"),
        row("single-row requests/s at concurrency 64", runs["kiln64"], ",.0f"),
        row("batching ceiling requests/s at concurrency 64", runs["ceiling64"], ",.0f"),
        row("HTTP floor requests/s at concurrency 64", runs["floor64"], ",.0f"),
        row(
            "Kiln's share of the floor at concurrency 64 (same run)",
            ratio("kiln64", "floor64"),
            ".0%",
        ),
        row("HTTP floor without ASGI requests/s at concurrency 64", runs["bare64"], ",.0f"),
        row("Kiln's share of the floor without ASGI (same run)", ratio("kiln64", "bare64"), ".0%"),
        row("the ceiling's share of the floor (same run)", ratio("ceiling64", "floor64"), ".0%"),
        row("Kiln's share of the ceiling (same run)", ratio("kiln64", "ceiling64"), ".0%"),
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per point, 1 s warm-up")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="one comparison per count"
    )
    parser.add_argument("--mlflow-python", help="a Python with mlflow and lightgbm installed")
    parser.add_argument("--spread", type=int, metavar="N", help="measure the run-to-run spread")
    parser.add_argument("--spread-seconds", type=float, default=8.0)
    parser.add_argument("--write", type=Path, help="replace the serving section of this file")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.spread_seconds = 3.0, 1.0, 3.0
    if any(w < 1 for w in args.workers):
        raise SystemExit(f"--workers must be >= 1; got {args.workers}")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory(prefix="kiln-bench-serving-") as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "KILN_HOME": str(tmp / "home")}
        os.environ["KILN_HOME"] = env["KILN_HOME"]
        booster, x = setup(tmp, rng)
        booster.save_model(str(tmp / "ceiling-booster.txt"))
        env["KILN_BENCH_MODEL"] = str(tmp / "ceiling-booster.txt")
        if args.spread:
            body = [line for w in args.workers for line in spread(w, x, args, tmp, env)]
            head = f"{machine((load_before, os.getloadavg()[0]))} Command: `{command_line()}`."
            lines = ["## Serving: run-to-run spread", "", head, "", *body]
            section, name = "\n".join(lines), "serving-spread"
        else:
            one_row, bulk_rows_s = in_process(booster, x)
            mlflow_model = None
            if args.mlflow_python:
                mlflow_model = prepare_mlflow(args.mlflow_python, booster, tmp)
            rounds = [serve_round(w, x, args, tmp, env, mlflow_model) for w in args.workers]
            mlflow_ver = mlflow_model[1] if mlflow_model else None
            section = report(
                rounds, one_row, bulk_rows_s, args, mlflow_ver, (load_before, os.getloadavg()[0])
            )
            name = "serving"
    print(section)
    if args.write:
        replace_section(args.write, name, section)


if __name__ == "__main__":
    main()
