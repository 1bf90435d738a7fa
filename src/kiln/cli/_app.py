"""Command definitions. Each command maps to one SDK call and renders its records.

Conventions every command keeps (tests walk the whole tree for them): ``-h`` is
``--help``; a short flag means the same long option wherever it appears (the table is
in docs/cli.md); every command that prints a result takes ``--json``; list defaults
are the SDK's own constants, read when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.tree import Tree

import kiln
from kiln.cli._deployments import deploy, deployments_app
from kiln.cli._features import features_app
from kiln.cli._flows import flows_app
from kiln.cli._format import JsonOpt, console, emit_json, fmt, report, status, table
from kiln.cli._models import models_app
from kiln.cli._monitor import monitor_app
from kiln.cli._schedules import scheduler
from kiln.cli._serve import serve
from kiln.cli._tune import tune_app
from kiln.cli._ui import ui

# Click hands these to every sub-command's context, so ``-h`` works at every level.
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="kiln",
    help="Kiln: one ML platform for data, training and deployment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings=HELP_OPTIONS,
)
experiments_app = typer.Typer(help="List and rename experiments.", no_args_is_help=True)
runs_app = typer.Typer(help="List, show and compare runs.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the metadata database.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(features_app, name="features")
app.add_typer(deployments_app, name="deployments")
app.add_typer(flows_app, name="flows")
app.add_typer(tune_app, name="tune")
app.add_typer(monitor_app, name="monitor")
app.command("deploy", help=f"Shortcut for 'kiln deployments create'. {deploy.__doc__}")(deploy)
app.command()(serve)
app.command()(scheduler)
app.command()(ui)


def _version(value: bool) -> None:
    if value:
        print(f"kiln {kiln.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Kiln: one ML platform for data, training and deployment."""


@app.command()
def info(as_json: JsonOpt = False) -> None:
    """Show the resolved settings (passwords masked) and where each came from."""
    settings = kiln.get_settings()
    described = settings.describe()
    if as_json:
        emit_json({"version": kiln.__version__, "settings": described})
        return
    rows = [(k, v, settings.sources.get(k, "derived")) for k, v in described.items()]
    console.print(table(f"kiln {kiln.__version__}", ["setting", "value", "source"], rows))


@app.command()
def demo(
    rows: Annotated[int, typer.Option(min=1_000, help="Transactions to generate.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Random seed of the generated data.")] = 7,
) -> None:
    """Generate a fraud data set, train three tracked models and compare them."""
    from kiln.cli._demo import run_demo

    run_demo(console, n_transactions=rows, seed=seed)


@db_app.command("upgrade")
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Apply pending metadata migrations (also done automatically on first use)."""
    from kiln.store import open_metadata_store

    settings = kiln.get_settings()
    url = kiln.core.mask_url(settings.db_url)
    revision = open_metadata_store(settings.db_url).upgrade()
    report(
        as_json,
        f"metadata store {url} is at revision {revision}",
        {"action": "upgraded", "db_url": url, "revision": revision},
    )


@experiments_app.command("list")
def experiments_list(as_json: JsonOpt = False) -> None:
    """Every experiment with its number of runs."""
    records = kiln.experiments.list()
    if as_json:
        emit_json([r.to_dict() for r in records])
        return
    rows = [(r.name, r.run_count, r.created_at, r.id) for r in records]
    console.print(table("experiments", ["name", "runs", "created", "id"], rows))


@experiments_app.command("rename")
def experiments_rename(old: str, new: str, as_json: JsonOpt = False) -> None:
    """Rename an experiment; its runs follow."""
    record = kiln.experiments.rename(old, new)
    report(
        as_json,
        f"renamed experiment {old!r} to {record.name!r}",
        {"action": "renamed", "from": old, "experiment": record.to_dict()},
    )


@runs_app.command("list")
def runs_list(
    *,
    experiment: Annotated[
        list[str] | None, typer.Option("--experiment", "-e", help="Experiment name (repeatable).")
    ] = None,
    filter_: Annotated[
        str | None,
        typer.Option("--filter", "-f", help='e.g. "metrics.val_auc > 0.9 and params.lr = 0.1"'),
    ] = None,
    order_by: Annotated[
        list[str] | None,
        typer.Option("--order-by", "-o", help="e.g. -metrics.val_auc (repeatable)"),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            min=1,
            default_factory=lambda: kiln.runs.DEFAULT_LIMIT,
            show_default=False,
            help="At most this many runs; default: the SDK's (kiln.runs.DEFAULT_LIMIT).",
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Search runs; newest first unless --order-by says otherwise."""
    records = kiln.runs.search(experiment or None, filter=filter_, order_by=order_by, limit=limit)
    if as_json:
        emit_json([r.to_dict() for r in records])
        return
    metric_keys = sorted({k for r in records for k in r.metrics})[:4]
    columns = ["id", "name", "status", *metric_keys]
    rows = [
        (r.id, r.name, status(r.status), *(r.metrics.get(k) for k in metric_keys)) for r in records
    ]
    console.print(table(f"{len(records)} runs", columns, rows))


