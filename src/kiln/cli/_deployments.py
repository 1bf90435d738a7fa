"""``kiln deploy`` and ``kiln deployments``: stored deployments and rollouts, one SDK call each."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.markup import escape

import kiln
from kiln.cli._format import console, emit_json, fmt, table
from kiln.errors import InvalidInput, KilnError
from kiln.serving import Deployment, DeploymentEvent, Guard

deployments_app = typer.Typer(
    help="Stored deployments: list, show, history, and rollouts (canary, A/B, shadow, "
    "blue-green, promote, rollback).",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", "-r", help="Why; kept in the deployment's history.")
]
ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Challenger: fraud/3, fraud@challenger or fraud.")
]
NameArg = Annotated[str, typer.Argument(help="Deployment name.")]
MaxErrorRate = Annotated[
    float | None, typer.Option("--max-error-rate", help="Guard: highest error rate (0-1).")
]
MaxP95 = Annotated[float | None, typer.Option("--max-p95-ms", help="Guard: highest p95 latency.")]
MaxPsi = Annotated[
    float | None, typer.Option("--max-psi", help="Guard: highest PSI against the champion.")
]
MinRequests = Annotated[
    int | None, typer.Option("--min-requests", help="Guard: requests before judging.")
]
WindowS = Annotated[
    float | None, typer.Option("--window-s", help="Guard: seconds passed before auto-promote.")
]
AutoPromote = Annotated[
    bool, typer.Option("--auto-promote", help="Guard: promote once the guard has passed.")
]
UseGuard = Annotated[
    bool, typer.Option("--guard", help="Judge with the default guard (implied by any limit).")
]


def _plain(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return escape(str(value))


def _pairs(values: list[str] | None, what: str, example: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=" if what == "--tag" else ":")
        if not sep or not key or not value:
            raise InvalidInput(f"{what} takes {example}; got {item!r}")
        out[key] = value
    return out


def _guard(
    use: bool,
    max_error_rate: float | None,
    max_p95_ms: float | None,
    max_psi: float | None,
    min_requests: int | None,
    window_s: float | None,
    auto_promote: bool,
) -> Guard | None:
    limits: dict[str, Any] = {
        k: v
        for k, v in (
            ("max_error_rate", max_error_rate),
            ("max_p95_ms", max_p95_ms),
            ("max_psi", max_psi),
            ("min_requests", min_requests),
            ("window_s", window_s),
        )
        if v is not None
    }
    if auto_promote:
        limits["auto_promote"] = True
    if not use and not limits:
        return None
    return Guard(**limits)


def _dict(deployment: Deployment) -> dict[str, Any]:
    return deployment.to_dict()


def _traffic_line(d: Deployment) -> str:
    tr = d.traffic
    if tr.policy == "single":
        return f"single: {d.model}"
    if tr.policy == "canary":
        sticky = f", sticky on {tr.sticky_key}" if tr.sticky_key else ""
        return f"canary: {tr.percent:g}% to {tr.challenger}{sticky}"
    if tr.policy == "ab":
        return f"A/B: {tr.percent:g}% to {tr.challenger} by hash of {tr.sticky_key}"
    if tr.policy == "shadow":
        return f"shadow: {d.model} answers, {tr.challenger} mirrored"
    side = "green" if tr.percent == 100 else "blue"
    return f"blue-green: on {side} ({tr.challenger if side == 'green' else d.model})"


def _changed(d: Deployment, as_json: bool, what: str) -> None:
    if as_json:
        emit_json(_dict(d))
        return
    console.print(f"{escape(d.name)} (revision {d.revision}): {escape(what)}", highlight=False)


# -- kiln deploy ----------------------------------------------------------------------------


def deploy(
    name: NameArg,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model reference: fraud@champion, fraud/3 or fraud."),
    ] = None,
    feature: Annotated[
        list[str] | None,
        typer.Option("--feature", "-f", help="Online feature view:feature (repeatable)."),
    ] = None,
    service: Annotated[str | None, typer.Option("--service", help="Feature service.")] = None,
    max_batch_size: Annotated[
        int | None, typer.Option("--max-batch-size", help="Rows coalesced into one predict.")
    ] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option("--max-wait-ms", help="Longest wait to fill a batch.")
    ] = None,
    max_queue: Annotated[
        int | None, typer.Option("--max-queue", help="Waiting requests before answering 503.")
    ] = None,
    timeout_ms: Annotated[
        float | None, typer.Option("--timeout-ms", help="Per-prediction timeout.")
    ] = None,
    fallback_model: Annotated[
        str | None,
        typer.Option("--fallback-model", help="Model answering while the breaker is open."),
    ] = None,
    fallback_value: Annotated[
        str | None, typer.Option("--fallback-value", help="Constant answer (JSON) instead.")
    ] = None,
    max_body_bytes: Annotated[
        int | None, typer.Option("--max-body-bytes", help="Largest request body accepted.")
    ] = None,
    request_field: Annotated[
        list[str] | None,
        typer.Option(
            "--request-field",
            help="Request schema field NAME:DTYPE (repeatable; default: from the model).",
        ),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE (repeatable).")] = None,
    update: Annotated[
        bool, typer.Option("--update", help="Change an existing deployment (only what is given).")
    ] = False,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create deployment NAME serving --model (or change it with --update).

    kiln deploy fraud-api --model fraud@champion --feature user_stats:f0 --max-batch-size 32\n
    kiln deploy fraud-api --update --timeout-ms 250 --fallback-value 0
    """
    if fallback_model is not None and fallback_value is not None:
        raise InvalidInput("pass --fallback-model or --fallback-value, not both")
    fallback: dict[str, Any] | None = None
    if fallback_model is not None:
        fallback = {"model": fallback_model}
    elif fallback_value is not None:
        try:
            fallback = {"value": json.loads(fallback_value)}
        except json.JSONDecodeError:
            raise InvalidInput(
                f'--fallback-value must be JSON (0, 0.5, "deny", [0, 1]); got {fallback_value!r}'
            ) from None
    batching = {
        k: v
        for k, v in (
            ("max_batch_size", max_batch_size),
            ("max_wait_ms", max_wait_ms),
            ("max_queue", max_queue),
        )
        if v is not None
    }
    request = _pairs(request_field, "--request-field", "NAME:DTYPE (amount:float64)")
    tags = _pairs(tag, "--tag", "KEY=VALUE")
    if update:
        changes: dict[str, Any] = {}
        if model is not None:
            changes["model"] = model
        if feature:
            changes["features"] = feature
        if service is not None:
            changes["service"] = service
        if batching:
            current = kiln.deployments.get(name).batching
            changes["batching"] = {**asdict(current), **batching}
        if timeout_ms is not None:
            changes["timeout_ms"] = timeout_ms
        if fallback is not None:
            changes["fallback"] = fallback
        if max_body_bytes is not None:
            changes["max_body_bytes"] = max_body_bytes
        if request:
            changes["request"] = request
        if tags:
            changes["tags"] = tags
        if not changes:
            raise InvalidInput("--update needs at least one option to change (see --help)")
        d = kiln.deployments.update(name, reason=reason, **changes)
        _changed(d, as_json, f"updated {', '.join(sorted(changes))}")
        return
    if model is None:
        raise InvalidInput("kiln deploy needs --model (a reference such as fraud@champion)")
    d = kiln.deployments.create(
        name,
        model=model,
        features=feature or None,
        service=service,
        batching=batching or None,
        timeout_ms=timeout_ms if timeout_ms is not None else 1000.0,
        fallback=fallback,
        max_body_bytes=max_body_bytes if max_body_bytes is not None else 8 * 1024 * 1024,
        tags=tags,
        request=request or None,
        reason=reason,
    )
    _changed(d, as_json, f"created, serving {d.model}")


