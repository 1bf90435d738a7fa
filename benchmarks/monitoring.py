"""Monitoring: drift of 1,000,000 rows x 25 numeric columns against scipy doing the work
a user would write by hand.

Both start from the same two Arrow tables (reference and current; 5 of the 25 columns
shifted). Kiln: ``kiln.monitoring.drift`` with its defaults (at this size, the normalized
Wasserstein distance), and with ``method="ks"``. The baseline, per column:
``scipy.stats.ks_2samp``, ``scipy.stats.chi2_contingency`` on the 2 x 10 table of counts
in the reference's deciles, and PSI over the same bins with numpy. Rounds alternate which
runs first; medians. Peak memory is what tracemalloc sees allocated above the inputs in a
separate, untimed run of each.

With ``--evidently-python`` (the interpreter of an environment with Evidently, which
``make bench`` builds in ``.venv-evidently``), Evidently's ``DataDriftPreset`` runs on the
same data written to Parquet (reading not timed), at ``--evidently-rows`` beside Kiln
and the baseline on that size (medians), and once at the full size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from _common import add_write_flag, replace_section, verdict


def tables(rows: int, columns: int, seed: int = 11) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    ref = {f"f{i}": rng.normal(0.0, 1.0, rows) for i in range(columns)}
    cur = {f"f{i}": rng.normal(0.3 if i % 5 == 0 else 0.0, 1.0, rows) for i in range(columns)}
    return pa.table(ref), pa.table(cur)


def scipy_baseline(ref: pa.Table, cur: pa.Table) -> list[tuple[float, float, float]]:
    out = []
    for name in ref.column_names:
        r = ref.column(name).to_numpy()
        c = cur.column(name).to_numpy()
        ks = stats.ks_2samp(r, c)
        edges = np.quantile(r, np.linspace(0, 1, 11))
        edges[0], edges[-1] = -np.inf, np.inf
        rc, _ = np.histogram(r, edges)
        cc, _ = np.histogram(c, edges)
        chi2 = stats.chi2_contingency(np.vstack([rc, cc]))
        rs = np.maximum(rc / rc.sum(), 1e-4)
        cs = np.maximum(cc / cc.sum(), 1e-4)
        psi = float(np.sum((cs - rs) * np.log(cs / rs)))
        out.append((float(ks.pvalue), float(chi2.pvalue), psi))
    return out


def on_one_core(fn: Callable[[], Any]) -> Any:
    """``fn`` with this process allowed one core, as the single-threaded baseline uses."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        return fn()
    finally:
        os.sched_setaffinity(0, allowed)


