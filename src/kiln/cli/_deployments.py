"""``kiln deployments`` (``kiln deploy`` is a shortcut for its ``create``): one SDK call each.

Every change has the same shape: call a verb of ``kiln.deployments``, then print the new
revision and what serves now (or the deployment as JSON). The rollout commands are
therefore declared by their own options alone and :func:`_rollout` supplies the rest
(``--reason``, ``--json``, the guard options, the call and the report), so each option
has one spelling and one meaning everywhere. Options a user leaves out are left out of
the SDK call (:func:`_given`): the SDK's defaults apply, not copies of them.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

import kiln
from kiln.cli._format import (
    JsonOpt,
    console,
    dtype_label,
    emit_json,
    fmt,
    plain,
    report,
    table,
)
from kiln.errors import InvalidInput, KilnError

if TYPE_CHECKING:
    from kiln.serving import Deployment, DeploymentEvent, Guard

deployments_app = typer.Typer(
    help="Stored deployments: create, list, show, history, and rollouts (canary, A/B, "
    "shadow, blue-green, promote, rollback).",
    no_args_is_help=True,
)

ReasonOpt = Annotated[
    str | None, typer.Option("--reason", "-r", help="Why; kept in the deployment's history.")
]
ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Challenger: fraud/3, fraud@challenger or fraud.")
]
NameArg = Annotated[str, typer.Argument(help="Deployment name.")]


def _guard_limit(kind: type, text: str) -> Any:
    return Annotated[kind | None, typer.Option(help=f"Guard: {text}")]


# The guard options of a judged rollout: (parameter, its option, the value when absent).
_GUARD_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("max_error_rate", _guard_limit(float, "highest error rate (0-1)."), None),
    ("max_p95_ms", _guard_limit(float, "highest p95 latency."), None),
    ("max_psi", _guard_limit(float, "highest PSI against the champion."), None),
    ("min_requests", _guard_limit(int, "requests before judging."), None),
    ("window_s", _guard_limit(float, "seconds passed before auto-promote."), None),
    (
        "auto_promote",
        Annotated[bool, typer.Option("--auto-promote", help="Guard: promote once it has passed.")],
        False,
    ),
    (
        "use_guard",
        Annotated[
            bool,
            typer.Option("--guard", help="Judge with the default guard (implied by any limit)."),
        ],
        False,
    ),
)
_TAIL_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("reason", ReasonOpt, None),
    ("as_json", JsonOpt, False),
)


def _given(**options: Any) -> dict[str, Any]:
    """The options a user gave: None, False and an empty repeatable mean "not given"."""
    return {
        k: v
        for k, v in options.items()
        if v is not None and v is not False and not (isinstance(v, list | dict) and not v)
    }


def _pairs(values: list[str] | None, what: str, example: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=" if what == "--tag" else ":")
        if not sep or not key or not value:
            raise InvalidInput(f"{what} takes {example}; got {item!r}")
        out[key] = value
    return out


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
    report(as_json, f"{d.name} (revision {d.revision}): {what}", d.to_dict())


# -- create and update ----------------------------------------------------------------------


def _fallback(model: str | None, value: str | None) -> dict[str, Any] | None:
    if model is not None and value is not None:
        raise InvalidInput("pass --fallback-model or --fallback-value, not both")
    if model is not None:
        return {"model": model}
    if value is None:
        return None
    try:
        return {"value": json.loads(value)}
    except json.JSONDecodeError:
        raise InvalidInput(
            f'--fallback-value must be JSON (0, 0.5, "deny", [0, 1]); got {value!r}'
        ) from None


def deploy(
    name: NameArg,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model reference: fraud@champion, fraud/3 or fraud."),
    ] = None,
    feature: Annotated[
        list[str] | None,
        typer.Option("--feature", help="Online feature view:feature (repeatable)."),
    ] = None,
    service: Annotated[str | None, typer.Option(help="Feature service.")] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Rows coalesced into one predict.")
    ] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="Longest wait to fill a batch.")] = None,
    max_queue: Annotated[
        int | None, typer.Option(help="Waiting requests before answering 503.")
    ] = None,
    timeout_ms: Annotated[float | None, typer.Option(help="Per-prediction timeout.")] = None,
    fallback_model: Annotated[
        str | None, typer.Option(help="Model answering while the breaker is open.")
    ] = None,
    fallback_value: Annotated[
        str | None, typer.Option(help="Constant answer (JSON) instead.")
    ] = None,
    max_body_bytes: Annotated[
        int | None, typer.Option(help="Largest request body accepted.")
    ] = None,
    request_field: Annotated[
        list[str] | None,
        typer.Option(help="Request schema field NAME:DTYPE (repeatable; default: from the model)."),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE (repeatable).")] = None,
    update: Annotated[
        bool, typer.Option("--update", help="Change an existing deployment (only what is given).")
    ] = False,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create deployment NAME serving --model (or change it with --update).

    kiln deployments create fraud-api --model fraud@champion --feature user_stats:f0\n
    kiln deploy fraud-api --update --timeout-ms 250 --fallback-value 0
    """
    batching = _given(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue)
    options = _given(
        features=feature,
        service=service,
        timeout_ms=timeout_ms,
        fallback=_fallback(fallback_model, fallback_value),
        max_body_bytes=max_body_bytes,
        request=_pairs(request_field, "--request-field", "NAME:DTYPE (amount:float64)"),
        tags=_pairs(tag, "--tag", "KEY=VALUE"),
    )
    if update:
        changes = _given(model=model, **options)
        if batching:
            current = kiln.deployments.get(name).batching
            changes["batching"] = {**asdict(current), **batching}
        if not changes:
            raise InvalidInput("--update needs at least one option to change (see --help)")
        d = kiln.deployments.update(name, reason=reason, **changes)
        _changed(d, as_json, f"updated {', '.join(sorted(changes))}")
        return
    if model is None:
        raise InvalidInput(
            "creating a deployment needs --model (a reference such as fraud@champion)"
        )
    if batching:
        options["batching"] = batching
    d = kiln.deployments.create(name, model=model, reason=reason, **options)
    _changed(d, as_json, f"created, serving {d.model}")


