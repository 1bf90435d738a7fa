"""Samplers and pruners by name: Optuna's own, never re-implemented.

A sampler is made per process from its name and a seed, so a trial sampled in a worker
process uses the same algorithm as the driver; each worker's seed is offset by the trial
number so two workers never draw the same sequence.
"""

from __future__ import annotations

import warnings
from typing import Any

from kiln.core import InvalidInput

__all__ = ["PRUNERS", "SAMPLERS", "check_pruner", "check_sampler", "make_pruner", "make_sampler"]

SAMPLERS = ("tpe", "gp", "cmaes", "random", "nsga2", "qmc")
PRUNERS = ("median", "hyperband", "successive_halving", "percentile", "none")


def check_sampler(name: str, n_objectives: int) -> str:
    if name not in SAMPLERS:
        raise InvalidInput(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    if n_objectives > 1 and name == "cmaes":
        raise InvalidInput(
            "sampler 'cmaes' optimizes one objective; for several use 'nsga2', 'tpe' or 'gp'"
        )
    return name


def check_pruner(name: str | None, n_objectives: int) -> str:
    name = "none" if name is None else name
    if name not in PRUNERS:
        raise InvalidInput(f"unknown pruner {name!r}; known: {', '.join(PRUNERS)} (or None)")
    if n_objectives > 1 and name != "none":
        raise InvalidInput(
            f"pruner {name!r} needs one objective; a multi-objective study takes pruner=None"
        )
    return name


def make_sampler(name: str, seed: int | None) -> Any:
    # Optuna marks some samplers experimental (their options may change); asking for
    # one by name is the user's choice, so the notice is not repeated at every trial.
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _sampler(name, seed)


def _sampler(name: str, seed: int | None) -> Any:
    import optuna.samplers as s

    if name == "tpe":
        # constant_liar: a trial still running counts as a bad one, so parallel workers
        # spread out instead of sampling the same promising point
        return s.TPESampler(seed=seed, constant_liar=True)
    if name == "gp":
        return s.GPSampler(seed=seed)
    if name == "cmaes":
        return s.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return s.RandomSampler(seed=seed)
    if name == "nsga2":
        return s.NSGAIISampler(seed=seed)
    return s.QMCSampler(seed=seed, warn_independent_sampling=False)


def make_pruner(name: str) -> Any:
    import optuna.pruners as p

    if name == "median":
        return p.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return p.HyperbandPruner()
    if name == "successive_halving":
        return p.SuccessiveHalvingPruner()
    if name == "percentile":
        return p.PercentilePruner(25.0, n_startup_trials=5)
    return p.NopPruner()
