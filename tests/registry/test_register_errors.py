"""Models that cannot serve are refused at registration with InvalidInput, cause chained."""

from __future__ import annotations

from typing import Any

import lightgbm
import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import kiln
from kiln.errors import InvalidInput, NotFound

X = pd.DataFrame({"amount": [1.0, -2.0, 3.5, 0.2], "hour": [1.0, 5.0, 23.0, 12.0]})
Y = np.array([0, 1, 1, 0])


class _Failing(kiln.models.PythonModel):
    def predict(self, model_input: Any) -> Any:
        raise KeyError("column 'segment' is missing")


def _refused(model: Any, name: str, *, example: Any = X) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        kiln.models.register(name, model, input_example=example)
    with pytest.raises(NotFound):  # nothing was stored
        kiln.models.get_model(name)
    return caught.value


@pytest.mark.parametrize(
    ("model", "flavor"),
    [
        (LogisticRegression(), "sklearn"),
        (make_pipeline(StandardScaler(), LogisticRegression()), "sklearn"),
        (lightgbm.LGBMClassifier(n_estimators=5), "lightgbm"),
        (lightgbm.LGBMRegressor(n_estimators=5), "lightgbm"),
    ],
    ids=["logistic-regression", "pipeline", "lgbm-classifier", "lgbm-regressor"],
)
def test_an_unfitted_model_is_invalid_input_naming_the_model(model: Any, flavor: str) -> None:
    err = _refused(model, "fraud")
    message = str(err)
    assert "cannot register model 'fraud'" in message
    assert f"the {flavor} model is not fitted; fit it before registering" in message
    assert "NotFittedError" in message
    assert isinstance(err.__cause__, NotFittedError)


def test_a_model_whose_predict_fails_on_the_example_is_invalid_input() -> None:
    err = _refused(_Failing(), "segmenter")
    assert "cannot register model 'segmenter'" in str(err)
    assert "the pyfunc model failed while predicting on input_example" in str(err)
    assert "KeyError" in str(err) and "column 'segment' is missing" in str(err)
    assert isinstance(err.__cause__, KeyError)


def test_an_example_the_fitted_model_cannot_take_is_invalid_input() -> None:
    model = lightgbm.LGBMClassifier(n_estimators=5, min_child_samples=1, verbose=-1).fit(X, Y)
    err = _refused(model, "fraud", example=X[["amount"]])
    assert "cannot register model 'fraud': the lightgbm model failed while predicting" in str(err)
    assert isinstance(err.__cause__, lightgbm.basic.LightGBMError)


def test_kiln_errors_pass_through_unchanged() -> None:
    model = LogisticRegression().fit(X, Y)
    with pytest.raises(InvalidInput, match="no method 'transform'") as caught:
        kiln.models.register("fraud", model, input_example=X, method="transform")
    assert caught.value.__cause__ is None
