"""Suggestions for error messages: "did you mean ..." or the list of known names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["close_matches"]


def close_matches(word: str, choices: Iterable[str]) -> str:
    """A message suffix naming the closest known names, or listing them (up to ten)."""
    options = sorted(set(choices))
    near = difflib.get_close_matches(word, options, n=3, cutoff=0.5)
    if near:
        return f"; did you mean {', '.join(near)}?"
    if options:
        shown = ", ".join(options[:10]) + (", ..." if len(options) > 10 else "")
        return f"; known: {shown}"
    return ""
