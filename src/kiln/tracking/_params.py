"""Param values: stored as text plus their type, with a numeric copy for filters."""

from __future__ import annotations

import json
import math
from typing import Any

from kiln.core import InvalidInput

Encoded = tuple[str, str, float | None]  # text, type, numeric value


def encode(key: str, value: Any) -> Encoded:
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        value = item()
    if value is None:
        return "null", "none", None
    if isinstance(value, bool):
        return ("true" if value else "false"), "bool", None
    if isinstance(value, int):
        return str(value), "int", float(value)
    if isinstance(value, float):
        return repr(value), "float", value if math.isfinite(value) else None
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInput(f"param {key!r} must not contain a NUL character")
        return value, "str", None
    try:
        return json.dumps(value, sort_keys=True), "json", None
    except (TypeError, ValueError):
        raise InvalidInput(
            f"param {key!r} must be a number, string, bool, None or JSON-serializable "
            f"list/dict; got {type(value).__name__}"
        ) from None


def decode(text: str, kind: str) -> Any:
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        return text == "true"
    if kind == "none":
        return None
    if kind == "json":
        return json.loads(text)
    return text
