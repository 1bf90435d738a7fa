"""Names and references: ``fraud``, ``fraud/3``, ``fraud@champion``, ``fraud/latest``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kiln.core import InvalidInput

MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
RESERVED_ALIASES = frozenset({"latest"})


def check_model_name(name: Any) -> str:
    if not isinstance(name, str) or not MODEL_RE.match(name):
        raise InvalidInput(
            "model name must be 1-128 letters, digits, '_', '-' or '.', starting with a "
            f"letter or digit; got {name!r}"
        )
    return name


def check_alias(alias: Any) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.match(alias):
        raise InvalidInput(
            "alias must be 1-64 letters, digits, '_' or '-', starting with a letter or '_'; "
            f"got {alias!r}"
        )
    if alias in RESERVED_ALIASES:
        raise InvalidInput(f"alias {alias!r} is reserved (it always means the newest version)")
    return alias


def check_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int | str):
        raise InvalidInput(f"model version must be a positive integer; got {version!r}")
    try:
        number = int(version)
    except ValueError:
        raise InvalidInput(f"model version must be a positive integer; got {version!r}") from None
    if number < 1 or number >= 1 << 31:
        raise InvalidInput(f"model version must be a positive integer; got {version!r}")
    return number


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: exactly one of ``version`` and ``alias`` (or neither: latest)."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        if self.version is not None:
            return f"{self.name}/{self.version}"
        return f"{self.name}/latest"


def parse_ref(ref: Any) -> ModelRef:
    """Parse ``name``, ``name/<version>``, ``name/latest`` or ``name@<alias>``."""
    if not isinstance(ref, str) or not ref:
        raise InvalidInput(
            f"a model reference is 'name', 'name/<version>' or 'name@<alias>'; got {ref!r}"
        )
    if "@" in ref:
        name, _, alias = ref.partition("@")
        if alias == "latest":
            return ModelRef(check_model_name(name))
        return ModelRef(check_model_name(name), alias=_ref_alias(ref, alias))
    if "/" in ref:
        name, _, version = ref.partition("/")
        if version == "latest":
            return ModelRef(check_model_name(name))
        if not version.isdigit():
            raise InvalidInput(
                f"model reference {ref!r}: the part after '/' must be a version number or "
                "'latest' (use 'name@alias' for an alias)"
            )
        return ModelRef(check_model_name(name), version=check_version(version))
    return ModelRef(check_model_name(ref))


def _ref_alias(ref: str, alias: str) -> str:
    if not ALIAS_RE.match(alias):
        raise InvalidInput(f"model reference {ref!r}: {alias!r} is not a valid alias name")
    return alias
