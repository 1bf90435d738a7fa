"""scikit-learn estimators and pipelines, stored with joblib."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kiln.registry.flavors._base import ModelFiles, from_library, method_of, output_array
from kiln.registry.signature import Batch

__all__ = ["FLAVOR"]

_FILE = "model.joblib"


class _Predictor:
    def __init__(self, model: Any, config: Mapping[str, Any]) -> None:
        self._fn = method_of(model, config, "sklearn")
        self._pandas = bool(config.get("pandas"))

    def predict(self, batch: Batch) -> np.ndarray:
        data = batch.to_pandas() if self._pandas else batch.to_numpy()
        return output_array(self._fn(data))


class SklearnFlavor:
    name = "sklearn"
    packages = ("scikit-learn", "numpy", "scipy", "joblib")

    def matches(self, model: object) -> bool:
        return from_library(model, "sklearn")

    def save(self, model: Any, dst: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        import joblib

        config = {
            "file": _FILE,
            "method": str(options.get("method") or "predict"),
            # Estimators fitted on a DataFrame check column names, so they get one back.
            "pandas": hasattr(model, "feature_names_in_"),
        }
        method_of(model, config, self.name)
        dst.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, dst / _FILE)
        return config

    def load(self, files: ModelFiles, config: Mapping[str, Any]) -> _Predictor:
        import joblib

        model = joblib.load(io.BytesIO(files.read(str(config.get("file", _FILE)))))
        return _Predictor(model, config)


FLAVOR = SklearnFlavor()
