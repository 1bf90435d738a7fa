"""Flows benchmark: whole runs as a user starts them, and passing a large frame.

    python benchmarks/flows.py [--repeat 5] [--rows 2000000] [--batch-rows 10000000]
        [--batch-repeat 3] [--write [PATH]]

(1) 10 trivial steps in a line and (2) a fan-out of 100 trivial items with a fan-in,
each timed as a whole process (`python -m kiln flows run ... --no-cache`, interpreter
start and imports included, every step computed) on local worker processes, median of
``--repeat`` runs in a Kiln home created beforehand (as a user's is). (3) One step
returns a ``--rows`` x 10 float DataFrame and the next reads it, in-process on the inline
executor (persisted, content-addressed: what resume reuses), against writing the same
frame to Parquet with pyarrow and reading it back, measured in the same run, medians of
``--repeat``. (4) A run failing in step 4 of 5, resumed: how many of the 3 finished steps ran again.
(5) ``kiln.batch_predict`` of ``--batch-rows`` rows (a Parquet file of 1M-row groups, the
registry benchmark's LightGBM model: 100 trees, 31 leaves, 20 float features) on 2 local
processes, against in-process bulk ``predict`` of the same rows already in memory (the
loaded model, LightGBM's default threads), interleaved, medians of ``--batch-repeat``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import kiln
from _common import add_write_flag, replace_section, verdict

FLOWS = textwrap.dedent(
    '''
    """The flows the benchmark runs."""
    import os
    from pathlib import Path

    import kiln


    @kiln.step
    def inc(x: int) -> int:
        return x + 1


    @kiln.flow
    def line(steps: int = 10) -> int:
        value = inc(0)
        for _ in range(steps - 1):
            value = inc(value)
        return value


    @kiln.step
    def total(values: list[int]) -> int:
        return sum(values)


    @kiln.flow
    def fan(n: int = 100) -> int:
        return total(inc.map(x=list(range(n))))


    @kiln.step
    def stage(work: str, x: int, fail_at: int, i: int) -> int:
        with open(Path(work) / "ran.txt", "a") as out:
            out.write(f"{i}\\n")
        if i == fail_at and not (Path(work) / "healed").exists():
            raise RuntimeError("fails once")
        return x + 1


    @kiln.flow
    def five(work: str, fail_at: int = 4) -> int:
        value = stage(work, 0, fail_at, 1)
        for i in range(2, 6):
            value = stage(work, value, fail_at, i)
        return value
    '''
)


def whole_run(tmp: Path, target: str, params: list[str], repeat: int) -> list[float]:
    """Seconds of each ``kiln flows run`` (``--no-cache``: every step computes) in a Kiln
    home made once beforehand, as a user's is."""
    env = {**os.environ, "KILN_HOME": str(tmp / f"home-{target}"), "PYTHONPATH": str(tmp)}
    subprocess.run([sys.executable, "-m", "kiln", "db", "upgrade"], env=env, check=True)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "kiln", "flows", "run", target, "--no-cache", *params],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
        )
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{target} failed:\n{done.stdout}\n{done.stderr}")
    return times


_BUILD_S: list[float] = []  # what building each frame took, inside the step itself


@kiln.step
def make_frame(rows: int) -> pd.DataFrame:
    start = time.perf_counter()
    values = np.random.default_rng(3).standard_normal((rows, 10))
    frame = pd.DataFrame(values, columns=[f"c{j}" for j in range(10)], copy=False)
    _BUILD_S.append(time.perf_counter() - start)
    return frame


@kiln.step
def read_frame(df: pd.DataFrame) -> int:
    return len(df)


@kiln.flow
def pass_frame(rows: int) -> int:
    return read_frame(make_frame(rows))


