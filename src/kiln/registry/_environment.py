"""The environment a model needs: the Python version and its flavor's package versions.

Recorded at registration; checked at load, where a different major version of Python or
of a recorded package warns with both versions (pickled models may break across them).
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import metadata
from typing import Any

from kiln.core import KilnWarning

__all__ = ["capture", "check", "differences", "installed_version"]


@lru_cache(maxsize=256)
def installed_version(name: str) -> str | None:
    """The installed version of a distribution, read once per process.

    Reading package metadata parses files on disk (milliseconds for large packages);
    installed versions do not change under a running process.
    """
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def capture(packages: Iterable[str]) -> dict[str, Any]:
    pinned = {name: v for name in packages if (v := installed_version(name)) is not None}
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
        current = installed_version(name)
        if current is not None and _major(current) != _major(str(version)):
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
