"""LightGBM and XGBoost checkpoints: interrupted and continued for the remaining rounds,
training ends with the same model as an uninterrupted run."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

import kiln
from kiln.core import InvalidInput
from kiln.training import (
    Checkpointer,
    lightgbm_checkpoint,
    resume_lightgbm,
    resume_xgboost,
    xgboost_checkpoint,
)

ROUNDS = 20
_rng = np.random.default_rng(0)
X = _rng.normal(size=(400, 6))
Y = 2 * X[:, 0] + np.sin(X[:, 1]) + 0.1 * _rng.normal(size=400)
LGB_PARAMS = {
    "objective": "regression",
    "num_leaves": 7,
    "learning_rate": 0.2,
    "deterministic": True,
    "num_threads": 1,
    "verbose": -1,
}
XGB_PARAMS = {"max_depth": 3, "eta": 0.2, "nthread": 1, "seed": 0}


class Interrupted(Exception):
    pass


def lgb_stop_after(rounds: int) -> Any:
    def stop(env: Any) -> None:
        if env.iteration + 1 == rounds:
            raise Interrupted

    stop.order = 50  # type: ignore[attr-defined]  # after the checkpoint callback
    return stop


class XgbStopAfter(xgb.callback.TrainingCallback):
    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        if model.num_boosted_rounds() == self.rounds:
            raise Interrupted
        return False


def trees(booster: lgb.Booster) -> str:
    """The model without its parameters section (which records num_iterations asked for)."""
    return booster.model_to_string().split("end of trees")[0]


def test_lightgbm_continues_to_the_same_model() -> None:
    whole = lgb.train(LGB_PARAMS, lgb.Dataset(X, Y), num_boost_round=ROUNDS)
    with kiln.start_run("boosting", "lgb") as run:
        ckpt = Checkpointer(run, every=5, keep_best=("valid_0-l2", "min"))
        with pytest.raises(Interrupted):
            lgb.train(
                LGB_PARAMS,
                lgb.Dataset(X, Y),
                num_boost_round=ROUNDS,
                valid_sets=[lgb.Dataset(X, Y)],
                callbacks=[lightgbm_checkpoint(ckpt), lgb_stop_after(13)],
            )
        infos = ckpt.checkpoints()
        assert [i.step for i in infos] == [5, 10]
        assert infos[-1].format == "pickle" and "valid_0-l2" in infos[-1].metrics
        init_model, done = resume_lightgbm(ckpt)
        assert done == 10 and init_model is not None
        rest = lgb.train(
            LGB_PARAMS,
            lgb.Dataset(X, Y),
            num_boost_round=ROUNDS - done,
            init_model=init_model,
            valid_sets=[lgb.Dataset(X, Y)],
            callbacks=[lightgbm_checkpoint(ckpt, every=4)],
        )
        assert [i.step for i in ckpt.checkpoints()] == [12, 16, 20]
    assert trees(rest) == trees(whole)
    assert np.array_equal(rest.predict(X), whole.predict(X))


def test_xgboost_continues_to_the_same_model() -> None:
    whole = xgb.train(XGB_PARAMS, xgb.DMatrix(X, label=Y), num_boost_round=ROUNDS)
    with kiln.start_run("boosting", "xgb") as run:
        ckpt = Checkpointer(run, every=4)
        data = xgb.DMatrix(X, label=Y)
        with pytest.raises(Interrupted):
            xgb.train(
                XGB_PARAMS,
                data,
                num_boost_round=ROUNDS,
                evals=[(data, "train")],
                verbose_eval=False,
                callbacks=[xgboost_checkpoint(ckpt), XgbStopAfter(10)],
            )
        infos = ckpt.checkpoints()
        assert [i.step for i in infos] == [4, 8]
        assert infos[-1].format == "pickle" and "train-rmse" in infos[-1].metrics
        booster, done = resume_xgboost(ckpt)
        assert done == 8 and booster is not None
        rest = xgb.train(
            XGB_PARAMS,
            xgb.DMatrix(X, label=Y),
            num_boost_round=ROUNDS - done,
            xgb_model=booster,
            callbacks=[xgboost_checkpoint(ckpt, every=5)],
        )
        assert [i.step for i in ckpt.checkpoints()] == [10, 15, 20]
    assert bytes(rest.save_raw("ubj")) == bytes(whole.save_raw("ubj"))
    assert np.array_equal(rest.predict(xgb.DMatrix(X)), whole.predict(xgb.DMatrix(X)))


def test_resuming_without_a_checkpoint_starts_from_nothing_and_others_are_refused() -> None:
    with kiln.start_run("boosting", "empty") as run, Checkpointer(run) as ckpt:
        assert resume_lightgbm(ckpt) == (None, 0)
        assert resume_xgboost(ckpt) == (None, 0)
        ckpt.save({"model": "something else"}, 3)
        with pytest.raises(InvalidInput, match=r"step 3 .* not saved by the matching callback"):
            resume_lightgbm(ckpt)
        with pytest.raises(InvalidInput, match="'every' parameter of xgboost_checkpoint"):
            xgboost_checkpoint(ckpt, every=0)
        with pytest.raises(InvalidInput, match="'ckpt' parameter of lightgbm_checkpoint"):
            lightgbm_checkpoint(run)  # type: ignore[arg-type]


def test_the_estimators_take_the_callbacks_and_the_last_save_has_the_metrics() -> None:
    with kiln.start_run("boosting", "sklearn") as run:
        with Checkpointer(run, every=3, keep_best=("validation_0-rmse", "min")) as ckpt:
            xgb.XGBRegressor(n_estimators=7, max_depth=2, callbacks=[xgboost_checkpoint(ckpt)]).fit(
                X, Y, eval_set=[(X, Y)], verbose=False
            )
            assert [i.step for i in ckpt.checkpoints()] == [3, 6, 7]
            assert all("validation_0-rmse" in i.metrics for i in ckpt.checkpoints())
        with Checkpointer(run, every=4) as ckpt:
            lgb.LGBMRegressor(n_estimators=6, num_leaves=4, verbose=-1).fit(
                X, Y, callbacks=[lightgbm_checkpoint(ckpt)]
            )
            assert [i.step for i in ckpt.checkpoints()][-2:] == [4, 6]
            _, done = resume_lightgbm(ckpt)
            assert done == 6
