"""Tuning: the cost per trial of a study stored as tracked runs, and parallel speed-up.

(1) A 1,000-trial TPE study of a trivial 5-parameter objective: Kiln (every trial a
    tracked run in SQLite) beside Optuna alone with its in-memory storage and with its
    SQLite (RDB) storage, in the same run, the same seed (so the same configurations:
    checked) and the same sampler options. Kiln and Optuna in memory alternate, several
    rounds; Optuna on SQLite runs once (it is the slow one). The same with Optuna's random
    sampler isolates Kiln's own cost from the sampler's.
(2) A 1-second objective, 40 trials, ``parallel=2`` against ``parallel=1`` on local
    processes, and the same on a local Ray instance.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import add_write_flag, replace_section, verdict

OVERHEAD = """
import json, os, sys, time
import optuna
import kiln

optuna.logging.set_verbosity(optuna.logging.WARNING)
which, sampler, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def objective(trial):
    return sum(trial.suggest_float(f"x{i}", -1.0, 1.0) ** 2 for i in range(5))

def optuna_sampler():
    if sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=seed)

# imports done and the store open (created, migrated) before the clock starts, on both
# sides: what is measured is the cost per trial, not a process's or a store's first use
if which == "kiln":
    kiln.tune(objective, n_trials=1, sampler=sampler, pruner=None, seed=seed, name="warm-up",
              experiment="warm-up")
else:
    optuna.create_study(sampler=optuna_sampler()).optimize(objective, n_trials=1)
started = time.perf_counter()
if which == "kiln":
    study = kiln.tune(objective, n_trials=n, sampler=sampler, pruner=None, seed=seed)
    values = [t.value for t in study.trials]
    assert len(kiln.runs.search("tuning", limit=None)) == n + 1  # every trial a run
else:
    storage = None if which == "optuna" else f"sqlite:///{os.environ['KILN_HOME']}/optuna.db"
    study = optuna.create_study(sampler=optuna_sampler(), storage=storage)
    study.optimize(objective, n_trials=n)
    values = [t.value for t in study.trials]
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "values": values}))
"""

PARALLEL = """
import json, sys, time
import kiln

parallel, executor, n, sleep_s = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if executor == "ray":
    import ray
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)

def objective(trial):
    x = trial.suggest_float("x", -1.0, 1.0)
    time.sleep(sleep_s)
    return x * x

if executor == "ray":  # a warm pool, as processes have: the instance has started
    kiln.tune(objective, n_trials=2, parallel=2, executor=executor, name="warm-up", seed=1)
started = time.perf_counter()
kiln.tune(objective, n_trials=n, parallel=parallel, executor=executor, seed=0, pruner=None)
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def _python(script: str, *args: str, home: Path) -> dict[str, object]:
    import json

    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KILN_HOME": str(home), "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"benchmark process failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def overhead(tmp: Path, sampler: str, n: int, rounds: int, sqlite: bool) -> dict[str, list[float]]:
    """Per-trial milliseconds of each contender, each round in a fresh process and home."""
    out: dict[str, list[float]] = {"kiln": [], "optuna": [], "optuna-sqlite": []}
    order = ["kiln", "optuna"]
    for r in range(rounds):
        for which in order if r % 2 == 0 else order[::-1]:
            res = _python(
                OVERHEAD, which, sampler, str(n), "7", home=tmp / f"{sampler}-{which}-{r}"
            )
            out[which].append(float(res["seconds"]) * 1000 / n)  # type: ignore[arg-type]
            out.setdefault(f"{which}-values", []).extend(res["values"])  # type: ignore[arg-type]
            print(f"    {which:>7} round {r + 1}: {out[which][-1]:.2f} ms/trial", flush=True)
    if sqlite:
        res = _python(OVERHEAD, "optuna-sqlite", sampler, str(n), "7", home=tmp / f"{sampler}-rdb")
        out["optuna-sqlite"].append(float(res["seconds"]) * 1000 / n)  # type: ignore[arg-type]
        print(f"    optuna on SQLite: {out['optuna-sqlite'][-1]:.2f} ms/trial", flush=True)
    kiln_values, optuna_values = out.pop("kiln-values"), out.pop("optuna-values")
    if kiln_values != optuna_values:
        raise SystemExit("Kiln and Optuna sampled different configurations with the same seed")
    return out