def frame_pass(rows: int, repeat: int, tmp: Path) -> tuple[list[float], list[float], list[float]]:
    """Seconds per round: Kiln passing the frame from one step to the next (the run, less
    the time its first step spent building the frame, timed inside that step); pyarrow
    writing the same frame to a Parquet file and reading it back, with its defaults; and
    the same with the options Kiln writes step outputs with."""
    from kiln.flows._values import parquet_options

    kiln_times, default_times, same_times = [], [], []
    for i in range(repeat):
        kiln.configure(home=tmp / f"frame-home-{i}")
        _BUILD_S.clear()
        start = time.perf_counter()
        run = pass_frame.run(rows=rows, executor="inline", cache=False)
        kiln_times.append(time.perf_counter() - start - _BUILD_S[0])
        assert run.result == rows
        frame = make_frame.fn(rows)
        for times, options in ((default_times, None), (same_times, True)):
            path = tmp / f"frame-{i}-{len(times)}.parquet"
            start = time.perf_counter()
            table = pa.Table.from_pandas(frame)
            pq.write_table(table, path, **(parquet_options(table) if options else {}))
            back = pq.read_table(path).to_pandas()
            times.append(time.perf_counter() - start)
            assert len(back) == rows
    return kiln_times, default_times, same_times


def resume_count(tmp: Path) -> tuple[int, int]:
    """(finished steps run again on resume, finished steps before it)."""
    sys.path.insert(0, str(tmp))
    import bench_flows  # type: ignore[import-not-found]

    work = tmp / "resume-work"
    work.mkdir()
    kiln.configure(home=tmp / "resume-home")
    try:
        bench_flows.five.run(work=str(work), executor="processes", max_parallel=1)
    except kiln.flows.FlowFailed as failed:
        run_id = failed.run_id
    else:
        raise SystemExit("the failing run did not fail")
    before = (work / "ran.txt").read_text().split()
    (work / "healed").touch()
    bench_flows.five.resume(run_id, executor="processes", max_parallel=1)
    after = (work / "ran.txt").read_text().split()[len(before) :]
    finished = {"1", "2", "3"}
    return sum(1 for i in after if i in finished), len(finished)


