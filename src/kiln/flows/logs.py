"""What a flow run's tasks printed, and why their failed attempts failed."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.core import NotFound
from kiln.flows._records import tasks
from kiln.tracking import TrackingClient, default_client
from kiln.tracking.artifacts import list_artifacts

__all__ = ["TaskLog", "task_logs"]


@dataclass(frozen=True)
class TaskLog:
    task: str
    step: str
    status: str
    stdout: str
    stderr: str
    tracebacks: tuple[str, ...]  # one per failed attempt, in order


def task_logs(
    run_id: str, step: str | None = None, *, client: TrackingClient | None = None
) -> list[TaskLog]:
    """The logs of every task of ``run_id`` (of one step or task when ``step`` is given)."""
    client = client or default_client()
    found = tasks(run_id, client=client)
    chosen = [t for t in found if step is None or step in (t.step, t.task)]
    if step is not None and not chosen:
        names = ", ".join(sorted({t.step for t in found})) or "none"
        raise NotFound(f"flow run {run_id} has no step {step!r}; its steps: {names}")
    logs = []
    for task in chosen:
        texts = {"stdout.txt": "", "stderr.txt": ""}
        if task.child_run_id:
            for record in list_artifacts(task.child_run_id, client=client):
                if record.path in texts and record.digest:
                    texts[record.path] = client.blobs.get_bytes(record.digest).decode(
                        "utf-8", "replace"
                    )
        logs.append(
            TaskLog(
                task=task.task,
                step=task.step,
                status=task.status,
                stdout=texts["stdout.txt"],
                stderr=texts["stderr.txt"],
                tracebacks=tuple(h["traceback"] for h in task.history if h.get("traceback")),
            )
        )
    return logs
