"""``kiln monitor run|serve|report|events``: alert rules evaluated once (for cron) or on a
schedule with Prometheus metrics, drift reports, and the alert events they raised."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from kiln.cli._format import JsonOpt, console, emit_json, table

monitor_app = typer.Typer(
    help="Watch deployments: alert rules, drift reports and alert events.",
    no_args_is_help=True,
)

ConfigArg = Annotated[
    Path, typer.Argument(help="TOML file of [[monitor]] tables with [[monitor.rule]] ones.")
]
OnlyOpt = Annotated[
    list[str] | None,
    typer.Option("--deployment", help="Only the monitors of this deployment (repeatable)."),
]


def _monitors(config: Path, only: list[str] | None) -> list[Any]:
    from kiln.core import InvalidInput
    from kiln.monitoring import load_monitors

    monitors = load_monitors(config)
    if only:
        unknown = sorted(set(only) - {m.deployment for m in monitors})
        if unknown:
            raise InvalidInput(
                f"--deployment {', '.join(unknown)}: not monitored in {config}; it monitors "
                f"{', '.join(sorted({m.deployment for m in monitors}))}"
            )
        monitors = [m for m in monitors if m.deployment in only]
    return monitors


def _print_evaluation(evaluation: Any) -> None:
    name = escape(evaluation.deployment)
    console.print(
        f"[bold]{name}[/]: {len(evaluation.observations)} values judged over "
        f"{evaluation.since:%Y-%m-%d %H:%M} - {evaluation.until:%H:%M} UTC"
    )
    for event in evaluation.opened:
        console.print(f"  [red]fired[/] {escape(event.message)} (event {event.id})")
    for event in evaluation.resolved:
        console.print(f"  [green]resolved[/] {escape(event.message)} (event {event.id})")
    for rule, reasons in evaluation.problems.items():
        console.print(f"  [yellow]not judged[/] {escape(rule)}: {escape('; '.join(reasons))}")
    for event in evaluation.firing:
        console.print(
            f"  [red]firing[/] since {event.started_at:%Y-%m-%d %H:%M} UTC: "
            f"{escape(event.message)} (event {event.id})"
        )
    if not evaluation.firing:
        console.print("  no alert firing")


def _events_table(events: Any) -> Any:
    return table(
        None,
        ["id", "deployment", "rule", "subject", "value", "status", "since", "actions"],
        [
            (
                e.id,
                e.deployment,
                e.rule,
                e.subject,
                e.value,
                e.status,
                e.started_at,
                ", ".join(f"{a.kind} {a.state}" for a in e.actions),
            )
            for e in events
        ],
    )


@monitor_app.command("run")
def run(config: ConfigArg, only: OnlyOpt = None, as_json: JsonOpt = False) -> None:
    """Evaluate every monitor of CONFIG once (run it from cron), run the actions of the
    alerts it fires, and print what fired, resolved and still fires."""
    from kiln.monitoring import evaluate

    results = [evaluate(m) for m in _monitors(config, only)]
    if as_json:
        emit_json({"evaluations": [r.to_dict() for r in results]})
        return
    for result in results:
        _print_evaluation(result)


@monitor_app.command("serve")
def serve(
    config: ConfigArg,
    only: OnlyOpt = None,
    host: Annotated[str, typer.Option(help="Address the metrics listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port of /metrics (0: any free one).")
    ] = 9108,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate every monitor of CONFIG on its schedule (its ``every``) until SIGTERM or
    Ctrl-C, run alert actions (retrying webhooks), and export the values as Prometheus
    metrics at http://HOST:PORT/metrics. The first line says where it listens."""
    from prometheus_client import CollectorRegistry, start_http_server

    from kiln.monitoring import MonitorService

    monitors = _monitors(config, only)

    def say(text: str, data: dict[str, Any]) -> None:
        print(json.dumps(data, default=str) if as_json else text, flush=True)

    def evaluated(monitor: Any, evaluation: Any, error: str | None) -> None:
        if evaluation is None:
            say(
                f"{monitor.deployment}: evaluation failed: {error}",
                {"event": "error", "deployment": monitor.deployment, "error": error},
            )
            return
        for event in evaluation.opened:
            say(f"{monitor.deployment}: fired {event.message} (event {event.id})",
                {"event": "fired", **event.to_dict()})  # fmt: skip
        for event in evaluation.resolved:
            say(f"{monitor.deployment}: resolved {event.message} (event {event.id})",
                {"event": "resolved", **event.to_dict()})  # fmt: skip

    service = MonitorService(monitors, on_evaluation=evaluated)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(service)
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        from kiln.core import InvalidInput

        raise InvalidInput(f"--host {host} --port {port}: cannot listen there: {exc}") from None
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_port}/metrics"
    names = ", ".join(m.deployment for m in monitors)
    say(
        f"kiln monitor: metrics on {url} watching {names}",
        {"event": "ready", "url": url, "deployments": [m.deployment for m in monitors]},
    )
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        threading.Thread(target=stop.set, daemon=True).start()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        service.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.shutdown()
        server.server_close()
    say("kiln monitor: stopped", {"event": "stopped"})


@monitor_app.command("report")
def report(
    deployment: Annotated[str, typer.Argument(help="The deployment whose traffic to report.")],
    window: Annotated[str, typer.Option(help="The span of traffic, back from now.")] = "1d",
    reference: Annotated[
        str,
        typer.Option(
            help="'training' (each version's reference profile) or a span before the window."
        ),
    ] = "training",
    html: Annotated[
        Path | None,
        typer.Option(help="Where the HTML report goes (default: DEPLOYMENT-report.html)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Drift of DEPLOYMENT's traffic per version and arm against its reference, with live
    quality where labels arrived: tables here, and one self-contained HTML file."""
    from kiln.monitoring import report as build

    result = build(deployment, window=window, reference=reference)
    path = result.write_html(html if html is not None else Path(f"{deployment}-report.html"))
    if as_json:
        emit_json({**result.to_dict(), "html": str(path)})
        return
    console.print(result.to_rich())
    console.print(f"HTML report: {escape(str(path))}")


@monitor_app.command("events")
def events(
    deployment: Annotated[str | None, typer.Option(help="Only this deployment's.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only 'firing' or only 'resolved' events.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Alert events, newest first, with what their actions did."""
    from kiln.monitoring import events as listed

    found = listed(deployment, status=status, limit=limit)
    if as_json:
        emit_json([e.to_dict() for e in found])
        return
    console.print(_events_table(found))