def evidently(python: str, ref: pa.Table, cur: pa.Table, rounds: int) -> dict[str, Any]:
    """Evidently's DataDriftPreset on ``ref`` and ``cur``, in its own interpreter."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_evidently_drift.py")
    with tempfile.TemporaryDirectory() as folder:
        paths = [os.path.join(folder, f"{side}.parquet") for side in ("reference", "current")]
        for table, path in zip((ref, cur), paths, strict=True):
            pq.write_table(table, path)
        done = subprocess.run(
            [python, script, *paths, str(rounds)], capture_output=True, text=True, check=False
        )
    if done.returncode != 0:
        raise SystemExit(f"Evidently failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def evidently_rows(
    args: argparse.Namespace, ref: pa.Table, cur: pa.Table
) -> list[tuple[str, str, str, str, str]]:
    """Evidently beside Kiln and the baseline at ``--evidently-rows``, then once at the full
    size; each measured in this run."""
    import kiln

    n = min(args.evidently_rows, ref.num_rows)
    small_ref, small_cur = ref.slice(0, n), cur.slice(0, n)
    times: dict[str, list[float]] = {"kiln": [], "scipy": []}
    for _ in range(args.rounds):
        for name, fn in (
            ("kiln", lambda: kiln.monitoring.drift(reference=small_ref, current=small_cur)),
            ("scipy", lambda: scipy_baseline(small_ref, small_cur)),
        ):
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    small = evidently(args.evidently_python, small_ref, small_cur, args.rounds)
    med_kiln, med_scipy = statistics.median(times["kiln"]), statistics.median(times["scipy"])
    med_ev = statistics.median(small["seconds"])
    rows = [
        (
            f"(2) Evidently {small['version']} `DataDriftPreset`, {n:,} rows x "
            f"{ref.num_columns} columns",
            f"{med_ev:.2f} s",
            f"Kiln {med_kiln:.2f} s is {med_kiln / med_ev:.3f}x Evidently's time; the scipy "
            f"baseline {med_scipy:.2f} s; Evidently runs "
            f"{', '.join(f'{t:.2f}' for t in small['seconds'])}; it flagged "
            f"{', '.join(sorted(small['flagged'], key=lambda c: int(c[1:])))}",
            "reported",
            "-",
        )
    ]
    if args.evidently_full_rounds > 0:
        full = evidently(args.evidently_python, ref, cur, args.evidently_full_rounds)
        med_full = statistics.median(full["seconds"])
        rows.append(
            (
                f"(2b) Evidently `DataDriftPreset`, {ref.num_rows:,} rows x "
                f"{ref.num_columns} columns ({args.evidently_full_rounds} run; it is slow)",
                f"{med_full:.2f} s",
                f"Kiln's median in (1) is {args.kiln_full_s / med_full:.3f}x Evidently's time",
                "reported",
                "-",
            )
        )
    return rows


def peak_mb(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--evidently-python", help="interpreter of an Evidently environment")
    parser.add_argument("--evidently-rows", type=int, default=100_000)
    parser.add_argument("--evidently-full-rounds", type=int, default=1)
    add_write_flag(parser, "monitoring")
    args = parser.parse_args()
    import kiln

    load_before = os.getloadavg()[0]
    ref, cur = tables(args.rows, args.columns)
    reference = kiln.validation.profile(ref)  # kept once, as a training set keeps its own
    contenders: dict[str, Callable[[], Any]] = {
        "kiln": lambda: kiln.monitoring.drift(reference=ref, current=cur),
        "kiln-profile": lambda: kiln.monitoring.drift(reference=reference, current=cur),
        "kiln-ks": lambda: kiln.monitoring.drift(reference=ref, current=cur, method="ks"),
        "kiln-1core": lambda: on_one_core(
            lambda: kiln.monitoring.drift(reference=ref, current=cur)
        ),
        "scipy": lambda: scipy_baseline(ref, cur),
    }
    contenders["kiln"]()  # imports and thread pool warmed on both sides
    scipy_baseline(ref.slice(0, 1000), cur.slice(0, 1000))
    times: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - started)
            print(f"    {name:>7} round {r + 1}: {times[name][-1]:.2f} s", flush=True)
    peaks = {name: peak_mb(fn) for name, fn in contenders.items()}
    result = contenders["kiln"]()
    flagged = sorted(result.drifted, key=lambda c: int(c[1:]))
    expected = [f"f{i}" for i in range(args.columns) if i % 5 == 0]
    med = {name: statistics.median(ts) for name, ts in times.items()}
    data_mb = (ref.nbytes + cur.nbytes) / 1e6

    def runs(name: str) -> str:
        return ", ".join(f"{t:.2f}" for t in times[name])

    rows = [
        (
            f"(1) `kiln.monitoring.drift`, defaults (normalized Wasserstein at this size), "
            f"{args.rows:,} rows x {args.columns} numeric columns",
            f"{med['kiln']:.2f} s",
            f"{med['kiln'] / med['scipy']:.2f}x the scipy baseline ({med['scipy']:.2f} s); "
            f"runs {runs('kiln')} vs {runs('scipy')}; peak {peaks['kiln']:.0f} MB allocated "
            f"above the {data_mb:.0f} MB of data (scipy {peaks['scipy']:.0f} MB); flagged "
            f"{', '.join(flagged)} (shifted: {', '.join(expected)})",
            "<= scipy baseline",
            verdict(med["kiln"] / med["scipy"], 1.0),
        ),
        (
            "(1d) the same on one core (the baseline's share of the machine)",
            f"{med['kiln-1core']:.2f} s",
            f"{med['kiln-1core'] / med['scipy']:.2f}x the scipy baseline; runs "
            f"{runs('kiln-1core')}",
            "<= scipy baseline",
            verdict(med["kiln-1core"] / med["scipy"], 1.0),
        ),
        (
            "(1c) the same against the reference's stored profile (its rows never read)",
            f"{med['kiln-profile']:.2f} s",
            f"{med['kiln-profile'] / med['scipy']:.2f}x the scipy baseline; runs "
            f"{runs('kiln-profile')}; peak {peaks['kiln-profile']:.0f} MB; profile "
            f"{len(reference.to_json()) / 1e3:.0f} KB",
            "<= scipy baseline",
            verdict(med["kiln-profile"] / med["scipy"], 1.0),
        ),
        (
            '(1b) the same with `method="ks"` (scipy\'s own KS per column)',
            f"{med['kiln-ks']:.2f} s",
            f"{med['kiln-ks'] / med['scipy']:.2f}x the scipy baseline; runs {runs('kiln-ks')}; "
            f"peak {peaks['kiln-ks']:.0f} MB",
            "reported",
            "-",
        ),
    ]
    if flagged != expected:
        raise SystemExit(f"drift flagged {flagged}, the shifted columns are {expected}")
    if args.evidently_python:
        args.kiln_full_s = med["kiln"]
        rows.extend(evidently_rows(args, ref, cur))
    else:
        rows.append(("(2) Evidently", "not measured (no --evidently-python)", "", "", "-"))
    text = (
        "## Monitoring (`benchmarks/monitoring.py`)\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after. Command: `python benchmarks/monitoring.py "
        "--evidently-python .venv-evidently/bin/python --write` (in `make bench`). "
        f"Medians of {args.rounds} rounds, the contenders alternating which goes first. Both "
        "start from the same two Arrow tables (every fifth column shifted by 0.3 standard "
        "deviations). The baseline is what a user writes with scipy, per column and on one "
        "thread: `ks_2samp`, `chi2_contingency` on the 2 x 10 table of counts in the "
        "reference's deciles, and PSI on the same bins with numpy. Kiln sorts each column "
        "once and compares the columns on a thread pool (one thread per core the process "
        "may use; (1d) allows it one, the baseline's share); against a "
        "profile (100-bin histograms, computed once beforehand and not timed) only the "
        "current table is read. Peak memory: "
        "tracemalloc's peak in a separate, untimed run of each.\n\n"
        "| measurement | median | derived | target | met |\n|---|---|---|---|---|\n"
        + "".join(f"| {' | '.join(r)} |\n" for r in rows)
    )
    print(text)
    if args.write:
        replace_section(args.write, "monitoring", text)


if __name__ == "__main__":
    main()
