"""A step's code identity: its source and the source of the project code it calls.

Changing a step's body, or a helper function of the project that the step calls (directly
or through other helpers), changes the hash and so the step's cache key; editing an
unrelated function in the same module does not (a whole-module hash would rerun every
step of a module on any edit). Code of installed libraries and of the standard library is
not hashed: upgrading a library is an environment change, not a code change.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import sysconfig
import types
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["code_hash"]


@cache
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.add(str(Path(sys.prefix)))
    roots.add(str(Path(sys.base_prefix)))
    return tuple(sorted(str(Path(r).resolve()) for r in roots))


def _is_project(obj: Any) -> bool:
    """Defined in a file of the user's project: not a library, not Kiln, not built in."""
    name = getattr(obj, "__module__", None) or ""
    if name == "kiln" or name.startswith("kiln."):
        return False
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if path is None:
        return name == "__main__"
    resolved = str(Path(path).resolve())
    if "site-packages" in resolved or "dist-packages" in resolved:
        return False
    return not any(resolved.startswith(root + "/") for root in _library_roots())


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        return code.co_code.hex() if code is not None else repr(obj)


def _names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _unwrap(obj: Any) -> Any:
    # a step (or anything wrapping a function) is hashed by the function it wraps
    inner = getattr(obj, "fn", None)
    if callable(inner) and hasattr(inner, "__code__"):
        return inner
    return inspect.unwrap(obj) if callable(obj) else obj


def _referenced(fn: Callable[..., Any]) -> Iterator[Any]:
    """Project functions and classes ``fn`` names, found through its globals."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return
    scope = getattr(fn, "__globals__", {})
    names = set(_names(code))
    for name in sorted(names):
        obj = scope.get(name)
        if obj is None:
            continue
        if isinstance(obj, types.ModuleType):  # helpers.clean(...): the attributes used
            for attr in sorted(names):
                member = getattr(obj, attr, None)
                if member is not None and not isinstance(member, types.ModuleType):
                    yield _unwrap(member)
        else:
            yield _unwrap(obj)


def code_hash(fn: Callable[..., Any]) -> str:
    """sha256 over ``fn``'s source and, transitively, the project code it references."""
    digest = hashlib.sha256()
    seen: set[int] = set()
    pending = [_unwrap(fn)]
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not _is_project(obj):
            continue
        digest.update(f"{obj.__module__}.{obj.__qualname__}\n".encode())
        digest.update(_source(obj).encode())
        if inspect.isclass(obj):
            members = [m for m in vars(obj).values() if inspect.isfunction(m)]
            for member in members:
                pending.extend(_referenced(member))
        else:
            pending.extend(_referenced(obj))
    return digest.hexdigest()
