"""Checkpoints of gradient-boosting training: callbacks for LightGBM and XGBoost, and the
model and round count to continue from.

A boosted model is its trees, so the checkpoint stores the library's own model format
(LightGBM's text, XGBoost's UBJSON) and the number of rounds done: no torch, and readable
by the library's next versions. Continuing with ``init_model=`` / ``xgb_model=`` for the
remaining rounds grows the same trees an uninterrupted run would, as long as training
draws no random samples: row and column subsampling (``bagging_fraction``,
``feature_fraction``; ``subsample``, ``colsample_*``) restart their generators when
training continues, in both libraries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kiln.core import InvalidInput
from kiln.training.checkpoints import Checkpointer

if TYPE_CHECKING:
    import lightgbm
    import xgboost

__all__ = ["lightgbm_checkpoint", "resume_lightgbm", "resume_xgboost", "xgboost_checkpoint"]

LIGHTGBM_KEY = "lightgbm_model"
XGBOOST_KEY = "xgboost_model"
_ORDER = 40  # after LightGBM's own callbacks (early stopping is 30): save what they kept


def _check(ckpt: Any, every: Any, caller: str) -> int | None:
    if not isinstance(ckpt, Checkpointer):
        raise InvalidInput(
            f"The 'ckpt' parameter of {caller} must be a kiln.training.Checkpointer; got "
            f"{type(ckpt).__name__}"
        )
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise InvalidInput(
            f"The 'every' parameter of {caller} must be a positive integer (rounds between "
            f"checkpoints) or None (the Checkpointer's every); got {every!r}"
        )
    return every


def _due(ckpt: Checkpointer, every: int | None, rounds: int) -> bool:
    return ckpt.due(rounds) if every is None else rounds % every == 0 or ckpt.preempted


def lightgbm_checkpoint(ckpt: Checkpointer, *, every: int | None = None) -> Callable[[Any], None]:
    """A ``lgb.train(callbacks=[...])`` callback saving the booster every ``every`` rounds
    (default: the Checkpointer's ``every``) and after the last, with the evaluation
    results as metrics (``"valid_0-l2"``...)."""
    every = _check(ckpt, every, "lightgbm_checkpoint")

    def save_booster(env: Any) -> None:
        rounds = env.iteration + 1
        if not (_due(ckpt, every, rounds) or rounds == env.end_iteration):
            return
        booster = env.model
        if not callable(getattr(booster, "model_to_string", None)):
            raise InvalidInput(
                "lightgbm_checkpoint works with lgb.train (one booster); lgb.cv trains one "
                "booster per fold"
            )
        metrics = {
            f"{data}-{metric}": float(value)
            for data, metric, value, *_ in env.evaluation_result_list or []
        }
        state = {LIGHTGBM_KEY: booster.model_to_string(num_iteration=-1), "rounds": rounds}
        ckpt.save(state, rounds, metrics, force=True)

    save_booster.order = _ORDER  # type: ignore[attr-defined]  # LightGBM sorts callbacks by it
    return save_booster


def resume_lightgbm(ckpt: Checkpointer) -> tuple[lightgbm.Booster | None, int]:
    """``(init_model, rounds_done)`` from the latest checkpoint, ``(None, 0)`` without one:
    ``lgb.train(params, data, num_boost_round=total - done, init_model=init_model)``."""
    import lightgbm as lgb

    state = _restored(ckpt, LIGHTGBM_KEY, "resume_lightgbm")
    if state is None:
        return None, 0
    return lgb.Booster(model_str=state[LIGHTGBM_KEY]), int(state["rounds"])


def xgboost_checkpoint(
    ckpt: Checkpointer, *, every: int | None = None
) -> xgboost.callback.TrainingCallback:
    """An ``xgb.train(callbacks=[...])`` callback (also for the scikit-learn estimators'
    ``callbacks=``) saving the booster every ``every`` rounds (default: the
    Checkpointer's ``every``) and at the end, with the latest evaluation results as
    metrics (``"validation-rmse"``...)."""
    import xgboost as xgb

    every = _check(ckpt, every, "xgboost_checkpoint")

    class SaveBooster(xgb.callback.TrainingCallback):
        def __init__(self) -> None:
            super().__init__()
            self.saved = -1
            self.evals_log: Mapping[str, Any] = {}

        def after_iteration(
            self, model: Any, epoch: int, evals_log: xgb.callback.TrainingCallback.EvalsLog
        ) -> bool:
            self.evals_log = evals_log
            rounds = model.num_boosted_rounds()  # epochs restart at 0 when continuing
            if _due(ckpt, every, rounds):
                self._save(model, rounds, evals_log)
            return False

        def after_training(self, model: Any) -> Any:
            rounds = model.num_boosted_rounds()
            if rounds != self.saved and rounds > 0:
                self._save(model, rounds, self.evals_log)
            return model

        def _save(self, model: Any, rounds: int, evals_log: Mapping[str, Any]) -> None:
            if not isinstance(model, xgb.Booster):
                raise InvalidInput(
                    "xgboost_checkpoint works with xgb.train (one booster); xgb.cv trains "
                    "one booster per fold"
                )
            metrics = {
                f"{data}-{metric}": float(_last(values))
                for data, by_metric in evals_log.items()
                for metric, values in by_metric.items()
            }
            state = {XGBOOST_KEY: bytes(model.save_raw("ubj")), "rounds": rounds}
            ckpt.save(state, rounds, metrics, force=True)
            self.saved = rounds

    return SaveBooster()


def _last(values: Any) -> Any:
    last = values[-1]
    return last[0] if isinstance(last, tuple) else last  # xgb.cv logs (mean, std)


def resume_xgboost(ckpt: Checkpointer) -> tuple[xgboost.Booster | None, int]:
    """``(xgb_model, rounds_done)`` from the latest checkpoint, ``(None, 0)`` without one:
    ``xgb.train(params, dtrain, num_boost_round=total - done, xgb_model=xgb_model)``."""
    import xgboost as xgb

    state = _restored(ckpt, XGBOOST_KEY, "resume_xgboost")
    if state is None:
        return None, 0
    booster = xgb.Booster()
    booster.load_model(bytearray(state[XGBOOST_KEY]))
    return booster, int(state["rounds"])


def _restored(ckpt: Checkpointer, key: str, caller: str) -> dict[str, Any] | None:
    _check(ckpt, None, caller)
    checkpoint = ckpt.restore()
    if checkpoint is None:
        return None
    if key not in checkpoint.state or "rounds" not in checkpoint.state:
        raise InvalidInput(
            f"{caller}: checkpoint step {checkpoint.step} of run {checkpoint.run_id} was not "
            f"saved by the matching callback (it holds {', '.join(sorted(checkpoint.state))})"
        )
    return checkpoint.state
