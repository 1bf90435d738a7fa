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
import json, os, statistics, sys, time
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
kiln.tune(objective, n_trials=1, sampler=sampler, pruner=None, seed=seed, name="warm-up",
          experiment="warm-up")
optuna.create_study(sampler=optuna_sampler()).optimize(objective, n_trials=1)
if which == "optuna-sqlite":
    started = time.perf_counter()
    study = optuna.create_study(
        sampler=optuna_sampler(), storage=f"sqlite:///{os.environ['KILN_HOME']}/optuna.db"
    )
    study.optimize(objective, n_trials=n)
    print(json.dumps({"seconds": time.perf_counter() - started}))
    raise SystemExit

# Paired: Optuna's trial i runs beside Kiln's trial i, from Kiln's trial callback, in the
# same process; the one that runs second finds the caches warm from the first (the same
# computation on the same data), so the order alternates: K0 P0 P1 K1 K2 P2 P3 K3 ...
peer = optuna.create_study(sampler=optuna_sampler())
kiln_s, peer_s, peer_values = [], [], []
mark = [0.0]

def peer_trial():
    started = time.perf_counter()
    t = peer.ask()
    value = objective(t)
    peer.tell(t, value)
    peer_s.append(time.perf_counter() - started)
    peer_values.append(value)

def after_kiln_trial(study, record):
    kiln_s.append(time.perf_counter() - mark[0])
    if len(kiln_s) % 2 == 1:
        peer_trial()
        if len(peer_s) < n:
            peer_trial()
    mark[0] = time.perf_counter()

started = mark[0] = time.perf_counter()
study = kiln.tune(objective, n_trials=n, sampler=sampler, pruner=None, seed=seed,
                  callbacks=[after_kiln_trial])
whole = time.perf_counter() - started - sum(peer_s)
values = [t.value for t in study.trials]
assert values == peer_values, "Kiln and Optuna sampled different configurations"
assert len(kiln.runs.search("tuning", limit=None)) == n + 1  # every trial a run
# Kiln's first interval holds the study's start (its run, the stored objective)
diffs = [k - p for k, p in zip(kiln_s[1:], peer_s[1:])]
print(json.dumps({
    "kiln": statistics.fmean(kiln_s[1:]), "optuna": statistics.fmean(peer_s[1:]),
    "added_mean": statistics.fmean(diffs), "added_median": statistics.median(diffs),
    "whole": whole,
}))
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
    """Per-trial milliseconds, paired in each round's process; each round a fresh home."""
    out: dict[str, list[float]] = {}
    for r in range(rounds):
        res = _python(OVERHEAD, "paired", sampler, str(n), "7", home=tmp / f"{sampler}-{r}")
        for key, value in res.items():
            out.setdefault(key, []).append(float(value) * 1000)  # type: ignore[arg-type]
        print(
            f"    round {r + 1}: Kiln {out['kiln'][-1]:.2f}, Optuna {out['optuna'][-1]:.2f} "
            f"ms/trial; Kiln adds {out['added_mean'][-1]:+.2f} ms (median "
            f"{out['added_median'][-1]:+.2f})",
            flush=True,
        )
    if sqlite:
        res = _python(OVERHEAD, "optuna-sqlite", sampler, str(n), "7", home=tmp / f"{sampler}-rdb")
        out["optuna-sqlite"] = [float(res["seconds"]) * 1000 / n]  # type: ignore[arg-type]
        print(f"    optuna on SQLite: {out['optuna-sqlite'][-1]:.2f} ms/trial", flush=True)
    return out


def parallel(tmp: Path, executor: str, n: int, sleep_s: float) -> tuple[float, float]:
    one = _python(PARALLEL, "1", executor, str(n), str(sleep_s), home=tmp / f"p1-{executor}")
    two = _python(PARALLEL, "2", executor, str(n), str(sleep_s), home=tmp / f"p2-{executor}")
    return float(one["seconds"]), float(two["seconds"])  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
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

    added = med(tpe["added_mean"])
    rows = [
        (
            f"(1) {args.trials:,}-trial TPE study, trivial 5-parameter objective, every trial "
            "a tracked run",
            f"{med(tpe['kiln']):.2f} ms/trial",
            f"Optuna in memory {med(tpe['optuna']):.2f} ms/trial; Kiln adds {added:+.2f} ms "
            f"per trial (median trial {med(tpe['added_median']):+.2f} ms; rounds: "
            f"{runs(tpe['added_mean'])}); the whole `kiln.tune` call "
            f"{med(tpe['whole']) / args.trials:.2f} ms/trial; Optuna on SQLite "
            f"{med(tpe['optuna-sqlite']):.2f} ms/trial "
            f"({med(tpe['optuna-sqlite']) / med(tpe['kiln']):.1f}x Kiln)",
            "<= Optuna in memory + 1 ms",
            verdict(added, 1.0),
        ),
        (
            "(1b) the same with the random sampler (Kiln's own cost, without TPE's)",
            f"{med(rnd['kiln']):.2f} ms/trial",
            f"Optuna in memory {med(rnd['optuna']):.2f} ms/trial; Kiln adds "
            f"{med(rnd['added_mean']):+.2f} ms per trial (median trial "
            f"{med(rnd['added_median']):+.2f} ms; rounds: {runs(rnd['added_mean'])})",
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
        f"(1): medians of {args.rounds} rounds, each a fresh process and Kiln home. In a "
        "round, Kiln's study runs and, from its trial callback, an Optuna study with the "
        "same sampler options and seed (in memory, `ask`/`tell`) runs its trial i beside "
        "Kiln's trial i, the order alternating (K0 P0 P1 K1 K2 P2 ...: the second of a "
        "pair finds the caches warm from the first, about 7% of TPE's time); Kiln's trial "
        "is timed from the end of its previous trial (sampling, its run with params, value "
        "and verdict, Optuna's `tell`), the sampled configurations are checked identical, "
        "and what Kiln adds is the mean of the per-trial differences (measured back to "
        "back in one process, a slow spell of the shared machine moves both alike). The "
        "whole `kiln.tune` call (creating and ending the study's run, storing the "
        "objective) is given less the Optuna trials inside it. Optuna on its SQLite "
        "storage runs once with `study.optimize`. (2): the whole `kiln.tune` call, starting "
        "its worker processes included; on Ray, after the instance started and a 2-trial "
        f"warm-up study ran; {parallel_s:.0f} s for both executors.\n\n"
        "| measurement | median | derived | target | met |\n|---|---|---|---|---|\n"
        + "".join(f"| {' | '.join(r)} |\n" for r in rows)
    )
    print(text)
    if args.write:
        replace_section(args.write, "tuning", text)


if __name__ == "__main__":
    main()
