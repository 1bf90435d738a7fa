"""Models written as plain Python: subclass :class:`PythonModel`, or pass any object with a
``predict`` method.

Files the model needs at prediction time (a vocabulary, a lookup table, another model)
are passed to ``register(..., artifacts={"name": "local/path"})``, stored and verified
with the model, and handed back to :meth:`PythonModel.load_context` as local paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = ["ModelContext", "PythonModel"]


@dataclass(frozen=True)
class ModelContext:
    """What a loading model gets: ``artifacts`` maps each registered name to a local path."""

    artifacts: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))


class PythonModel:
    """Base class for a model in plain Python.

    ``load_context`` runs once after loading (open files, build lookup tables);
    ``predict`` receives a pandas DataFrame for a column signature, or a numpy array
    for a tensor signature, and returns anything numpy can turn into an array.
    """

    def load_context(self, context: ModelContext) -> None:
        """Prepare for predictions; the default does nothing."""

    def predict(self, model_input: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement predict(model_input)")
