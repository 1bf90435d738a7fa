"""``kiln serve``: run deployments behind the HTTP protocols."""

from __future__ import annotations

from typing import Annotated

import typer


def serve(
    deployments: Annotated[
        list[str] | None,
        typer.Argument(
            help="Deployments to serve (all stored ones when none and no --model is named)."
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="A registry model to serve without a stored deployment (fraud@champion, "
            "fraud/3), under its model's name; repeatable.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to bind.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    default: Annotated[
        str | None, typer.Option(help="The deployment answering /invocations.")
    ] = None,
    poll: Annotated[
        float, typer.Option(min=0.05, help="Seconds between checks for deployment changes.")
    ] = 0.5,
    no_prediction_log: Annotated[
        bool, typer.Option("--no-prediction-log", help="Do not log predictions.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="Server log level.")] = "warning",
) -> None:
    """Serve deployments over the Open Inference Protocol v2, MLflow and Kiln native APIs.

    Prints one line per deployment once the server answers: its URL, or why it cannot be
    served (the others are served all the same).
    """
    from kiln.serving import serve as run

    run(
        tuple(deployments or ()),
        models=tuple(model or ()),
        host=host,
        port=port,
        workers=workers,
        default=default,
        poll_s=poll,
        log_predictions=not no_prediction_log,
        log_level=log_level,
    )
