"""LightGBM boosters and scikit-learn wrappers, stored as LightGBM's own text model.

The text format runs no code when loaded. For ``LGBMClassifier`` the class labels are
kept beside it so ``predict`` returns labels and ``predict_proba`` probabilities exactly
as the wrapper does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kiln.core import InvalidInput
from kiln.registry.flavors._base import ModelFiles, import_optional, instance_from
from kiln.registry.signature import Batch

__all__ = ["FLAVOR"]

_FILE = "model.txt"
_METHODS = {"booster": ("predict",), "classifier": ("predict", "predict_proba")}


class _Predictor:
    def __init__(self, booster: Any, config: Mapping[str, Any]) -> None:
        self._booster = booster
        self._pandas = booster.pandas_categorical is not None
        self._method = str(config.get("method", "predict"))
        self._classifier = config.get("wrapper") == "classifier"
        classes = config.get("classes")
        self._classes = (
            np.asarray(classes, dtype=config.get("classes_dtype")) if classes is not None else None
        )

    def predict(self, batch: Batch) -> np.ndarray:
        data = batch.to_pandas() if self._pandas else batch.to_numpy()
        raw = np.asarray(self._booster.predict(data))
        if not self._classifier:
            return raw
        proba = np.column_stack((1.0 - raw, raw)) if raw.ndim == 1 else raw
        if self._method == "predict_proba":
            return proba
        assert self._classes is not None
        labels: np.ndarray = self._classes[np.argmax(proba, axis=1)]
        return labels


class LightGBMFlavor:
    name = "lightgbm"
    packages = ("lightgbm", "numpy")

    def matches(self, model: object) -> bool:
        return instance_from(model, "lightgbm", "Booster", "LGBMModel")

    def save(self, model: Any, dst: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        import lightgbm

        config: dict[str, Any] = {"file": _FILE, "wrapper": "booster"}
        if isinstance(model, lightgbm.Booster):
            booster = model
        else:
            booster = model.booster_
            if isinstance(model, lightgbm.LGBMClassifier):
                classes = np.asarray(model.classes_)
                config.update(
                    wrapper="classifier",
                    classes=classes.tolist(),
                    classes_dtype=classes.dtype.str if classes.dtype.kind != "O" else None,
                )
        method = str(options.get("method") or "predict")
        allowed = _METHODS.get(config["wrapper"], ("predict",))
        if method not in allowed:
            raise InvalidInput(
                f"method {method!r} is not available for this LightGBM model; use one of "
                f"{', '.join(allowed)}"
            )
        config["method"] = method
        best = (
            booster.best_iteration
            if booster.best_iteration and booster.best_iteration > 0
            else None
        )
        dst.mkdir(parents=True, exist_ok=True)
        booster.save_model(str(dst / _FILE), num_iteration=best)
        return config

    def load(self, files: ModelFiles, config: Mapping[str, Any]) -> _Predictor:
        lightgbm = import_optional("lightgbm", self.name, "all")
        text = files.read(str(config.get("file", _FILE))).decode("utf-8")
        return _Predictor(lightgbm.Booster(model_str=text), config)


FLAVOR = LightGBMFlavor()