def listed(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def batch_source(tmp: Path, rows: int) -> tuple[Path, str]:
    """A Parquet file of ``rows`` x 20 floats in 1M-row groups, and the registered model."""
    from registry import FEATURES, train_lgbm

    kiln.configure(home=tmp / "batch-home")
    columns = [f"f{j}" for j in range(FEATURES)]
    example = pd.DataFrame(np.zeros((5, FEATURES)), columns=columns)
    version = kiln.models.register("bench", train_lgbm(0), input_example=example)
    rng = np.random.default_rng(5)
    path = tmp / "batch.parquet"
    writer = None
    for start in range(0, rows, 1_000_000):
        n = min(1_000_000, rows - start)
        table = pa.table({c: rng.standard_normal(n) for c in columns})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    return path, version.ref


def batch_inference(tmp: Path, rows: int, repeat: int) -> tuple[list[float], list[float]]:
    """Seconds per round: ``kiln.batch_predict`` on 2 local processes (a whole run: plan,
    2 workers each loading the model, reading, scoring and writing its partitions) and
    in-process bulk ``predict`` on the same rows already in memory, interleaved."""
    path, ref = batch_source(tmp, rows)
    model = kiln.models.load(ref)
    table = pq.read_table(path)
    kiln_times, bulk_times = [], []
    for i in range(repeat):
        start = time.perf_counter()
        result = kiln.batch_predict(ref, path, tmp / f"scores-{i}", max_parallel=2)
        kiln_times.append(time.perf_counter() - start)
        assert result.rows == rows and result.skipped == 0
        start = time.perf_counter()
        predictions = model.predict(table)
        bulk_times.append(time.perf_counter() - start)
        assert len(predictions) == rows
        if i == 0:  # the same answers, in the same order
            scored = pq.read_table(result.parts, columns=["prediction"]).column(0).to_numpy()
            np.testing.assert_array_equal(scored, predictions)
    return kiln_times, bulk_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch-rows", type=int, default=10_000_000)
    parser.add_argument("--batch-repeat", type=int, default=3)
    add_write_flag(parser, "flows")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "bench_flows.py").write_text(FLOWS)
        print("(1) 10 trivial steps in a line, whole process", flush=True)
        line = whole_run(tmp, "bench_flows:line", [], args.repeat)
        print(f"    {statistics.median(line):.2f} s", flush=True)
        print("(2) fan-out of 100 trivial items and a fan-in, whole process", flush=True)
        fan = whole_run(tmp, "bench_flows:fan", [], args.repeat)
        print(f"    {statistics.median(fan):.2f} s", flush=True)
        print(f"(3) passing a {args.rows:,} x 10 float DataFrame", flush=True)
        kiln_s, arrow_s, same_s = frame_pass(args.rows, args.repeat, tmp)
        passing = statistics.median(kiln_s)
        ratio = passing / statistics.median(arrow_s)
        same_ratio = passing / statistics.median(same_s)
        print(f"    Kiln {passing:.2f} s, pyarrow {statistics.median(arrow_s):.2f} s", flush=True)
        print("(4) resume after a failure in step 4 of 5", flush=True)
        rerun, finished = resume_count(tmp)
        print(f"    {rerun} of {finished} finished steps ran again", flush=True)
        print(f"(5) batch inference of {args.batch_rows:,} rows on 2 processes", flush=True)
        batch_s, bulk_s = batch_inference(tmp, args.batch_rows, args.batch_repeat)
        batch_share = statistics.median(bulk_s) / statistics.median(batch_s)
        print(
            f"    Kiln {statistics.median(batch_s):.2f} s, in-process predict "
            f"{statistics.median(bulk_s):.2f} s: {batch_share:.0%} of its throughput",
            flush=True,
        )
    frame_mb = args.rows * 10 * 8 / 1e6
    rows = [
        (
            "(1) 10 trivial steps in a line, local processes, whole process",
            f"{statistics.median(line):.2f} s",
            f"runs: {listed(line)} s",
            "< 1.0 s",
            verdict(statistics.median(line), 1.0),
        ),
        (
            "(2) fan-out of 100 trivial items + fan-in, local processes, whole process",
            f"{statistics.median(fan):.2f} s",
            f"runs: {listed(fan)} s",
            "< 3 s",
            verdict(statistics.median(fan), 3.0),
        ),
        (
            f"(3) passing a {args.rows:,} x 10 float DataFrame ({frame_mb:.0f} MB) between "
            "two steps, stored",
            f"{passing:.2f} s",
            f"{ratio:.2f}x pyarrow writing the same frame to Parquet and reading it back "
            f"({statistics.median(arrow_s):.2f} s, same rounds); {same_ratio:.2f}x the same "
            f"with Kiln's Parquet options ({statistics.median(same_s):.2f} s)",
            "<= 1.5x",
            verdict(ratio, 1.5),
        ),
        (
            "(4) resume after a failure in step 4 of 5",
            f"{rerun} of {finished} finished steps recomputed",
            "-",
            "0",
            "yes" if rerun == 0 else "**no**",
        ),
        (
            f"(5) batch inference of {args.batch_rows:,} rows, LightGBM, 2 local processes",
            f"{statistics.median(batch_s):.2f} s "
            f"({args.batch_rows / statistics.median(batch_s) / 1e6:.2f}M rows/s)",
            f"{batch_share:.0%} of in-process bulk predict's throughput "
            f"({statistics.median(bulk_s):.2f} s; runs: "
            f"{listed(batch_s)} s vs {listed(bulk_s)} s)",
            ">= 80%",
            "yes" if batch_share >= 0.8 else "**no**",
        ),
    ]
    text = (
        "## Flows (`benchmarks/flows.py`)\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after. Command: `python benchmarks/flows.py --write`. "
        f"Medians of {args.repeat} runs. (1), (2): `python -m kiln flows run` as a user "
        "starts it, interpreter start and imports included, `--no-cache` (every step "
        "computes), in a Kiln home created beforehand as a user's is. (3): "
        "the whole run on the inline executor in-process (both tasks, their tracked runs, "
        "storing and loading the frame), less the time the first step spent building the "
        "frame (timed inside it), against pyarrow writing the same frame to a Parquet file "
        "with its defaults (`pq.write_table(table, path)`: snappy, dictionary encoding tried "
        "on every column) and reading it back into pandas, in the same rounds; and, so the "
        "serializer's own choice is visible, against the same with the options Kiln writes "
        "step outputs with (snappy, no dictionary for floating-point columns). (5): the "
        "whole `kiln.batch_predict` call (planning, two worker processes each loading the "
        "model, reading its partitions of whole row groups, scoring on one thread and "
        "writing Parquet) against the loaded model's `predict` on the same rows already "
        "in memory as one Arrow table, with LightGBM's default threads (both cores); "
        "the answers are checked equal.\n\n"
        "| measurement | median | derived | target | met |\n|---|---|---|---|---|\n"
        + "".join(f"| {' | '.join(r)} |\n" for r in rows)
    )
    print(text)
    if args.write:
        replace_section(args.write, "flows", text)


if __name__ == "__main__":
    main()
