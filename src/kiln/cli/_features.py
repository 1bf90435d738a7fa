"""``kiln features``: plan, apply, list, show and materialize feature definitions.

Definitions live in Python files (``kiln features apply features.py``): every Entity,
view and service the file defines at module level is applied, the way a repository of
feature definitions is applied in CI.
"""

from __future__ import annotations

import json
import runpy
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

import kiln
from kiln.cli._format import JsonOpt, console, emit_json, fmt, table
from kiln.errors import InvalidInput

features_app = typer.Typer(help="Define, apply and materialize features.", no_args_is_help=True)

_KINDS = ("entity", "feature_view", "windowed_view", "on_demand_view", "feature_service")


def load_definitions(path: Path) -> list[Any]:
    """Every definition a Python file creates at module level, in definition order."""
    if not path.is_file():
        raise InvalidInput(f"no definitions file {str(path)!r}")
    try:
        namespace = runpy.run_path(str(path), run_name="kiln_definitions")
    except Exception as exc:
        raise InvalidInput(
            f"cannot load definitions from {str(path)!r}: {type(exc).__name__}: {exc}"
        ) from None
    found = [v for v in namespace.values() if getattr(v, "kind", None) in _KINDS]
    if not found:
        raise InvalidInput(f"{str(path)!r} defines no entities, feature views or services")
    return found


def _print_plan(plan: Any, applied: bool) -> None:
    for change in plan.changes:
        color = {"create": "green", "update": "yellow", "unchanged": "dim"}[change.action]
        verb = change.action if not applied or change.action == "unchanged" else f"{change.action}d"
        console.print(
            f"[{color}]{verb:<10}[/] {change.kind.replace('_', ' ')} "
            f"[bold]{escape(change.name)}[/] (version {change.version})"
        )
        for found in change.inferred:
            console.print(f"             inferred {escape(found)}", highlight=False)
        for line in change.differences:
            console.print(f"             {escape(line)}", highlight=False)
    if not plan.has_changes:
        console.print("nothing to change")


@features_app.command("plan")
def features_plan(
    path: Annotated[Path, typer.Argument(help="Python file with the definitions.")],
    as_json: JsonOpt = False,
) -> None:
    """Show what apply would create or change, field by field; writes nothing."""
    plan = kiln.FeatureStore().plan(load_definitions(path), base=path.parent)
    if as_json:
        emit_json(plan.to_dict())
        return
    _print_plan(plan, applied=False)


@features_app.command("apply")
def features_apply(
    path: Annotated[Path, typer.Argument(help="Python file with the definitions.")],
    as_json: JsonOpt = False,
) -> None:
    """Check every definition against its source and store the changed ones."""
    plan = kiln.FeatureStore().apply(load_definitions(path), base=path.parent)
    if as_json:
        emit_json(plan.to_dict())
        return
    _print_plan(plan, applied=True)


@features_app.command("list")
def features_list(
    kind: Annotated[
        str | None, typer.Option("--kind", help=f"Only one kind: {', '.join(_KINDS)}.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every applied definition at its latest version."""
    if kind is not None and kind not in _KINDS:
        raise InvalidInput(f"--kind must be one of {', '.join(_KINDS)}; got {kind!r}")
    records = kiln.FeatureStore().list_definitions(kind)
    if as_json:
        emit_json([r.to_dict() for r in records])
        return
    rows = [
        (r.kind.replace("_", " "), r.name, r.version, _summary(r.spec), r.created_at)
        for r in records
    ]
    columns = ["kind", "name", "version", "what", "applied"]
    console.print(table(f"{len(records)} definitions", columns, rows))


def _summary(spec: Mapping[str, Any]) -> str:
    if "join_keys" in spec:
        return "keys: " + ", ".join(spec["join_keys"])
    if "schema" in spec:
        ttl = f"; ttl {spec['ttl']}" if spec.get("ttl") else ""
        return ", ".join(f["name"] for f in spec["schema"]) + ttl
    if "aggregations" in spec:
        return ", ".join(a["name"] for a in spec["aggregations"])
    features = spec.get("features", [])
    views = sorted({f.split(":")[0] for f in features})
    return f"{len(features)} features from {', '.join(views)}"


@features_app.command("show")
def features_show(
    name: Annotated[str, typer.Argument(help="Entity, view or service name.")],
    as_json: JsonOpt = False,
) -> None:
    """One definition as applied (its latest version)."""
    store = kiln.FeatureStore()
    records = [r for r in store.list_definitions() if r.name == name]
    if not records:
        store.get(name)  # NotFound with close matches
    record = records[0]
    if as_json:
        emit_json(record.to_dict())
        return
    console.print(
        f"[bold]{escape(record.name)}[/] {record.kind.replace('_', ' ')} "
        f"version {record.version}, applied {fmt(record.created_at)}"
    )
    console.print_json(json.dumps(record.spec, default=str))


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{option} must be an ISO 8601 time such as 2026-11-01T00:00:00; got {value!r}"
        ) from None


@features_app.command("materialize")
def features_materialize(
    start: Annotated[str | None, typer.Option(help="ISO time; default: the beginning.")] = None,
    end: Annotated[str | None, typer.Option(help="ISO time; default: now.")] = None,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="From each view's last watermark to END.")
    ] = False,
    view: Annotated[
        list[str] | None, typer.Option("--view", "-v", help="Only this view (repeatable).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the latest feature values per entity into the online store."""
    store = kiln.FeatureStore()
    if incremental:
        if start is not None:
            raise InvalidInput("--incremental starts at each view's watermark; drop --start")
        results = store.materialize_incremental(_when(end, "--end"), views=view)
    else:
        results = store.materialize(_when(start, "--start"), _when(end, "--end"), views=view)
    if as_json:
        emit_json(
            [
                {
                    "view": r.view,
                    "start": r.start.isoformat() if r.start else None,
                    "end": r.end.isoformat(),
                    "entities": r.entities,
                    "written": r.written,
                }
                for r in results
            ]
            + [{"view": f.view, "error": f.error} for f in results.failures]
        )
    else:
        rows = [(r.view, r.start, r.end, r.entities, r.written) for r in results]
        console.print(table("materialized", ["view", "from", "to", "entities", "changed"], rows))
    if results.failures:
        # Every other view is materialized by now; the failed ones are named, one line.
        failed = "; ".join(f"{f.view!r}: {f.error}" for f in results.failures)
        typer.echo(f"kiln: error: materialization failed for {failed}", err=True)
        raise typer.Exit(1)
