"""Preemption: a termination signal turns into a checkpoint and a clean exit, and the same
command started again continues the run it left.

The signal handler only records that the signal came: the checkpoint is written by the
training loop's next ``Checkpointer.save`` call, between two steps, where the state is
consistent (a handler that saved from wherever the signal landed could store a model
half-way through an optimizer step). A second signal before that save restores the
previous handler and delivers the signal again, so an impatient sender still stops the
process the way it would have without Kiln.
"""

from __future__ import annotations

import signal
import threading
import warnings
from collections.abc import Mapping
from types import FrameType
from typing import Any

from kiln.core import KilnWarning, NotFound
from kiln.tracking import Run, RunStatus, TrackingClient, default_client, reopen_run, start_run
from kiln.tracking import runs as tracking_runs
from kiln.training import _manifest

__all__ = ["PREEMPTED_TAG", "RESUMES_TAG", "Preempted", "resume_or_start"]

PREEMPTED_TAG = "kiln.preempted"
RESUMES_TAG = "kiln.resumes"
_CANDIDATES = 20


class Preempted(SystemExit):
    """Raised by ``Checkpointer.save`` once the checkpoint a termination signal asked for
    is stored (and a live run it holds is ended KILLED, tagged ``kiln.preempted=true``).

    It is a ``SystemExit`` so that ``except Exception`` in a training loop does not swallow
    it; uncaught, the process exits with status 128 + the signal number, as a process
    killed by that signal would.
    """

    def __init__(self, signum: int, step: int | None, run_id: str) -> None:
        super().__init__(128 + signum)
        self.signal_name = signal.Signals(signum).name
        self.step = step
        self.run_id = run_id

    def __str__(self) -> str:
        where = f"after saving step {self.step}" if self.step is not None else "without saving"
        return f"run {self.run_id} preempted by {self.signal_name}; stopped {where}"


class SignalWatch:
    """Records termination signals while installed; only the main thread can install it."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)) -> None:
        self.received: int | None = None
        self._signals = signals
        self._previous: dict[int, Any] = {}

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            warnings.warn(
                "on_sigterm=True needs the main thread (Python runs signal handlers only "
                "there); this Checkpointer was made in another thread and does not handle "
                "SIGTERM",
                KilnWarning,
                stacklevel=3,
            )
            return False
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return True

    def uninstall(self) -> None:
        """Put the previous handlers back, unless someone replaced ours since."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            return
        self.uninstall()
        signal.raise_signal(signum)


def resume_or_start(
    experiment: str,
    name: str,
    *,
    tags: Mapping[str, Any] | None = None,
    client: TrackingClient | None = None,
) -> Run:
    """The run to train in: the newest KILLED or FAILED run named ``name`` in
    ``experiment`` that has checkpoints, reopened; otherwise a new run.

    Starting the same command again after a preemption (or a crash) thus continues the
    same run, where a ``Checkpointer`` on it restores the last checkpoint. A reopened run
    counts its resumes in the ``kiln.resumes`` tag.
    """
    client = client or default_client()
    quoted = name.replace("'", "''")
    try:
        candidates = tracking_runs.search(
            experiment,
            filter=f"attributes.name = '{quoted}' and attributes.status IN "
            f"('{RunStatus.KILLED}', '{RunStatus.FAILED}')",
            order_by=["-attributes.start_time"],
            limit=_CANDIDATES,
            client=client,
        )
    except NotFound:  # no such experiment yet
        candidates = []
    for record in candidates:
        listed = _manifest.read(client, record.id)
        if listed.entries or listed.fallback:
            run = reopen_run(record.id, client=client)
            resumes = record.tags.get(RESUMES_TAG, "0")
            count = int(resumes) + 1 if resumes.isdigit() else 1
            run.set_tags({RESUMES_TAG: count, **(tags or {})})
            return run
    return start_run(experiment, name, tags=tags, client=client)
