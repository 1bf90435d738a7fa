"""Rich rendering helpers and the options every command group shares."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
"""Every command that prints a result takes ``--json`` (a test walks the tree for it)."""


def report(as_json: bool, text: str, data: Mapping[str, Any]) -> None:
    """What a command did: ``data`` as one JSON object for scripts, else ``text`` as is.

    ``text`` is printed without markup, so names holding ``[...]`` stay literal.
    """
    if as_json:
        emit_json(dict(data))
    else:
        console.print(text, markup=False, highlight=False)


def emit_json(data: Any) -> None:
    print(
        json.dumps(data, indent=2, default=str, allow_nan=False)
        if _finite(data)
        else json.dumps(data, indent=2, default=str)
    )


def _finite(data: Any) -> bool:
    try:
        json.dumps(data, default=str, allow_nan=False)
    except ValueError:
        return False
    return True


# The dtypes a signature or request schema can hold that Kiln knows how to feed and read.
_KNOWN_DTYPES = frozenset(
    {
        "bool",
        *(f"int{n}" for n in (8, 16, 32, 64)),
        *(f"uint{n}" for n in (8, 16, 32, 64)),
        *(f"float{n}" for n in (16, 32, 64)),
        "string",
        "category",
    }
)


def dtype_label(dtype: str | None) -> str:
    """A dtype for people: a name Kiln does not know is shown as unknown, never as a guess.

    ``object`` (any Python values) and ``complex128`` are stored as numpy named them but
    no protocol column holds them, so a table calling them by any other name would lie.
    """
    if dtype is None or dtype == "":
        return "unknown"
    if dtype in _KNOWN_DTYPES or (dtype.startswith("datetime64[") and dtype.endswith("]")):
        return dtype
    return f"unknown ({dtype})"


def plain(value: Any) -> str | None:
    """User-supplied text for a Rich table cell: escaped so '[x]' stays literal; '' is None."""
    if value is None or value == "":
        return None
    return escape(str(value))


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.4e}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    out = Table(title=title, header_style="bold", title_justify="left")
    for col in columns:
        out.add_column(col, overflow="fold", no_wrap=col == "id")
    for row in rows:
        out.add_row(*(fmt(v) for v in row))
    return out


STATUS_STYLE = {
    "FINISHED": "green",
    "FAILED": "red",
    "KILLED": "yellow",
    "RUNNING": "cyan",
    "finished": "green",
    "cached": "blue",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "retrying": "yellow",
}


def status(value: str) -> str:
    return f"[{STATUS_STYLE.get(value, 'white')}]{value}[/]"
