"""Tracking benchmark: metric logging, run creation and search, beside same-run baselines.

    python benchmarks/tracking.py [--large-runs 100000] [--repeat 7] [--write [PATH]]

(a) 10,000 ``run.log_metric`` calls, one at a time, timed including the final flush,
    each repetition on a fresh store;
(b) 1,000 runs with 10 params and 5 metrics each, then one search with a metric filter
    and a metric order; (c) the same search over ``--large-runs`` runs;
(d) baseline: raw ``sqlite3`` ``executemany`` of the same 10,000 rows into an indexed
    table of the same shape, on the same disk, with the same pragmas, in one
    transaction, on a fresh database per repetition (as (a) starts from a fresh store).
(a) and (d) take turns, repetition by repetition, so drift hits both alike. Medians of
``--repeat`` repetitions; every figure comes from this one run. Prints the section;
``--write`` puts it into docs/benchmarks.md (or PATH).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import kiln
from _common import add_write_flag, replace_section, timed, verdict
from kiln.tracking import TrackingClient

N_METRICS = 10_000
MIN_RATE = 200_000  # values/s, one call at a time
MAX_RATIO = 3.0  # (a) against (d)
FILTER = "metrics.val_auc > 0.9"
ORDER = ["-metrics.val_auc"]


def client_at(root: Path) -> TrackingClient:
    return TrackingClient.open(f"sqlite:///{root / 'kiln.db'}", str(root / "artifacts"))


def bench_log_metric(root: Path) -> float:
    client = client_at(root)
    with kiln.start_run("bench-metrics", client=client) as run:
        run.flush()

        def log() -> None:
            for i in range(N_METRICS):
                run.log_metric("loss", 1.0 / (i + 1), step=i)
            run.flush()

        return timed(log)


def bench_sqlite_baseline(root: Path) -> float:
    """One repetition on a database of its own, like (a)'s fresh store."""
    root.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(root / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE metrics (id INTEGER PRIMARY KEY, run_id TEXT, key TEXT, "
        "step INTEGER, value REAL, is_nan INTEGER, timestamp INTEGER)"
    )
    conn.execute("CREATE INDEX ix ON metrics (run_id, key, step)")
    now = int(time.time() * 1000)
    rows = [("r" * 32, "loss", i, 1.0 / (i + 1), 0, now) for i in range(N_METRICS)]

    def insert() -> None:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO metrics (run_id, key, step, value, is_nan, timestamp) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")

    elapsed = timed(insert)
    conn.close()
    return elapsed


def create_runs(client: TrackingClient, n: int, seed: int) -> float:
    rng = random.Random(seed)

    def create() -> None:
        for i in range(n):
            with kiln.start_run("bench-search", name=f"r{i}", client=client) as run:
                run.log_params({f"p{j}": rng.randint(1, 100) for j in range(10)})
                run.log_metrics(
                    {"val_auc": rng.uniform(0.5, 1.0), **{f"m{j}": rng.random() for j in range(4)}}
                )

    return timed(create)


def search_times(client: TrackingClient, repeat: int) -> tuple[float, int]:
    times, found = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        found = len(kiln.runs.search("bench-search", filter=FILTER, order_by=ORDER, client=client))
        times.append(time.perf_counter() - start)
    return statistics.median(times), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--large-runs", type=int, default=100_000)
    add_write_flag(parser, "tracking")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        root = Path(tmp)
        bench_log_metric(root / "warmup")  # imports, migrations: in no figure
        bench_sqlite_baseline(root / "warmup-baseline")
        log_times, base_times = [], []
        for i in range(args.repeat):
            log_times.append(bench_log_metric(root / f"log{i}"))
            base_times.append(bench_sqlite_baseline(root / f"baseline{i}"))
        log_s, base_s = statistics.median(log_times), statistics.median(base_times)
        # Each repetition's own ratio, so that drift between repetitions cancels out.
        ratio = statistics.median(a / b for a, b in zip(log_times, base_times, strict=True))

        small = client_at(root / "small")
        create_small = statistics.median(
            [create_runs(client_at(root / f"create{i}"), 1_000, i) for i in range(args.repeat)]
        )
        create_runs(small, 1_000, 0)
        search_small, found_small = search_times(small, 20)

        large = client_at(root / "large")
        create_large = create_runs(large, args.large_runs, 1)
        search_large, found_large = search_times(large, 10)
    load_after = os.getloadavg()[0]

    rate = N_METRICS / log_s
    met = verdict(max(MIN_RATE / rate, ratio / MAX_RATIO), 1.0)
    rows = [
        (
            "(a) 10,000 `log_metric` calls, one at a time, incl. flush, fresh store",
            f"{log_s * 1000:.1f} ms",
            f"{rate:,.0f} values/s; {ratio:.2f}x baseline (d) (median of the "
            f"repetitions' ratios; ratio of medians {log_s / base_s:.2f}x)",
            f"≥ {MIN_RATE:,} values/s and ≤ {MAX_RATIO:g}x (d): {met}",
        ),
        (
            "(d) baseline: raw sqlite3 `executemany`, 10,000 rows, indexed table, fresh database",
            f"{base_s * 1000:.1f} ms",
            f"{N_METRICS / base_s:,.0f} rows/s",
            "-",
        ),
        (
            "(b) create 1,000 runs (10 params, 5 metrics each)",
            f"{create_small:.2f} s",
            f"{create_small:.2f} ms per run",
            "< 1 s",
        ),
        (
            f"(b) search over 1,000 runs (`{FILTER}`, order `-metrics.val_auc`)",
            f"{search_small * 1000:.1f} ms",
            f"{found_small} runs returned",
            "< 25 ms",
        ),
        (
            f"(c) create {args.large_runs:,} runs",
            f"{create_large:.1f} s",
            f"{create_large / args.large_runs * 1000:.2f} ms per run",
            "-",
        ),
        (
            f"(c) search over {args.large_runs:,} runs",
            f"{search_large * 1000:.1f} ms",
            f"{found_large} runs returned (default limit 1000)",
            "< 200 ms",
        ),
    ]
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )
    lines = [
        "## Tracking (`benchmarks/tracking.py`)",
        "",
        f"Machine: {machine}; 1-minute load average {load_before:.1f} at start, "
        f"{load_after:.1f} at end. Command: `make bench` (`python benchmarks/tracking.py "
        f"--repeat {args.repeat} --large-runs {args.large_runs}`). Medians of {args.repeat} "
        "repetitions for (a), (b) creation and (d); (a) and (d) take turns, each repetition "
        "on a fresh store or database (the baseline's table has the same columns and the "
        "same (run, key, step) index as Kiln's metric history, and the same WAL and "
        "`synchronous = NORMAL` pragmas); (a) includes Kiln's latest-value table, which "
        "the baseline does not write. Medians of 20 (1,000 runs) and 10 "
        f"({args.large_runs:,} runs) searches.",
        "",
        "| measurement | median | derived | target |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        replace_section(args.write, "tracking", text)


if __name__ == "__main__":
    sys.exit(main())
