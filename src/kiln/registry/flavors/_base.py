"""The contract every flavor meets, and the verified files a flavor loads from.

A flavor is one small module with a ``FLAVOR`` object that can tell whether it handles a
model object, save it into a directory, and load it back from bytes that the registry
has already checked against their recorded sha256. Loading from verified bytes (never
from a path that could change between the check and the read) is what makes the
integrity check meaningful for formats that run code when loaded.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kiln.core import InvalidInput, MissingDependency
from kiln.registry.signature import Batch

__all__ = [
    "Flavor",
    "ModelFiles",
    "Predictor",
    "from_library",
    "import_optional",
    "instance_from",
    "method_of",
    "output_array",
]


class Predictor(Protocol):
    """A loaded model: one vectorized call from a :class:`Batch` to a numpy array."""

    def predict(self, batch: Batch) -> np.ndarray: ...


class Flavor(Protocol):
    """Save and load one kind of model.

    - ``name``: the flavor's name as stored with each version (``sklearn``, ``lightgbm``...)
    - ``packages``: distributions whose versions are recorded as the model's environment
    - ``matches(model)``: whether this flavor handles the object (must not import the
      flavor's library unless the object came from it)
    - ``save(model, dst, options)``: write the model's files under the directory ``dst``
      and return the JSON-able config ``load`` needs
    - ``load(files, config)``: a :class:`Predictor` from the verified files
    """

    name: str
    packages: tuple[str, ...]

    def matches(self, model: object) -> bool: ...

    def save(self, model: Any, dst: Path, options: Mapping[str, Any]) -> dict[str, Any]: ...

    def load(self, files: ModelFiles, config: Mapping[str, Any]) -> Predictor: ...


class ModelFiles:
    """The files of one model package, each already verified against its sha256."""

    def __init__(self, files: Mapping[str, bytes], *, prefix: str = "", cache_dir: Path) -> None:
        self._files = files
        self._prefix = prefix
        self._cache_dir = cache_dir
        self._local: Path | None = None

    def scoped(self, prefix: str) -> ModelFiles:
        return ModelFiles(self._files, prefix=f"{self._prefix}{prefix}/", cache_dir=self._cache_dir)

    def names(self) -> list[str]:
        n = len(self._prefix)
        return sorted(p[n:] for p in self._files if p.startswith(self._prefix))

    def read(self, name: str) -> bytes:
        try:
            return self._files[f"{self._prefix}{name}"]
        except KeyError:
            raise InvalidInput(
                f"the model package has no file {self._prefix}{name!r}; it has {self.names()}"
            ) from None

    def local_dir(self) -> Path:
        """The verified bytes written to a fresh private directory, for path-based loaders.

        Each call site gets its own directory (mode 0700), so nothing another process wrote
        is ever read back.
        """
        if self._local is None:
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix="kiln-model-", dir=self._cache_dir))
            n = len(self._prefix)
            for path, data in self._files.items():
                if path.startswith(self._prefix):
                    target = root / path[n:]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        out.write(data)
            self._local = root
        return self._local


def import_optional(module: str, flavor: str, extra: str) -> Any:
    """Import a flavor's library, or MissingDependency with the pip command that adds it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(
            f"the {flavor} flavor needs {module.split('.')[0]}: pip install 'kiln[{extra}]'"
        ) from None


def from_library(model: object, *prefixes: str) -> bool:
    """Whether any class in the object's MRO is defined in one of the named libraries."""
    return any(
        cls.__module__ == p or cls.__module__.startswith(f"{p}.")
        for cls in type(model).__mro__
        for p in prefixes
    )


def instance_from(model: object, library: str, *classes: str) -> bool:
    """Whether ``model`` is an instance of ``library.<class>`` for one of ``classes``.

    The library is imported only when the object's own classes come from it, so
    detecting a scikit-learn model never imports PyTorch.
    """
    if not from_library(model, library):
        return False
    import importlib

    module = importlib.import_module(library)
    return isinstance(model, tuple(getattr(module, c) for c in classes))


def output_array(value: Any) -> np.ndarray:
    """A model's output as numpy, whatever container the library returned."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "to_numpy"):
        return np.asarray(value.to_numpy())
    return np.asarray(value)


def method_of(model: Any, config: Mapping[str, Any], flavor: str) -> Any:
    method = str(config.get("method", "predict"))
    fn = getattr(model, method, None)
    if not callable(fn):
        raise InvalidInput(f"the {flavor} model has no method {method!r} to predict with")
    return fn
