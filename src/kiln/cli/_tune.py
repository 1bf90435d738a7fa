"""``kiln tune list|show|resume``: studies as stored, and continuing one that stopped."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import kiln.tuning as tuning
from kiln.cli._format import JsonOpt, console, emit_json, fmt, table

tune_app = typer.Typer(help="Hyperparameter studies: list, show, resume.", no_args_is_help=True)

StudyArg = Annotated[str, typer.Argument(help="The study's name.")]


def _counts(trials: list[tuning.TrialRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        state = "INTERRUPTED" if t.interrupted else t.state
        out[state] = out.get(state, 0) + 1
    return out


def _study_json(study: tuning.Study, trials: list[tuning.TrialRecord]) -> dict[str, Any]:
    c = study.config
    return {
        "name": study.name,
        "run_id": study.run_id,
        "experiment": c.experiment,
        "directions": list(c.directions),
        "metrics": list(c.metrics),
        "sampler": c.sampler,
        "pruner": c.pruner,
        "n_trials": c.n_trials,
        "parallel": c.parallel,
        "executor": c.executor,
        "trials": _counts(trials),
    }


@tune_app.command("list")
def list_studies(
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="Only studies of this experiment.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Studies, newest first, with how many of their trials ended each way."""
    studies = tuning.list_studies(experiment)
    rows = [(s, s.trials) for s in studies]
    if as_json:
        emit_json([_study_json(s, trials) for s, trials in rows])
        return
    console.print(
        table(
            "studies",
            [
                "name",
                "experiment",
                "sampler",
                "objectives",
                "trials",
                "complete",
                "pruned",
                "failed",
            ],
            [
                (
                    escape(s.name),
                    escape(s.config.experiment),
                    s.config.sampler,
                    ", ".join(
                        f"{m} ({d[:3]})"
                        for m, d in zip(s.config.metrics, s.directions, strict=True)
                    ),
                    f"{sum(1 for t in trials if not t.interrupted)}/{s.config.n_trials}",
                    _counts(trials).get("COMPLETE", 0),
                    _counts(trials).get("PRUNED", 0),
                    _counts(trials).get("FAIL", 0),
                )
                for s, trials in rows
            ],
        )
    )


def _trial_rows(study: tuning.Study, trials: list[tuning.TrialRecord]) -> list[tuple[Any, ...]]:
    names = sorted({k for t in trials for k in t.params})
    return [
        (t.number, *(t.values or ()), *(t.params.get(n) for n in names), t.run_id) for t in trials
    ]


@tune_app.command("show")
def show_study(
    name: StudyArg,
    top: Annotated[int, typer.Option("--top", min=1, help="How many best trials.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """The best trials (or the Pareto front), the optimization history and how much each
    parameter mattered."""
    study = tuning.load_study(name)
    trials = study.trials
    multi = len(study.directions) > 1
    done = [t for t in trials if t.state == "COMPLETE"]
    if multi:
        best = study.pareto_front
    else:
        sign = -1.0 if study.directions[0] == "maximize" else 1.0
        best = sorted(done, key=lambda t: (sign * (t.value or 0.0), t.number))[:top]
    history = [] if multi else study.history()
    importances = study.importances()
    if as_json:
        emit_json(
            {
                **_study_json(study, trials),
                "best": [t.to_dict() for t in best],
                "pareto_front" if multi else "best_trials": [t.number for t in best],
                "history": [{"trial": n, "value": v, "best": b} for n, v, b in history],
                "importances": importances,
                "failed": [t.to_dict() for t in trials if t.state == "FAIL"],
            }
        )
        return
    c = study.config
    counts = _counts(trials)
    console.print(
        f"[bold]{escape(study.name)}[/] (run {study.run_id}, experiment {escape(c.experiment)}): "
        f"{c.sampler} sampler, pruner {c.pruner}, "
        f"{sum(1 for t in trials if not t.interrupted)} of {c.n_trials} trials ended "
        + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())),
        highlight=False,
    )
    names = sorted({k for t in best for k in t.params})
    objectives = [f"{m} ({d[:3]})" for m, d in zip(c.metrics, c.directions, strict=True)]
    console.print(
        table(
            "Pareto front" if multi else f"best {len(best)} trials",
            ["trial", *objectives, *names, "run"],
            _trial_rows(study, best)
            if names
            else [(t.number, *(t.values or ()), t.run_id) for t in best],
        )
    )
    if history:
        marks = _history_marks(history)
        console.print(
            table(
                "optimization history (best so far)",
                ["trial", c.metrics[0], "best so far"],
                [(n, v, b) for n, v, b in marks],
            )
        )
    if importances:
        width = 30
        console.print(
            table(
                "parameter importances",
                ["param", "importance", ""],
                [(k, v, "█" * max(1, round(v * width))) for k, v in importances.items()],
            )
        )
    failed = [t for t in trials if t.state == "FAIL" and not t.interrupted]
    if failed:
        console.print(
            table(
                "failed trials",
                ["trial", "reason", "run"],
                [(t.number, escape(t.reason or ""), t.run_id) for t in failed[:top]],
            )
        )


def _history_marks(history: list[tuple[int, float, float]]) -> list[tuple[int, float, float]]:
    """The trials where the best so far improved, and the last one: the history's shape
    in a few rows whatever the number of trials."""
    marks = [h for i, h in enumerate(history) if i == 0 or h[2] != history[i - 1][2]]
    if history[-1] not in marks:
        marks.append(history[-1])
    return marks


@tune_app.command("resume")
def resume_study(
    name: StudyArg,
    parallel: Annotated[
        int | None, typer.Option("--parallel", min=1, help="Trials at once (default: as before).")
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor", help="processes, ray, ray:auto or ray://HOST:PORT (default: as before)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Continue a study that stopped: finished trials stay, trials that were running are
    tried again, until it has its number of trials."""
    study = tuning.load_study(name)
    before = [t for t in study.trials if not t.interrupted and t.state != "RUNNING"]
    total = study.config.n_trials
    if as_json:
        result = tuning.resume(name, parallel=parallel, executor=executor)
    else:
        console.print(
            f"resuming study {escape(name)}: {len(before)} of {total} trials ended", highlight=False
        )
        with Progress(
            TextColumn("trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("trials", total=total, completed=len(before))
            result = tuning.resume(
                name,
                parallel=parallel,
                executor=executor,
                callbacks=[lambda _s, _t: bar.advance(task)],
            )
    trials = result.trials
    data = _study_json(result, trials)
    if len(result.directions) == 1:
        try:
            best = result.best_trial
            data["best"] = best.to_dict()
        except Exception:
            best = None
    else:
        best = None
        data["pareto_front"] = [t.number for t in result.pareto_front]
    if as_json:
        emit_json(data)
        return
    line = f"study {escape(name)}: " + ", ".join(
        f"{v} {k.lower()}" for k, v in sorted(_counts(trials).items())
    )
    if best is not None:
        line += f"; best trial {best.number}: {result.config.metrics[0]} {fmt(best.value)}"
    console.print(line, highlight=False)
