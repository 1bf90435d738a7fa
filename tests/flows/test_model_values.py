"""Models returned by steps are stored in their registry flavor's format and come back as
the same objects; models whose stored form would not are pickled instead."""

from __future__ import annotations

import zipfile
from io import BytesIO
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import torch
import xgboost as xgb
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import kiln
from kiln.flows import _values
from kiln.registry import step_values
from kiln.tracking import default_client

X = pd.DataFrame(np.random.default_rng(0).standard_normal((200, 3)), columns=["a", "b", "c"])
Y = (X["a"] + X["b"] > 0).astype(int)


class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def round_trip(value: Any) -> tuple[str, Any]:
    ref = _values.store_value(value, default_client().blobs)
    return ref.kind, _values.load(ref, default_client().blobs)


def test_the_library_lists_agree() -> None:
    assert set(step_values.LIBRARIES) == _values._MODEL_LIBRARIES


def test_scikit_learn_lightgbm_and_xgboost_models_round_trip_in_their_flavor_format() -> None:
    logistic = LogisticRegression().fit(X, Y)
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, Y), 5)
    classifier = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(X, Y)
    for model, method in (
        (logistic, "predict_proba"),
        (booster, "predict"),
        (classifier, "predict_proba"),
    ):
        kind, back = round_trip(model)
        assert kind == "model" and type(back) is type(model)
        np.testing.assert_allclose(getattr(back, method)(X), getattr(model, method)(X))
    kind, data, _ = _values.dump(booster)
    with zipfile.ZipFile(BytesIO(bytes(data))) as archive:  # LightGBM's own text model
        assert archive.read("model.txt").startswith(b"tree")


def test_a_torchscript_module_round_trips_and_an_eager_one_is_pickled() -> None:
    scripted = torch.jit.script(Double())
    kind, back = round_trip(scripted)
    assert kind == "model"
    assert torch.equal(back(torch.ones(2)), torch.full((2,), 2.0))
    kind, eager = round_trip(Double())
    assert kind == "pickle" and isinstance(eager, Double)


@pytest.mark.parametrize(
    "model",
    [
        lgb.LGBMClassifier(n_estimators=3, verbose=-1).fit(X, Y),  # reads back as a Booster
        StandardScaler().fit(X),  # no predict: not a flavor's model
        xgb.XGBClassifier(),  # not fitted: the flavor refuses it
    ],
    ids=["lightgbm-wrapper", "transformer", "unfitted"],
)
def test_models_whose_stored_form_would_differ_are_pickled_as_they_are(model: Any) -> None:
    kind, back = round_trip(model)
    assert kind == "pickle" and type(back) is type(model)


@kiln.step
def fit_booster(rounds: int) -> lgb.Booster:
    return lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, Y), rounds)


@kiln.step
def score(model: lgb.Booster) -> list[float]:
    return [float(p) for p in model.predict(X.head(3))]


@kiln.flow
def fit_then_score(rounds: int = 5) -> list[float]:
    return score(fit_booster(rounds))


def test_a_model_travels_between_worker_processes_in_its_flavor_format() -> None:
    run = fit_then_score.run(rounds=5, executor="processes", max_parallel=1)
    stored = {t.step: t.output for t in run.tasks()}
    assert stored["fit_booster"] is not None and stored["fit_booster"].kind == "model"
    expected = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, Y), 5)
    np.testing.assert_allclose(run.result, expected.predict(X.head(3)))
