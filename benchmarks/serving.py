"""Serving benchmark: `kiln serve` under load from wrk, beside `mlflow models serve`.

    python benchmarks/serving.py [--quick] [--duration 20] [--workers 1]
        [--mlflow-python PATH] [--write docs/benchmarks.md]

A LightGBM binary classifier (100 trees, 31 leaves, 20 float features, trained on
generated data) is registered in a temporary Kiln home and deployed; `kiln serve` runs
as a separate process on 127.0.0.1 and wrk (another process, Lua-scripted bodies) loads
it for ``--duration`` seconds per point after a warm-up:

(1) single-row Open Inference Protocol v2 requests at concurrency 1, 8 and 64, and the
    same through the MLflow protocol (`/invocations`, `dataframe_split`);
(2) 100-row requests at concurrency 8 (rows/s);
(3) the native endpoint, with an online lookup of 8 features per request, at
    concurrency 8;
(4) the same-run baselines: in-process `Booster.predict` on 1 row and on 100,000 rows;
(5) `mlflow models serve` (from the interpreter given by ``--mlflow-python``, which must
    have mlflow and lightgbm) with the same model and the same `/invocations` loads.

Every request's prediction is logged (the prediction log is on, as in production).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
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


# -- report ----------------------------------------------------------------------------------


def _row(load: Load, base: Load | None = None) -> str:
    ratio = f"{load.requests_per_s / base.requests_per_s:.1f}x" if base else ""
    return (
        f"| {load.label} | {load.concurrency} | {load.requests_per_s:,.0f} | "
        f"{load.rows_per_s:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | {load.errors} | "
        f"{ratio} |"
    )


def report(
    kiln_loads: dict[str, Load],
    mlflow_loads: dict[str, Load],
    one_row: Stats,
    bulk_rows_s: float,
    args: argparse.Namespace,
    mlflow_ver: str | None,
    load_avg: tuple[float, float],
) -> str:
    v1, v8, v64 = kiln_loads["v2-1"], kiln_loads["v2-8"], kiln_loads["v2-64"]
    b100, native = kiln_loads["v2-100"], kiln_loads["native-8"]
    inv64 = kiln_loads["inv-64"]
    ml64 = mlflow_loads.get("inv-64")
    lines = [
        "## Serving",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, LightGBM {lgb.__version__}, uvicorn "
        f"{metadata.version('uvicorn')}; load average {load_avg[0]:.1f} before, "
        f"{load_avg[1]:.1f} after (the load generator shares the machine). Command: "
        f"`python benchmarks/serving.py --duration {args.duration:g} --workers {args.workers}"
        f"{' --quick' if args.quick else ''}`. wrk on 127.0.0.1, {args.duration:g} s per point "
        f"after a {args.warmup:g} s warm-up; `kiln serve --workers {args.workers}` with the "
        "prediction log on.",
        "",
        "| load | concurrency | requests/s | rows/s | p50 ms | p99 ms | errors | vs MLflow |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, load in kiln_loads.items():
        base = mlflow_loads.get(key.replace("v2", "inv")) if key.startswith("inv") else None
        lines.append(_row(load, mlflow_loads.get(key) if key.startswith("inv") else base))
    for load in mlflow_loads.values():
        lines.append(_row(load))
    lines += [
        "",
        f"In-process baselines, same run: `Booster.predict` on 1 row {one_row.median * 1e6:.0f} µs "
        f"median (p99 {one_row.pct(99) * 1e6:.0f} µs); on 100,000 rows {bulk_rows_s:,.0f} rows/s.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| single-row p99 at concurrency 8 < 5 ms | {v8.p99_ms:.2f} ms | "
        f"{verdict(v8.p99_ms, 5.0)} |",
        f"| single-row p99 at concurrency 64 < 50 ms | {v64.p99_ms:.2f} ms | "
        f"{verdict(v64.p99_ms, 50.0)} |",
    ]
    if ml64 is not None:
        ratio = inv64.requests_per_s / ml64.requests_per_s
        lines.append(
            f"| single-row throughput at concurrency 64 >= 10x `mlflow models serve` "
            f"(MLflow {mlflow_ver}, same `/invocations` load) | {ratio:.1f}x "
            f"({inv64.requests_per_s:,.0f} vs {ml64.requests_per_s:,.0f} req/s) | "
            f"{'yes' if ratio >= 10 else '**no**'} |"
        )
    else:
        lines.append(
            "| throughput vs `mlflow models serve` | not measured (no --mlflow-python) | — |"
        )
    lines += [
        f"| 100-row requests >= 100,000 rows/s | {b100.rows_per_s:,.0f} rows/s "
        f"({b100.rows_per_s / bulk_rows_s:.0%} of in-process bulk predict) | "
        f"{'yes' if b100.rows_per_s >= 100_000 else '**no**'} |",
        f"| native with 8 online features, p99 at concurrency 8 < 8 ms | {native.p99_ms:.2f} ms | "
        f"{verdict(native.p99_ms, 8.0)} |",
        f"| errors | {sum(x.errors for x in kiln_loads.values())} | "
        f"{'yes' if sum(x.errors for x in kiln_loads.values()) == 0 else '**no**'} |",
        "",
        f"Single-row throughput at concurrency 1: {v1.requests_per_s:,.0f} req/s "
        f"(p99 {v1.p99_ms:.2f} ms).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per point, 1 s warm-up")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--mlflow-python", help="a Python with mlflow and lightgbm installed")
    parser.add_argument("--write", type=Path, help="replace the serving section of this file")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory(prefix="kiln-bench-serving-") as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "KILN_HOME": str(tmp / "home")}
        os.environ["KILN_HOME"] = env["KILN_HOME"]
        kiln.configure(home=tmp / "home")
        booster, x = train(rng)
        one_row, bulk_rows_s = in_process(booster, x)
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

        port = free_local_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable, "-m", "kiln", "serve", "bench", "bench-native",
            "--port", str(port), "--workers", str(args.workers), "--default", "bench",
        ]  # fmt: skip
        one, hundred = x[:1], x[:100]
        kiln_loads: dict[str, Load] = {}
        print(f"kiln serve on {url}", flush=True)
        with process(command, f"{url}/v2/health/ready", tmp / "kiln.log", env):
            infer = f"{url}/v2/models/bench/infer"
            for c in (1, 8, 64):
                kiln_loads[f"v2-{c}"] = point(
                    "Kiln v2, 1 row", infer, c, 1, args.duration, args.warmup, tmp, v2_body(one)
                )
            kiln_loads["v2-100"] = point(
                "Kiln v2, 100 rows",
                infer,
                8,
                100,
                args.duration,
                args.warmup,
                tmp,
                v2_body(hundred),
            )
            for c in (1, 8, 64):
                kiln_loads[f"inv-{c}"] = point(
                    "Kiln /invocations, 1 row",
                    f"{url}/invocations",
                    c,
                    1,
                    args.duration,
                    args.warmup,
                    tmp,
                    mlflow_body(one),
                )
            kiln_loads["inv-100"] = point(
                "Kiln /invocations, 100 rows",
                f"{url}/invocations",
                8,
                100,
                args.duration,
                args.warmup,
                tmp,
                mlflow_body(hundred),
            )
            lua = (
                "request = function()\n"
                "  local body = '{\"entities\": {\"user_id\": ' .. math.random(0, 9999) .. '}}'\n"
                "  return wrk.format(nil, nil, nil, body)\n"
                "end"
            )
            kiln_loads["native-8"] = point(
                "Kiln native, 8 online features", f"{url}/deployments/bench-native/predict",
                8, 1, args.duration, args.warmup, tmp, lua_body=lua,
            )  # fmt: skip

        mlflow_loads: dict[str, Load] = {}
        mlflow_ver = None
        if args.mlflow_python:
            mlflow_ver = mlflow_version(args.mlflow_python)
            model_file, model_dir = tmp / "booster.txt", tmp / "mlflow-model"
            booster.save_model(str(model_file))
            subprocess.run(
                [args.mlflow_python, "-c", _SAVE_MLFLOW, str(model_file), str(model_dir)],
                check=True,
            )
            mlflow_bin = str(Path(args.mlflow_python).parent / "mlflow")
            mport = free_local_port()
            murl = f"http://127.0.0.1:{mport}"
            command = [mlflow_bin, "models", "serve", "-m", str(model_dir), "-h", "127.0.0.1",
                       "-p", str(mport), "--env-manager", "local"]  # fmt: skip
            print(f"mlflow models serve on {murl}", flush=True)
            # mlflow starts `uvicorn` by name: its own environment's scripts come first.
            menv = {**env, "PATH": f"{Path(args.mlflow_python).parent}{os.pathsep}{env['PATH']}"}
            with process(command, f"{murl}/ping", tmp / "mlflow.log", menv):
                for c in (1, 8, 64):
                    mlflow_loads[f"inv-{c}"] = point(
                        f"MLflow {mlflow_ver}, 1 row",
                        f"{murl}/invocations",
                        c,
                        1,
                        args.duration,
                        args.warmup,
                        tmp,
                        mlflow_body(one),
                    )
                mlflow_loads["inv-100"] = point(
                    f"MLflow {mlflow_ver}, 100 rows",
                    f"{murl}/invocations",
                    8,
                    100,
                    args.duration,
                    args.warmup,
                    tmp,
                    mlflow_body(hundred),
                )

    section = report(
        kiln_loads, mlflow_loads, one_row, bulk_rows_s, args, mlflow_ver,
        (load_before, os.getloadavg()[0]),
    )  # fmt: skip
    print(section)
    if args.write:
        replace_section(args.write, "serving", section)


if __name__ == "__main__":
    main()