def parallel(tmp: Path, executor: str, n: int, sleep_s: float) -> tuple[float, float]:
    one = _python(PARALLEL, "1", executor, str(n), str(sleep_s), home=tmp / f"p1-{executor}")
    two = _python(PARALLEL, "2", executor, str(n), str(sleep_s), home=tmp / f"p2-{executor}")
    return float(one["seconds"]), float(two["seconds"])  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel-trials", type=int, default=40)
    parser.add_argument("--sleep", type=float, default=1.0)
    add_write_flag(parser, "tuning")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        print(f"(1) {args.trials} trials, TPE, trivial 5-parameter objective", flush=True)
        tpe = overhead(tmp, "tpe", args.trials, args.rounds, sqlite=True)
        print(f"(1b) {args.trials} trials, random sampler", flush=True)
        rnd = overhead(tmp, "random", args.trials, args.rounds, sqlite=False)
        print(
            f"(2) {args.parallel_trials} trials of {args.sleep:g} s, parallel 1 and 2", flush=True
        )
        started = time.perf_counter()
        proc1, proc2 = parallel(tmp, "processes", args.parallel_trials, args.sleep)
        print(f"    processes: {proc1:.1f} s and {proc2:.1f} s", flush=True)
        ray1, ray2 = parallel(tmp, "ray", args.parallel_trials, args.sleep)
        print(f"    ray: {ray1:.1f} s and {ray2:.1f} s", flush=True)
        parallel_s = time.perf_counter() - started

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    def runs(xs: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in xs)

    added = med(tpe["kiln"]) - med(tpe["optuna"])
    added_random = med(rnd["kiln"]) - med(rnd["optuna"])
    rows = [
        (
            f"(1) {args.trials:,}-trial TPE study, trivial 5-parameter objective, every trial "
            "a tracked run",
            f"{med(tpe['kiln']):.2f} ms/trial",
            f"Optuna in memory {med(tpe['optuna']):.2f} ms/trial (Kiln adds {added:+.2f} ms); "
            f"Optuna on SQLite {med(tpe['optuna-sqlite']):.2f} ms/trial "
            f"({med(tpe['optuna-sqlite']) / med(tpe['kiln']):.1f}x Kiln); runs: Kiln "
            f"{runs(tpe['kiln'])}, Optuna {runs(tpe['optuna'])}",
            "<= Optuna in memory + 1 ms",
            verdict(added, 1.0),
        ),
        (
            "(1b) the same with the random sampler (Kiln's own cost, without TPE's)",
            f"{med(rnd['kiln']):.2f} ms/trial",
            f"Optuna in memory {med(rnd['optuna']):.2f} ms/trial (Kiln adds "
            f"{added_random:+.2f} ms); runs: Kiln {runs(rnd['kiln'])}, Optuna "
            f"{runs(rnd['optuna'])}",
            "-",
            "-",
        ),
        (
            f"(2) {args.parallel_trials} trials of a {args.sleep:g}-second objective, "
            "parallel=2 on local processes",
            f"{proc2:.1f} s",
            f"{proc1 / proc2:.2f}x the throughput of parallel=1 ({proc1:.1f} s)",
            ">= 1.8x",
            "yes" if proc1 / proc2 >= 1.8 else "**no**",
        ),
        (
            "(2b) the same on a local Ray instance (2 CPUs)",
            f"{ray2:.1f} s",
            f"{ray1 / ray2:.2f}x the throughput of parallel=1 ({ray1:.1f} s)",
            "reported",
            "-",
        ),
    ]
    text = (
        "## Tuning (`benchmarks/tuning.py`)\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after. Command: `python benchmarks/tuning.py --write`. "
        f"(1): medians of {args.rounds} rounds, each contender in a fresh process and Kiln "
        "home, Kiln and Optuna in memory alternating; the time of the whole `kiln.tune` "
        "call (creating the study's run, storing the objective, every trial's run with its "
        "params, value and verdict, ending the study) against `study.optimize` with the same "
        "sampler options and seed, the sampled configurations checked identical; Optuna on "
        "its SQLite storage runs once. (2): the whole `kiln.tune` call, starting its worker "
        "processes included; on Ray, after the instance started and a 2-trial warm-up study "
        f"ran; {parallel_s:.0f} s for both executors.\n\n"
        "| measurement | median | derived | target | met |\n|---|---|---|---|---|\n"
        + "".join(f"| {' | '.join(r)} |\n" for r in rows)
    )
    print(text)
    if args.write:
        replace_section(args.write, "tuning", text)


if __name__ == "__main__":
    main()