# -- reads ----------------------------------------------------------------------------------


@deployments_app.command("list")
def deployments_list(as_json: JsonOpt = False) -> None:
    """Every deployment: model, traffic, features, revision."""
    records = kiln.deployments.list()
    if as_json:
        emit_json([_dict(d) for d in records])
        return
    rows = [
        (
            _plain(d.name),
            _plain(d.model),
            _plain(_traffic_line(d)),
            _plain(d.service or ", ".join(d.features)),
            d.revision,
        )
        for d in records
    ]
    columns = ["name", "model", "traffic", "features", "revision"]
    console.print(table(f"{len(records)} deployments", columns, rows))


def _version_of(ref: str | None) -> str | None:
    if ref is None:
        return None
    try:
        return kiln.models.resolve(ref).ref
    except KilnError as exc:
        return f"unresolved: {exc}"


@deployments_app.command("show")
def deployments_show(name: NameArg, as_json: JsonOpt = False) -> None:
    """One deployment: model and the version it resolves to, traffic, features, limits."""
    d = kiln.deployments.get(name)
    champion, challenger = _version_of(d.model), _version_of(d.traffic.challenger)
    if as_json:
        emit_json({**_dict(d), "versions": {"champion": champion, "challenger": challenger}})
        return
    tr, b, br = d.traffic, d.batching, d.breaker
    fallback = None
    if d.fallback is not None:
        fallback = d.fallback.model or f"value {json.dumps(d.fallback.value)}"
    head = [
        ("model", f"{d.model} -> {champion}"),
        ("traffic", _traffic_line(d)),
        ("challenger", f"{tr.challenger} -> {challenger}" if tr.challenger else None),
        ("guard", ", ".join(f"{k}={v}" for k, v in asdict(tr.guard).items()) if tr.guard else None),
        ("features", f"service {d.service}" if d.service else ", ".join(d.features) or None),
        ("request", ", ".join(f"{k}: {v}" for k, v in (d.request or {}).items()) or None),
        ("batching", f"max {b.max_batch_size} rows, {b.max_wait_ms:g} ms, queue {b.max_queue}"),
        ("timeout", f"{d.timeout_ms:g} ms"),
        ("breaker", f"{br.consecutive_failures} failures or {br.failure_rate:g} of {br.min_calls}"),
        ("fallback", fallback),
        ("max body", f"{d.max_body_bytes} B"),
        ("tags", ", ".join(f"{k}={v}" for k, v in sorted(d.tags.items())) or None),
        ("revision", d.revision),
    ]
    rows = [(k, _plain(v) if isinstance(v, str) else v) for k, v in head]
    console.print(table(f"deployment {escape(d.name)}", ["field", "value"], rows))


