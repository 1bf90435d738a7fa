"""``kiln models``: the model registry's verbs, one SDK call per command."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

import kiln
from kiln.cli._format import (
    JsonOpt,
    console,
    dtype_label,
    emit_json,
    fmt,
    plain,
    report,
    status,
    table,
)
from kiln.errors import InvalidInput

if TYPE_CHECKING:
    from kiln.registry import AliasEvent, ColumnSpec, LineageNode, ModelLineage, ModelVersion

models_app = typer.Typer(
    help="Registered models: versions, aliases, lineage.", no_args_is_help=True
)

ReasonOpt = Annotated[
    str | None, typer.Option("--reason", "-r", help="Why; kept in the alias history.")
]


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _target(version: int | None) -> str:
    return "none" if version is None else str(version)


def _pairs(mapping: Mapping[str, Any]) -> str | None:
    return plain(", ".join(f"{k}={v}" for k, v in sorted(mapping.items())))


def _move_line(event: AliasEvent) -> str:
    """The one-line summary scripts and people both read: ``fraud@champion: 2 -> 3``."""
    line = (
        f"{event.name}@{event.alias}: {_target(event.from_version)} -> {_target(event.to_version)}"
    )
    if event.action == "rollback":
        line += " (rolled back)"
    elif event.action == "delete":
        line += " (deleted)"
    return line


# -- reads ----------------------------------------------------------------------------------


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """Every registered model with its latest version and aliases."""
    records = kiln.models.list_models()
    if as_json:
        emit_json([r.to_dict() for r in records])
        return
    rows = [
        (
            r.name,
            r.latest_version,
            ", ".join(f"{a}→{v}" for a, v in r.aliases.items()) or None,
            plain(r.description),
            r.updated_at,
        )
        for r in records
    ]
    columns = ["name", "latest", "aliases", "description", "updated"]
    console.print(table(f"{len(records)} models", columns, rows))


def _signature_table(title: str, specs: Iterable[ColumnSpec]) -> Table:
    rows = [
        (
            plain(c.name) or "(tensor)",
            dtype_label(c.dtype),
            escape(str(list(c.shape))) if c.shape is not None else None,
        )
        for c in specs
    ]
    return table(title, ["name", "dtype", "shape"], rows)


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="fraud, fraud/3 or fraud@champion.")],
    as_json: JsonOpt = False,
) -> None:
    """One version: attributes, signature, environment, metrics and files."""
    mv = kiln.models.resolve(ref)
    if as_json:
        emit_json(mv.to_dict())
        return
    head = [
        ("ref", mv.ref),
        ("id", mv.id),
        ("flavor", mv.flavor),
        ("run", mv.run_id),
        ("created by", plain(mv.created_by)),
        ("created at", mv.created_at),
        ("size", _size(mv.size)),
        ("digest", f"sha256:{mv.digest}"),
        ("aliases", ", ".join(mv.aliases) or None),
        ("git commit", mv.git_commit),
        ("description", plain(mv.description)),
        ("tags", _pairs(mv.tags)),
    ]
    console.print(table(f"model {mv.ref}", ["field", "value"], head))
    kind = mv.signature.input_kind
    console.print(_signature_table(f"inputs ({kind})", mv.signature.inputs))
    console.print(_signature_table("outputs", mv.signature.outputs))
    env = dict(mv.environment)
    packages = dict(env.pop("packages", None) or {})
    env_rows = [(plain(k), plain(v)) for k, v in sorted(env.items())]
    env_rows += [(plain(k), plain(v)) for k, v in sorted(packages.items())]
    if env_rows:
        console.print(table("environment", ["package", "version"], env_rows))
    if mv.metrics:
        rows = [(plain(k), v) for k, v in sorted(mv.metrics.items())]
        console.print(table("metrics snapshot", ["key", "value"], rows))
    files = [(plain(f.path), _size(f.size), f.digest[:12]) for f in mv.files]
    console.print(table(f"files ({len(files)})", ["path", "size", "sha256"], files))


@models_app.command("versions")
def models_versions(
    name: Annotated[str, typer.Argument(help="Model name.")], as_json: JsonOpt = False
) -> None:
    """Every version of one model, newest first."""
    records = kiln.models.list_versions(name)
    if as_json:
        emit_json([r.to_dict() for r in records])
        return
    rows = [
        (
            r.version,
            r.flavor,
            ", ".join(r.aliases) or None,
            r.run_id,
            r.created_at,
            _size(r.size),
        )
        for r in records
    ]
    columns = ["version", "flavor", "aliases", "run", "created", "size"]
    console.print(table(f"{name}: {len(records)} versions", columns, rows))


def _run_label(node: LineageNode) -> str:
    state = node.attributes.get("status")
    suffix = f"  {status(str(state))}" if state else ""
    if node.kind == "flow_step":
        step = escape(str(node.attributes.get("step")))
        return f"flow step [bold]{step}[/] ({escape(node.label)})  [dim]{node.id}[/]{suffix}"
    if node.kind == "flow_run":
        flow = escape(str(node.attributes.get("flow")))
        return f"flow run [bold]{flow}[/]  [dim]{node.id}[/]{suffix}"
    return f"run [bold]{escape(node.label)}[/]  [dim]{node.id}[/]{suffix}"


def _add_values(branch: Tree, values: Mapping[str, Any], limit: int | None) -> None:
    items = sorted(values.items())
    shown = items if limit is None else items[:limit]
    for key, value in shown:
        branch.add(f"{escape(key)} = {escape(fmt(value))}")
    if len(items) > len(shown):
        branch.add(f"[dim]... {len(items) - len(shown)} more[/]")


def lineage_tree(mv: ModelVersion, lineage: ModelLineage, *, limit: int | None = None) -> Tree:
    """The lineage as a tree; ``limit`` caps the params and metrics shown (the demo's view)."""
    root = Tree(f"[bold]{mv.ref}[/]  {mv.flavor}  [dim]{mv.id}[/]")
    if lineage.run is None:
        root.add("[dim]run: none recorded[/]")
    else:
        run = root.add(_run_label(lineage.run))
        _add_values(run.add(f"params ({len(lineage.params)})"), lineage.params, limit)
        _add_values(run.add(f"metrics ({len(lineage.metrics)})"), lineage.metrics, limit)
    inputs = root.add(f"data inputs ({len(lineage.inputs)})")
    for node in lineage.inputs:
        label = f" ({escape(node.label)})" if node.label != node.id else ""
        branch = inputs.add(f"{escape(node.kind)} {escape(node.id)}{label}")
        for child in node.children:
            branch.add(f"[dim]from[/] {escape(child.kind.replace('_', ' '))} {escape(child.id)}")
    if lineage.code is None:
        root.add("[dim]code: no commit recorded[/]")
    else:
        dirty = " [yellow](uncommitted changes)[/]" if lineage.code.attributes.get("dirty") else ""
        root.add(f"code commit {lineage.code.id}{dirty}")
    if lineage.parents:
        parents = root.add(f"parent runs ({len(lineage.parents)})")
        for node in lineage.parents:
            parents.add(_run_label(node))
    return root


@models_app.command("lineage")
def models_lineage(
    ref: Annotated[str, typer.Argument(help="fraud, fraud/3 or fraud@champion.")],
    as_json: JsonOpt = False,
) -> None:
    """What made a version: its run with params and metrics, data inputs, code, parent runs."""
    lineage = kiln.models.lineage(ref)
    if as_json:
        emit_json(lineage.to_dict())
        return
    console.print(lineage_tree(lineage.version, lineage))


# -- aliases --------------------------------------------------------------------------------


_ALIAS_FORMS = (
    "use 'kiln models alias NAME ALIAS VERSION', 'kiln models alias NAME ALIAS --delete' "
    "or 'kiln models alias NAME --history [ALIAS]'"
)


@models_app.command("alias")
def models_alias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[
        str | None, typer.Argument(help="Alias to set or delete; with --history, only its moves.")
    ] = None,
    version: Annotated[str | None, typer.Argument(help="Version the alias points at.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Delete ALIAS (no VERSION).")] = False,
    history: Annotated[
        bool, typer.Option("--history", help="Show every alias move of NAME (or of ALIAS).")
    ] = False,
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point ALIAS at VERSION, delete it with --delete, or show the moves with --history.

    kiln models alias fraud champion 3 --reason "best val_auc"\n
    kiln models alias fraud champion --delete\n
    kiln models alias fraud --history \\[champion]
    """
    if history:
        if delete or version is not None or reason is not None:
            raise InvalidInput(f"--history takes no VERSION, --delete or --reason; {_ALIAS_FORMS}")
        _alias_history(name, alias, as_json)
        return
    if alias is None:
        raise InvalidInput(f"missing ALIAS; {_ALIAS_FORMS}")
    if delete:
        if version is not None:
            raise InvalidInput(f"--delete takes no VERSION; {_ALIAS_FORMS}")
        event = kiln.models.delete_alias(name, alias, reason=reason)
    elif version is None:
        raise InvalidInput(f"missing VERSION; {_ALIAS_FORMS}")
    else:
        before = kiln.models.get_model(name).aliases.get(alias)
        event = kiln.models.set_alias(name, alias, version, reason=reason)
        if before is not None and before == event.to_version:
            # set_alias hands back the earlier event on a no-op; saying "2 -> 3" again
            # would claim a move that did not happen.
            if as_json:
                emit_json({**event.to_dict(), "changed": False})
            else:
                console.print(f"{name}@{alias}: already {before}")
            return
    if as_json:
        emit_json({**event.to_dict(), "changed": True})
        return
    console.print(_move_line(event))


def _alias_history(name: str, alias: str | None, as_json: bool) -> None:
    events = kiln.models.alias_history(name, alias)
    if as_json:
        emit_json([e.to_dict() for e in events])
        return
    title = f"{name}@{alias} history" if alias else f"{name} alias history"
    if not events:
        console.print(f"{title}: no alias moves recorded")
        return
    rows = [
        (
            e.created_at,
            e.alias,
            e.action,
            e.from_version,
            e.to_version,
            plain(e.actor),
            plain(e.reason),
        )
        for e in events
    ]
    columns = ["when", "alias", "action", "from", "to", "who", "reason"]
    console.print(table(title, columns, rows))


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias to move back to its previous target.")],
    reason: ReasonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move ALIAS back to the version it pointed at before its current one."""
    event = kiln.models.rollback(name, alias, reason=reason)
    if as_json:
        emit_json(event.to_dict())
        return
    console.print(_move_line(event))


# -- deletes --------------------------------------------------------------------------------


@models_app.command("delete")
def models_delete(
    ref: Annotated[str, typer.Argument(help="NAME/VERSION for one version, NAME for the model.")],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm deleting a whole model.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete one version (NAME/VERSION) or a whole model (NAME, needs --yes).

    Refused while an alias points at what would be deleted or a deployment uses it.
    """
    if "@" in ref:
        name, _, alias = ref.partition("@")
        raise InvalidInput(
            f"delete takes NAME/VERSION or NAME, not an alias ({ref!r}); to drop the alias "
            f"run: kiln models alias {name} {alias} --delete"
        )
    name, slash, version = ref.partition("/")
    if slash:
        kiln.models.delete_version(name, version)
        done = {"action": "deleted", "model": name, "version": int(version)}
        report(as_json, f"deleted {name}/{int(version)}", done)
        return
    count = len(kiln.models.list_versions(name))
    if not yes:
        raise InvalidInput(
            f"deleting model {name!r} removes its {count} version(s) and alias history; "
            "pass --yes to confirm"
        )
    kiln.models.delete_model(name)
    done = {"action": "deleted", "model": name, "versions": count}
    report(as_json, f"deleted model {name!r} and its {count} version(s)", done)