@runs_app.command("show")
def runs_show(run_id: str, as_json: JsonOpt = False) -> None:
    """One run: attributes, params, latest metrics, tags, environment and artifacts."""
    record = kiln.runs.get(run_id)
    artifacts = kiln.runs.list_artifacts(run_id)
    if as_json:
        data = record.to_dict()
        data["artifacts"] = [a.to_dict() for a in artifacts]
        emit_json(data)
        return
    head = [
        ("id", record.id),
        ("experiment", record.experiment),
        ("name", record.name),
        ("status", status(record.status)),
        ("started", record.start_time),
        ("ended", record.end_time),
        ("duration_s", record.duration_s),
        ("parent", record.parent_id),
        ("error", record.error),
    ]
    console.print(table(f"run {record.name}", ["field", "value"], head))
    if record.params:
        console.print(table("params", ["key", "value"], sorted(record.params.items())))
    if record.metrics:
        console.print(table("metrics (latest)", ["key", "value"], sorted(record.metrics.items())))
    if record.tags:
        console.print(table("tags", ["key", "value"], sorted(record.tags.items())))
    env = dict(record.environment)
    packages = env.pop("packages", {})
    if env:
        env_rows = sorted(env.items()) + [(f"package {k}", v) for k, v in sorted(packages.items())]
        console.print(table("environment", ["key", "value"], env_rows))
    if artifacts:
        tree = Tree(f"artifacts ({len(artifacts)} files)")
        for a in artifacts:
            tree.add(f"{a.path}  [dim]{a.size} B  sha256:{(a.digest or '')[:12]}[/]")
        console.print(tree)


@runs_app.command("compare")
def runs_compare(
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
    as_json: JsonOpt = False,
) -> None:
    """Runs side by side; params that differ are highlighted."""
    comparison = kiln.runs.compare(run_ids)
    if as_json:
        emit_json(comparison.to_dict())
        return
    differing = {f"params.{k}" for k in comparison.differing_params}
    rows = [
        (f"[bold yellow]{name}[/]" if name in differing else name, *values)
        for name, values in comparison.rows()
    ]
    columns = ["field", *(r.id[-8:] for r in comparison.runs)]
    out = table("comparison", columns, [])
    for row in rows:
        out.add_row(row[0], *(fmt(v) for v in row[1:]))
    console.print(out)


@runs_app.command("history")
def runs_history(run_id: str, key: str, as_json: JsonOpt = False) -> None:
    """Every logged value of one metric."""
    points = kiln.runs.metric_history(run_id, key)
    if as_json:
        emit_json([p.to_dict() for p in points])
        return
    console.print(
        table(
            f"{key} of {run_id}",
            ["step", "value", "timestamp"],
            [(p.step, p.value, p.timestamp) for p in points],
        )
    )


@runs_app.command("download")
def runs_download(
    run_id: str,
    path: Annotated[str, typer.Argument(help="Artifact file or directory ('' for all).")] = "",
    dst: Annotated[Path, typer.Option("--dst", help="Destination directory.")] = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Download artifacts, verifying every file's sha256."""
    local = kiln.runs.download_artifacts(run_id, path, dst)
    prefix = "" if local == dst else local.relative_to(dst).as_posix()
    files = [
        a.to_dict()
        for a in kiln.runs.list_artifacts(run_id)
        if not prefix or a.path == prefix or a.path.startswith(f"{prefix}/")
    ]
    report(
        as_json,
        f"downloaded to {local}",
        {"action": "downloaded", "run_id": run_id, "path": str(local), "files": files},
    )
