"""Layer 3: the model registry.

Models are packaged by flavor (scikit-learn, LightGBM, XGBoost, PyTorch, ONNX, Python
function) with a signature and environment, stored as hash-verified versions numbered per
model, and promoted or rolled back by moving aliases whose every move is recorded. The
verbs are in :mod:`kiln.registry.models`, exposed as ``kiln.models``.
"""

from kiln.registry import models
from kiln.registry.flavors import FLAVOR_NAMES
from kiln.registry.loading import LoadedModel
from kiln.registry.python_model import ModelContext, PythonModel
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