_CORE_DETAIL = frozenset(
    {
        "alias",
        "challenger",
        "challenger_version",
        "champion",
        "champion_version",
        "changes",
        "guard",
        "model",
        "percent",
        "policy",
        "previous",
        "previous_champion",
        "previous_version",
        "sticky_key",
        "traffic",
        "version",
    }
)


def _summary(event: DeploymentEvent) -> str:
    """One line per event kind; figures a guard recorded follow as key=value."""
    d, kind = event.detail, event.kind
    if kind == "created":
        line = f"{d.get('model')} ({d.get('version')})"
    elif kind in ("canary_started", "ab_started", "shadow_started", "switched"):
        line = f"{fmt(d.get('percent'))}% to {d.get('challenger')} ({d.get('challenger_version')})"
    elif kind == "switched_back":
        line = f"back to {d.get('champion')}"
    elif kind == "promoted":
        moved = f", moved {d['alias']}" if d.get("alias") else ""
        line = f"{d.get('version')} is the champion{moved}"
    elif kind in ("rolled_back", "guard_breach"):
        line = f"{d.get('challenger')} out, {d.get('champion')} alone"
    elif kind == "updated":
        line = "changed " + ", ".join(d.get("changes") or {})
    else:
        line = ""
    extra = " ".join(f"{k}={fmt(v)}" for k, v in sorted(d.items()) if k not in _CORE_DETAIL)
    return f"{line} {extra}".strip()


@deployments_app.command("history")
def deployments_history(name: NameArg, as_json: JsonOpt = False) -> None:
    """Every change of a deployment, oldest first (kept after it is deleted)."""
    events = kiln.deployments.history(name)
    if as_json:
        emit_json([e.to_dict() for e in events])
        return
    rows = [
        (
            e.at,
            e.revision,
            e.kind,
            _plain(_summary(e)),
            _plain(e.actor),
            _plain(e.reason),
        )
        for e in events
    ]
    columns = ["when", "rev", "event", "detail", "who", "reason"]
    console.print(table(f"{escape(name)} history", columns, rows))


# -- rollouts -------------------------------------------------------------------------------


