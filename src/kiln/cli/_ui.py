"""``kiln ui``: the dashboard."""

from __future__ import annotations

from typing import Annotated

import typer


def ui(
    host: Annotated[
        str, typer.Option(help="Address to bind (beyond 127.0.0.1 needs a token).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to bind (0: any free one).")
    ] = 5000,
    token: Annotated[
        str | None,
        typer.Option(
            help="Required of every request (default: KILN_UI_TOKEN).", show_default=False
        ),
    ] = None,
    allow_writes: Annotated[
        bool, typer.Option("--allow-writes", help="Enable the rollout, resume and cancel actions.")
    ] = False,
) -> None:
    """Serve the dashboard over runs, models and deployments until Ctrl-C; read-only
    unless --allow-writes. The first line says where it listens."""
    from kiln.ui import serve_ui

    serve_ui(host=host, port=port, token=token, allow_writes=allow_writes)
