"""Public names that load their module on first use (PEP 562).

``import kiln`` runs every package ``__init__`` it touches; were those to import their
modules eagerly, every command and server worker would pay for SQLAlchemy, Alembic,
numpy, DuckDB and pandas before doing anything. A package lists its public names with
the module each lives in, keeps the real imports under ``TYPE_CHECKING`` for the type
checker, and installs the two hooks this returns::

    if not TYPE_CHECKING:
        __getattr__, __dir__ = lazy_exports(__name__, {"Run": "kiln.tracking.run", ...})

A name whose module is the name itself (``"runs": "kiln.tracking.runs"``) is the module.
The hooks are hidden from the type checker so that a misspelt name stays an error.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, loading ``exports`` on first use.

    ``exports`` maps each public name to the absolute name of the module defining it.
    A loaded value is stored in the package's namespace, so later reads are plain
    attribute lookups.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(module_name)
        value = module if module_name.rpartition(".")[2] == name else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