@deployments_app.command("canary")
def deployments_canary(
    name: NameArg,
    model: ModelOpt,
    percent: Annotated[float, typer.Option("--percent", "-p", help="Share of traffic, (0, 100].")],
    sticky_key: Annotated[
        str | None, typer.Option("--sticky-key", help="Request field keeping a caller on one arm.")
    ] = None,
    max_error_rate: MaxErrorRate = None,
    max_p95_ms: MaxP95 = None,
    max_psi: MaxPsi = None,
    min_requests: MinRequests = None,
    window_s: WindowS = None,
    auto_promote: AutoPromote = False,
    guard: UseGuard = False,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send --percent of traffic to the challenger --model, judged by a guard if given."""
    judged = _guard(
        guard, max_error_rate, max_p95_ms, max_psi, min_requests, window_s, auto_promote
    )
    d = kiln.deployments.canary(
        name, model=model, percent=percent, sticky_key=sticky_key, guard=judged, reason=reason
    )
    _changed(d, as_json, _traffic_line(d))


@deployments_app.command("ab")
def deployments_ab(
    name: NameArg,
    model: ModelOpt,
    sticky_key: Annotated[
        str, typer.Option("--sticky-key", help="Request field whose hash picks the arm.")
    ],
    percent: Annotated[
        float, typer.Option("--percent", "-p", help="Arm B's share, (0, 100).")
    ] = 50.0,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Split traffic between the champion and --model by hash of --sticky-key."""
    d = kiln.deployments.ab(
        name, model=model, percent=percent, sticky_key=sticky_key, reason=reason
    )
    _changed(d, as_json, _traffic_line(d))


@deployments_app.command("shadow")
def deployments_shadow(
    name: NameArg, model: ModelOpt, reason: ReasonOpt = None, as_json: JsonOpt = False
) -> None:
    """Mirror every request to --model off the response path (answers logged, never returned)."""
    d = kiln.deployments.shadow(name, model=model, reason=reason)
    _changed(d, as_json, _traffic_line(d))


@deployments_app.command("blue-green")
def deployments_blue_green(
    name: NameArg,
    model: ModelOpt,
    max_error_rate: MaxErrorRate = None,
    max_p95_ms: MaxP95 = None,
    max_psi: MaxPsi = None,
    min_requests: MinRequests = None,
    window_s: WindowS = None,
    auto_promote: AutoPromote = False,
    guard: UseGuard = False,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Switch all traffic to --model ("green"); switch-back returns to the champion."""
    judged = _guard(
        guard, max_error_rate, max_p95_ms, max_psi, min_requests, window_s, auto_promote
    )
    d = kiln.deployments.blue_green(name, model=model, guard=judged, reason=reason)
    _changed(d, as_json, _traffic_line(d))


def _acted(d: Deployment | None, name: str) -> Deployment:
    if d is None:  # only with expected_revision, which the CLI does not pass
        raise KilnError(f"deployment {name!r} changed meanwhile; nothing done")
    return d


@deployments_app.command("switch-back")
def deployments_switch_back(
    name: NameArg, reason: ReasonOpt = None, as_json: JsonOpt = False
) -> None:
    """After blue-green: all traffic back on the champion ("blue")."""
    d = _acted(kiln.deployments.switch_back(name, reason=reason), name)
    _changed(d, as_json, _traffic_line(d))


@deployments_app.command("promote")
def deployments_promote(name: NameArg, reason: ReasonOpt = None, as_json: JsonOpt = False) -> None:
    """The challenger becomes the champion (moving the alias the deployment follows)."""
    d = _acted(kiln.deployments.promote(name, reason=reason), name)
    _changed(d, as_json, f"promoted; {_traffic_line(d)}")


@deployments_app.command("rollback")
def deployments_rollback(name: NameArg, reason: ReasonOpt = None, as_json: JsonOpt = False) -> None:
    """End the rollout: the champion alone answers again."""
    d = _acted(kiln.deployments.rollback(name, reason=reason), name)
    _changed(d, as_json, f"rolled back; {_traffic_line(d)}")


@deployments_app.command("delete")
def deployments_delete(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Confirm.")] = False,
    reason: ReasonOpt = None,
) -> None:
    """Delete a deployment (servers stop serving it); its history is kept. Needs --yes."""
    if not yes:
        kiln.deployments.get(name)  # NotFound first, naming close matches
        raise InvalidInput(f"deleting deployment {name!r} stops serving it; pass --yes to confirm")
    d = kiln.deployments.delete(name, reason=reason)
    console.print(f"deleted deployment {escape(d.name)} (it served {escape(d.model)})")