deployments_app.command("create")(deploy)


# -- reads ----------------------------------------------------------------------------------


@deployments_app.command("list")
def deployments_list(as_json: JsonOpt = False) -> None:
    """Every deployment: model, traffic, features, revision."""
    records = kiln.deployments.list()
    if as_json:
        emit_json([d.to_dict() for d in records])
        return
    rows = [
        (
            plain(d.name),
            plain(d.model),
            plain(_traffic_line(d)),
            plain(d.service or ", ".join(d.features)),
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
        emit_json({**d.to_dict(), "versions": {"champion": champion, "challenger": challenger}})
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
        (
            "request",
            ", ".join(f"{k}: {dtype_label(v)}" for k, v in (d.request or {}).items()) or None,
        ),
        ("batching", f"max {b.max_batch_size} rows, {b.max_wait_ms:g} ms, queue {b.max_queue}"),
        ("timeout", f"{d.timeout_ms:g} ms"),
        ("breaker", f"{br.consecutive_failures} failures or {br.failure_rate:g} of {br.min_calls}"),
        ("fallback", fallback),
        ("max body", f"{d.max_body_bytes} B"),
        ("tags", ", ".join(f"{k}={v}" for k, v in sorted(d.tags.items())) or None),
        ("revision", d.revision),
    ]
    rows = [(k, plain(v) if isinstance(v, str) else v) for k, v in head]
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
        (e.at, e.revision, e.kind, plain(_summary(e)), plain(e.actor), plain(e.reason))
        for e in events
    ]
    columns = ["when", "rev", "event", "detail", "who", "reason"]
    console.print(table(f"{escape(name)} history", columns, rows))


