"""Model flavors: one small module per kind of model, each with a ``FLAVOR`` object.

Modules are imported only when asked for, so a flavor's library (XGBoost, PyTorch,
ONNX Runtime) is needed only by the models that use it.
"""

from __future__ import annotations

import importlib
from typing import Any

from kiln.core import InvalidInput
from kiln.registry.flavors._base import Flavor, ModelFiles, Predictor

__all__ = ["FLAVOR_NAMES", "Flavor", "ModelFiles", "Predictor", "detect", "get_flavor"]

# Detection order matters: LightGBM's and XGBoost's estimators are also scikit-learn
# estimators, and anything with a ``predict`` method is a Python-function model.
_MODULES = {
    "lightgbm": "kiln.registry.flavors.lightgbm",
    "xgboost": "kiln.registry.flavors.xgboost",
    "pytorch": "kiln.registry.flavors.pytorch",
    "onnx": "kiln.registry.flavors.onnx",
    "sklearn": "kiln.registry.flavors.sklearn",
    "pyfunc": "kiln.registry.flavors.pyfunc",
}
FLAVOR_NAMES = tuple(_MODULES)


def get_flavor(name: str) -> Flavor:
    module = _MODULES.get(name)
    if module is None:
        raise InvalidInput(f"unknown model flavor {name!r}; known flavors: {', '.join(_MODULES)}")
    flavor: Flavor = importlib.import_module(module).FLAVOR
    return flavor


def detect(model: Any) -> Flavor:
    """The first flavor that handles ``model``, or InvalidInput saying what is supported."""
    for name in _MODULES:
        flavor = get_flavor(name)
        if flavor.matches(model):
            return flavor
    raise InvalidInput(
        f"cannot register a {type(model).__module__}.{type(model).__qualname__}: it is not a "
        "scikit-learn, LightGBM, XGBoost, PyTorch or ONNX model and has no predict method; "
        "wrap it in a kiln.models.PythonModel"
    )
