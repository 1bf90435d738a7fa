"""XGBoost boosters and scikit-learn wrappers, stored in XGBoost's own UBJSON format.

The native format runs no code when loaded, unlike a pickle. A wrapper is rebuilt as its
own XGBoost class from the same file (which carries the wrapper's metadata), so
``predict`` returns labels for a classifier and ``predict_proba`` probabilities exactly
as the original object did; a raw Booster predicts on a ``DMatrix``, as it would when
called directly.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kiln.core import InvalidInput
from kiln.registry.flavors._base import (
    ModelFiles,
    import_optional,
    instance_from,
    output_array,
)
from kiln.registry.signature import Batch

__all__ = ["FLAVOR"]

_FILE = "model.ubj"
_METHODS = {
    "booster": ("predict",),
    "classifier": ("predict", "predict_proba"),
    "estimator": ("predict",),
}


def _wrapper_class(model: Any, xgboost: Any) -> type:
    """The XGBoost class to rebuild: the user's own subclass may not be importable later."""
    for cls in type(model).__mro__:
        if cls.__module__.split(".")[0] == "xgboost" and issubclass(cls, xgboost.XGBModel):
            return cls
    return type(model)  # unreachable for an XGBModel; XGBModel itself is in the MRO


def _resolve_wrapper(reference: str, xgboost: Any) -> Any:
    """The wrapper class named in the config, accepted only from XGBoost itself."""
    module, _, qualname = reference.partition(":")
    if module.split(".")[0] != "xgboost" or not qualname:
        raise InvalidInput(f"the xgboost model names wrapper {reference!r}, not an XGBoost class")
    cls: Any = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if not (isinstance(cls, type) and issubclass(cls, xgboost.XGBModel)):
        raise InvalidInput(f"the xgboost model names wrapper {reference!r}, not an XGBoost class")
    return cls


class _BoosterPredictor:
    def __init__(self, xgboost: Any, booster: Any) -> None:
        self._xgboost = xgboost
        self._booster = booster
        self._names = booster.feature_names

    def predict(self, batch: Batch) -> np.ndarray:
        # A booster trained on named features refuses an unnamed DMatrix, so the names
        # travel with the data: from the batch's columns, or from the booster itself.
        if self._names is not None and batch.names:
            data = self._xgboost.DMatrix(batch.to_pandas(), enable_categorical=True)
        else:
            arr = batch.to_numpy()
            names = self._names if self._names and arr.ndim == 2 else None
            if names is not None and arr.shape[1] != len(names):
                names = None
            data = self._xgboost.DMatrix(arr, feature_names=names)
        return output_array(self._booster.predict(data))


class _WrapperPredictor:
    def __init__(self, wrapper: Any, method: str) -> None:
        self._fn = getattr(wrapper, method)
        self._pandas = wrapper.get_booster().feature_names is not None

    def predict(self, batch: Batch) -> np.ndarray:
        data = batch.to_pandas() if self._pandas and batch.names else batch.to_numpy()
        return output_array(self._fn(data))


class XGBoostFlavor:
    name = "xgboost"
    packages = ("xgboost", "numpy")

    def matches(self, model: object) -> bool:
        return instance_from(model, "xgboost", "Booster", "XGBModel")

    def save(self, model: Any, dst: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        import xgboost

        config: dict[str, Any] = {"file": _FILE, "wrapper": "booster"}
        if not isinstance(model, xgboost.Booster):
            if not model.__sklearn_is_fitted__():
                raise InvalidInput(
                    f"the {type(model).__name__} is not fitted; call fit before registering"
                )
            cls = _wrapper_class(model, xgboost)
            config["kind"] = (
                "classifier" if isinstance(model, xgboost.XGBClassifier) else "estimator"
            )
            config["wrapper"] = f"{cls.__module__}:{cls.__qualname__}"
            # ``missing`` changes which values count as absent, and it is the one
            # prediction-time setting the saved file does not carry.
            missing = getattr(model, "missing", math.nan)
            if missing is not None and math.isfinite(float(missing)):
                config["missing"] = float(missing)
        kind = config.get("kind", "booster")
        method = str(options.get("method") or "predict")
        allowed = _METHODS[kind]
        if method not in allowed:
            raise InvalidInput(
                f"method {method!r} is not available for this XGBoost model; use one of "
                f"{', '.join(allowed)}"
            )
        config["method"] = method
        dst.mkdir(parents=True, exist_ok=True)
        model.save_model(str(dst / _FILE))
        return config

    def load(
        self, files: ModelFiles, config: Mapping[str, Any]
    ) -> _BoosterPredictor | _WrapperPredictor:
        xgboost = import_optional("xgboost", self.name, "xgboost")
        raw = bytearray(files.read(str(config.get("file", _FILE))))
        reference = str(config.get("wrapper", "booster"))
        if reference == "booster":
            booster = xgboost.Booster()
            booster.load_model(raw)
            return _BoosterPredictor(xgboost, booster)
        params: dict[str, Any] = {}
        if config.get("missing") is not None:
            params["missing"] = float(config["missing"])
        wrapper = _resolve_wrapper(reference, xgboost)(**params)
        wrapper.load_model(raw)
        method = str(config.get("method", "predict"))
        if method not in _METHODS.get(str(config.get("kind")), ("predict",)):
            raise InvalidInput(f"the xgboost model has no method {method!r} to predict with")
        return _WrapperPredictor(wrapper, method)


FLAVOR = XGBoostFlavor()
