"""The ``kiln`` command: a thin layer over the public SDK (Typer + Rich).

Every failure ends with exactly one line on stderr, ``kiln: error: ...``, and a non-zero
status, never a traceback or a boxed usage panel: scripts read it and people grep it.
Status 2 is a user mistake (a bad option or argument, an unknown name), status 1 a
failure of the environment (an unreachable store, a corrupted artifact, a disk error).
"""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING

from kiln.core import IntegrityError, KilnError, StoreUnavailable, lazy_exports

if TYPE_CHECKING:
    import typer

    from kiln.cli._app import app
else:
    # Typer, Rich and the command modules load when a command runs, so `kiln --version`
    # (a script's first probe) answers without them.
    __getattr__, __dir__ = lazy_exports(__name__, {"app": "kiln.cli._app"})

__all__ = ["app", "main"]


def _fail(message: object, code: int) -> int:
    text = " ".join(str(message).split()) or "failed"
    print(f"kiln: error: {text}", file=sys.stderr)
    return code


def _usage(exc: typer.TyperException) -> str:
    """The parser's message, then where to read more (its usage block would be lines more)."""
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if exc.exit_code == 2 and ctx is not None:
        message += f" (see '{ctx.command_path} -h')"
    return message


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    status = _run(argv)
    if argv is None:  # the command line's own process, which exits next
        # Its objects need no collecting: the collector's passes over every object at
        # exit took a sixth of a second here, more than running ten flow steps. Reference
        # counting still frees them, and atexit handlers (flushes, closes) run as usual.
        gc.freeze()
    return status


def _run(argv: list[str] | None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        import kiln

        print(f"kiln {kiln.__version__}")
        return 0
    runs_flow = args[:2] in (["flows", "run"], ["flows", "resume"])
    elsewhere = any(  # tasks run in this process or on Ray: no local worker to start
        a.removeprefix("--executor=") in ("inline", "-h", "--help")
        or a.removeprefix("--executor=").startswith("ray")
        for a in args
    )
    if runs_flow and not elsewhere:
        import kiln.flows

        kiln.flows.prestart()  # a worker process starts while the command loads
    import typer

    from kiln.cli._app import app

    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="kiln", standalone_mode=False)
    except typer.TyperException as exc:  # the parser's errors (Typer's own click)
        if type(exc).__name__ == "NoArgsIsHelpError":
            return 2  # a group run without a command: its help is printed already
        return _fail(_usage(exc), exc.exit_code)
    except SystemExit as exc:  # raised by code under a command (e.g. sys.exit)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except typer.Abort:
        return _fail("aborted", 1)
    except (StoreUnavailable, IntegrityError) as exc:
        return _fail(exc, 1)
    except KilnError as exc:
        return _fail(exc, 2)
    except OSError as exc:
        return _fail(exc, 1)
    except Exception as exc:  # a bug still gets one line, naming what broke
        return _fail(f"unexpected {type(exc).__name__}: {exc}", 1)
    return result if isinstance(result, int) else 0
