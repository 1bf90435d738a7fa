"""The environment a model needs: the Python version and its flavor's package versions.

Recorded at registration; checked at load, where a different major version of Python or
of a recorded package warns with both versions (pickled models may break across them).
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from kiln.core import KilnWarning

__all__ = ["capture", "check", "differences"]


def capture(packages: Iterable[str]) -> dict[str, Any]:
    pinned: dict[str, str] = {}
    for name in packages:
        try:
            pinned[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"python": platform.python_version(), "packages": pinned}


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def differences(recorded: Mapping[str, Any]) -> list[str]:
    """Where this interpreter differs in a major version from the recorded environment."""
    out = []
    python = str(recorded.get("python", ""))
    here = platform.python_version()
    if python and python.split(".")[:2] != here.split(".")[:2]:
        out.append(f"Python {python} at registration, {here} now")
    for name, version in dict(recorded.get("packages", {})).items():
        try:
            current = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if _major(current) != _major(str(version)):
            out.append(f"{name} {version} at registration, {current} now")
    return out


def check(recorded: Mapping[str, Any], ref: str) -> None:
    diffs = differences(recorded)
    if diffs:
        warnings.warn(
            f"model {ref} was registered under other major versions ({'; '.join(diffs)}); "
            "its predictions may differ or loading may fail",
            KilnWarning,
            stacklevel=3,
        )
