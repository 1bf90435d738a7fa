"""The demo's hyperparameter study: the LightGBM candidate's settings, tuned before it
trains, inside its flow task.

The study tunes on the training rows alone (its own time-ordered split: the latest fifth
validates), so the validation set the demo compares candidates on stays unseen until
the final model is scored. Trials run in the task's process: the flow already trains
two candidates at once on a 2-core machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

import kiln
from kiln.tuning import Float, Int

__all__ = ["TUNE_ROUNDS", "TUNE_TRIALS", "tune_lightgbm"]

TUNE_TRIALS = 24
TUNE_ROUNDS = 60  # per trial: enough to rank settings, a third of the final model's
REPORT_EVERY = 10  # rounds between the reports the median pruner judges
SPACE: dict[str, Float | Int] = {
    "num_leaves": Int(8, 64),
    "learning_rate": Float(0.02, 0.3, log=True),
    "min_child_samples": Int(10, 80),
    "colsample_bytree": Float(0.5, 1.0),
    "reg_lambda": Float(1e-3, 10.0, log=True),
}


def _auc(y: np.ndarray, p: Any) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def tune_lightgbm(
    x: pd.DataFrame, y: np.ndarray, *, experiment: str, seed: int, threads: int, name: str
) -> kiln.tuning.Study:
    """A TPE study with median pruning over LightGBM's main settings; returns it ended."""
    import lightgbm as lgb

    cut = int(len(x) * 0.8)
    train = lgb.Dataset(x.iloc[:cut], y[:cut], free_raw_data=False)
    x_check, y_check = x.iloc[cut:], y[cut:]

    def objective(trial: kiln.tuning.Trial) -> float:
        params = {
            **trial.params,
            "objective": "binary",
            "subsample": 0.8,
            "subsample_freq": 1,
            "num_threads": threads,
            "seed": seed,
            "verbose": -1,
        }
        booster = lgb.Booster(params, train)
        auc = 0.5
        for done in range(1, TUNE_ROUNDS + 1):
            booster.update()
            if done % REPORT_EVERY == 0:
                auc = _auc(y_check, booster.predict(x_check))
                trial.report(auc, done)  # stops a trial the median says cannot catch up
        return auc

    return kiln.tune(
        objective,
        space=SPACE,
        n_trials=TUNE_TRIALS,
        direction="maximize",
        metrics="val_auc",
        sampler="tpe",
        pruner="median",
        seed=seed,
        experiment=experiment,
        name=name,
    )


def best_settings(study: kiln.tuning.Study) -> dict[str, Any]:
    return {k: study.best_params[k] for k in SPACE}
