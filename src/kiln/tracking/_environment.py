"""What the process that logs a run is: code version, interpreter, packages, host, command.

Captured once per process (git is asked once) and stored once per distinct value, so a
thousand runs of one script share one row.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from typing import Any

KEY_PACKAGES = (
    "kiln",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "lightgbm",
    "xgboost",
    "torch",
    "onnxruntime",
    "sqlalchemy",
)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@lru_cache(maxsize=4)
def _capture(pid: int) -> dict[str, Any]:
    packages = {}
    for name in KEY_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    commit = _git("rev-parse", "HEAD")
    dirty = None
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no")
        dirty = bool(status) if status is not None else None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "command": shlex.join(sys.argv) if sys.argv and sys.argv[0] else sys.executable,
        "git_commit": commit,
        "git_dirty": dirty,
        "packages": packages,
        "pid": pid,
    }


def current_environment() -> tuple[str, str]:
    """(id, JSON) of this process's environment; the id is the sha256 of the JSON."""
    return _identified(os.getpid())


@lru_cache(maxsize=4)
def _identified(pid: int) -> tuple[str, str]:
    """Per process (a forked child has its own): every run a process starts shares it."""
    data = json.dumps(_capture(pid), sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest(), data


def process_environment() -> dict[str, Any]:
    """This process's environment (code version, interpreter, packages, host, command)."""
    return dict(_capture(os.getpid()))
