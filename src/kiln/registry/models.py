"""``kiln.models``: the registry's verbs in one namespace.

::

    mv = kiln.models.register("fraud", model, input_example=X[:5], run=run)
    kiln.models.set_alias("fraud", "champion", mv.version, reason="best val_auc")
    model = kiln.models.load("fraud@champion")
    kiln.models.rollback("fraud", "champion")
"""

from __future__ import annotations

from kiln.registry.aliases import alias_history, delete_alias, resolve, rollback, set_alias
from kiln.registry.lineage import model_lineage as lineage
from kiln.registry.loading import LoadedModel, load
from kiln.registry.python_model import ModelContext, PythonModel
from kiln.registry.references import reference_profile
from kiln.registry.versions import (
    delete_model,
    delete_version,
    get_model,
    get_version,
    list_models,
    list_versions,
    register,
    update_model,
)

__all__ = [
    "LoadedModel",
    "ModelContext",
    "PythonModel",
    "alias_history",
    "delete_alias",
    "delete_model",
    "delete_version",
    "get_model",
    "get_version",
    "lineage",
    "list_models",
    "list_versions",
    "load",
    "reference_profile",
    "register",
    "resolve",
    "rollback",
    "set_alias",
    "update_model",
]
