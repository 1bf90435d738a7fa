"""Python-function models: any object with a ``predict`` method, stored with cloudpickle.

cloudpickle stores classes defined in a script or notebook by value, so the model loads in
a fresh process that cannot import the script.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from kiln.core import InvalidInput, NotFound
from kiln.registry.flavors._base import ModelFiles, method_of, output_array
from kiln.registry.python_model import ModelContext
from kiln.registry.signature import Batch

__all__ = ["FLAVOR"]

_FILE = "python_model.pkl"
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class _Predictor:
    def __init__(self, model: Any, config: Mapping[str, Any]) -> None:
        self._fn = method_of(model, config, "pyfunc")
        self._tensor = config.get("input") == "tensor"

    def predict(self, batch: Batch) -> np.ndarray:
        return output_array(self._fn(batch.to_numpy() if self._tensor else batch.to_pandas()))


class PyfuncFlavor:
    name = "pyfunc"
    packages = ("cloudpickle", "numpy", "pandas")

    def matches(self, model: object) -> bool:
        return callable(getattr(model, "predict", None))

    def save(self, model: Any, dst: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        import cloudpickle

        config: dict[str, Any] = {
            "file": _FILE,
            "method": str(options.get("method") or "predict"),
            "input": options.get("input_kind", "columns"),
            "artifacts": {},
        }
        method_of(model, config, self.name)
        dst.mkdir(parents=True, exist_ok=True)
        for name, src in dict(options.get("artifacts") or {}).items():
            config["artifacts"][name] = _copy_artifact(name, Path(src), dst / "artifacts")
        try:
            payload = cloudpickle.dumps(model)
        except Exception as exc:
            raise InvalidInput(
                f"cannot serialize the {type(model).__name__} model with cloudpickle: {exc}"
            ) from None
        (dst / _FILE).write_bytes(payload)
        return config

    def load(self, files: ModelFiles, config: Mapping[str, Any]) -> _Predictor:
        import cloudpickle

        model = cloudpickle.loads(files.read(str(config.get("file", _FILE))))
        artifacts: dict[str, Path] = {}
        if config.get("artifacts"):
            root = files.local_dir()
            artifacts = {k: root / v for k, v in dict(config["artifacts"]).items()}
        load_context = getattr(model, "load_context", None)
        if callable(load_context):
            load_context(ModelContext(MappingProxyType(artifacts)))
        return _Predictor(model, config)


def _copy_artifact(name: Any, src: Path, root: Path) -> str:
    if not isinstance(name, str) or not name or not set(name) <= _NAME_OK or name in (".", ".."):
        raise InvalidInput(f"artifact names must be letters, digits, '_', '-' or '.'; got {name!r}")
    target = root / name
    if src.is_dir():
        shutil.copytree(src, target / src.name)
        return f"artifacts/{name}/{src.name}"
    if src.is_file():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target / src.name)
        return f"artifacts/{name}/{src.name}"
    raise NotFound(f"artifact {name!r}: no such file or directory {str(src)!r}")


FLAVOR = PyfuncFlavor()
