"""Layer 3: the model registry.

Models are packaged by flavor (scikit-learn, LightGBM, XGBoost, PyTorch, ONNX, Python
function) with a signature and environment, stored as hash-verified versions numbered per
model, and promoted or rolled back by moving aliases whose every move is recorded. The
verbs are in :mod:`kiln.registry.models`, exposed as ``kiln.models``.
"""

from typing import TYPE_CHECKING

from kiln.core import lazy_exports
from kiln.registry.python_model import ModelContext, PythonModel

_RECORDS = (
    "AliasEvent",
    "FileEntry",
    "LineageNode",
    "ModelLineage",
    "ModelVersion",
    "RegisteredModel",
)
_SIGNATURE = ("Batch", "ColumnSpec", "Signature", "enforce", "infer_signature")

# Records and signatures need numpy, the verbs SQLAlchemy: each loads on first use.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "models": "kiln.registry.models",
            "FLAVOR_NAMES": "kiln.registry.flavors",
            "LoadedModel": "kiln.registry.loading",
            **dict.fromkeys(_RECORDS, "kiln.registry.records"),
            **dict.fromkeys(_SIGNATURE, "kiln.registry.signature"),
        },
    )

if TYPE_CHECKING:
    from kiln.registry import models
    from kiln.registry.flavors import FLAVOR_NAMES
    from kiln.registry.loading import LoadedModel
    from kiln.registry.records import (
        AliasEvent,
        FileEntry,
        LineageNode,
        ModelLineage,
        ModelVersion,
        RegisteredModel,
    )
    from kiln.registry.signature import Batch, ColumnSpec, Signature, enforce, infer_signature

__all__ = [
    "FLAVOR_NAMES",
    "AliasEvent",
    "Batch",
    "ColumnSpec",
    "FileEntry",
    "LineageNode",
    "LoadedModel",
    "ModelContext",
    "ModelLineage",
    "ModelVersion",
    "PythonModel",
    "RegisteredModel",
    "Signature",
    "enforce",
    "infer_signature",
    "models",
]