# -- rollouts -------------------------------------------------------------------------------


def _guard(options: dict[str, Any]) -> Guard | None:
    """The Guard the options describe, or None when none was given."""
    use = options.pop("use_guard")
    limits = _given(**{n: options.pop(n) for n, _, _ in _GUARD_OPTIONS if n != "use_guard"})
    if not use and not limits:
        return None
    return kiln.deployments.Guard(**limits)


def _rollout(
    command: str, *, judged: bool = False, done: str = ""
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a rollout command declared by its own options only (its body is unused).

    The command calls the ``kiln.deployments`` verb of the same name with those options
    as keywords, plus ``--reason``, ``--json`` and, when ``judged``, the guard options
    (passed as one ``guard``), then prints ``done`` and the traffic the change left.
    """
    verb = command.replace("-", "_")
    extra = (*(_GUARD_OPTIONS if judged else ()), *_TAIL_OPTIONS)

    def register(declared: Callable[..., None]) -> Callable[..., None]:
        own = inspect.signature(declared, eval_str=True).parameters.values()
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        params += [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
            for n, a, d in extra
        ]

        @functools.wraps(declared)
        def run(name: str, **options: Any) -> None:
            as_json = options.pop("as_json")
            if judged:
                options["guard"] = _guard(options)
            d = getattr(kiln.deployments, verb)(name, **options)
            if d is None:  # only with expected_revision, which the CLI does not pass
                raise KilnError(f"deployment {name!r} changed meanwhile; nothing done")
            _changed(d, as_json, f"{done}{_traffic_line(d)}")

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        deployments_app.command(command)(run)
        return run

    return register


@_rollout("canary", judged=True)
def deployments_canary(
    name: NameArg,
    model: ModelOpt,
    percent: Annotated[float, typer.Option("--percent", "-p", help="Share of traffic, (0, 100].")],
    sticky_key: Annotated[
        str | None, typer.Option(help="Request field keeping a caller on one arm.")
    ] = None,
) -> None:
    """Send --percent of traffic to the challenger --model, judged by a guard if given."""


@_rollout("ab")
def deployments_ab(
    name: NameArg,
    model: ModelOpt,
    sticky_key: Annotated[str, typer.Option(help="Request field whose hash picks the arm.")],
    percent: Annotated[
        float, typer.Option("--percent", "-p", help="Arm B's share, (0, 100).")
    ] = 50.0,
) -> None:
    """Split traffic between the champion and --model by hash of --sticky-key."""


@_rollout("shadow")
def deployments_shadow(name: NameArg, model: ModelOpt) -> None:
    """Mirror every request to --model off the response path (answers logged, never returned)."""


@_rollout("blue-green", judged=True)
def deployments_blue_green(name: NameArg, model: ModelOpt) -> None:
    """Switch all traffic to --model ("green"); switch-back returns to the champion."""


@_rollout("switch-back")
def deployments_switch_back(name: NameArg) -> None:
    """After blue-green: all traffic back on the champion ("blue")."""


@_rollout("promote", done="promoted; ")
def deployments_promote(name: NameArg) -> None:
    """The challenger becomes the champion (moving the alias the deployment follows)."""


@_rollout("rollback", done="rolled back; ")
def deployments_rollback(name: NameArg) -> None:
    """End the rollout: the champion alone answers again."""


@deployments_app.command("delete")
def deployments_delete(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Confirm.")] = False,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a deployment (servers stop serving it); its history is kept. Needs --yes."""
    if not yes:
        kiln.deployments.get(name)  # NotFound first, naming close matches
        raise InvalidInput(f"deleting deployment {name!r} stops serving it; pass --yes to confirm")
    d = kiln.deployments.delete(name, reason=reason)
    report(
        as_json,
        f"deleted deployment {d.name} (it served {d.model})",
        {"action": "deleted", "deployment": d.to_dict()},
    )
