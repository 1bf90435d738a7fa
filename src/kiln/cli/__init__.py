"""The ``kiln`` command: a thin layer over the public SDK (Typer + Rich).

User mistakes end with one line on stderr and exit status 2, never a traceback; usage
errors are reported by the argument parser with the same status.
"""

from __future__ import annotations

import sys

import typer

from kiln.cli._app import app
from kiln.core import IntegrityError, KilnError, StoreUnavailable

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="kiln", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (StoreUnavailable, IntegrityError) as exc:
        print(f"kiln: error: {exc}", file=sys.stderr)
        return 1
    except KilnError as exc:
        print(f"kiln: error: {exc}", file=sys.stderr)
        return 2
    return 0
