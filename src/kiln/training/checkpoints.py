"""The :class:`Checkpointer`: saves a training state every ``every`` steps, keeps the newest
and the best, and gives the latest good one back, in this process or in another.

A save stores the bytes content-addressed in the run's artifact store, then lists them in
the run's checkpoint list in one transaction (see :mod:`kiln.training._manifest`): a
process killed mid-save never damages the checkpoint before. ``restore`` verifies each
checkpoint against its sha256 and falls back to an older one when the newest is damaged.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

from kiln.core import (
    Conflict,
    IntegrityError,
    InvalidInput,
    KilnWarning,
    NotFound,
    from_millis,
    now_millis,
)
from kiln.tracking import Run, RunStatus, TrackingClient, default_client
from kiln.tracking import runs as tracking_runs
from kiln.training import _manifest, _rng
from kiln.training._checkpoint import Checkpoint, CheckpointInfo
from kiln.training._serialize import (
    PICKLE,
    TORCH,
    Encoder,
    Staging,
    decode,
    holds_torch,
    to_state_dicts,
)
from kiln.training.preemption import PREEMPTED_TAG, Preempted, SignalWatch

__all__ = ["Checkpointer"]

_MODES = ("min", "max")


class Checkpointer:
    """Checkpoints of one run's training.

    ``run`` is a live :class:`~kiln.tracking.Run` or a run id (a worker process gets the
    id). ``save`` stores when ``step % every == 0`` (or ``force=True``); ``keep_last``
    newest checkpoints are kept (``None`` keeps all), and with ``keep_best=(metric,
    "min" | "max")`` the best by that metric as well. ``async_save=True`` copies the state
    in the calling thread and stores it on a background thread (one save in flight at a
    time). ``on_sigterm=True`` turns SIGTERM into a checkpoint at the next ``save`` and a
    :class:`~kiln.training.Preempted` exit.
    """

    def __init__(
        self,
        run: Run | str,
        *,
        every: int = 1,
        keep_last: int | None = 3,
        keep_best: tuple[str, str] | None = None,
        async_save: bool = False,
        on_sigterm: bool = False,
        client: TrackingClient | None = None,
    ) -> None:
        self.every = _positive("every", every, "save when step % every == 0")
        self.keep_last = None if keep_last is None else _positive("keep_last", keep_last, "or None")
        self.keep_best = _check_keep_best(keep_best)
        self.async_save = _flag("async_save", async_save)
        if isinstance(run, Run):
            self.run: Run | None = run
            self.run_id = run.id
            self.client = run.client
        elif isinstance(run, str):
            self.run = None
            self.run_id = run
            self.client = client or default_client()
            try:
                tracking_runs.get(run, client=self.client)
            except NotFound:
                raise NotFound(
                    f"Checkpointer: no run with id {run!r}; pass a live run or the id of an "
                    "existing one"
                ) from None
        else:
            raise InvalidInput(
                f"The 'run' parameter of Checkpointer must be a kiln Run or a run id; got "
                f"{type(run).__name__}"
            )
        self._encoder = Encoder()
        self._staging = Staging()
        self._entries: list[CheckpointInfo] | None = None
        self._executor: ThreadPoolExecutor | None = None
        # the background save in flight, or the forcing to disk of the last synchronous one
        self._inflight: tuple[int, Future[Any]] | None = None
        self._closed = False
        self._warned_metric = False
        self._lock = threading.Lock()
        self._watch: SignalWatch | None = None
        if _flag("on_sigterm", on_sigterm):
            watch = SignalWatch()
            if watch.install():
                self._watch = watch

    def __repr__(self) -> str:
        return (
            f"<Checkpointer run={self.run_id} every={self.every} keep_last={self.keep_last} "
            f"keep_best={self.keep_best} async_save={self.async_save}>"
        )

    # -- saving ---------------------------------------------------------------------------

    def due(self, step: int) -> bool:
        """Whether ``save`` at ``step`` stores (a signal pending counts as due)."""
        return step % self.every == 0 or self.preempted

    @property
    def preempted(self) -> bool:
        """A termination signal came and its checkpoint has not been saved yet."""
        return self._watch is not None and self._watch.received is not None

    def save(
        self,
        state: Mapping[str, Any],
        step: int,
        metrics: Mapping[str, float] | None = None,
        *,
        force: bool = False,
    ) -> Checkpoint | None:
        """Store ``state`` as the checkpoint of ``step`` when due; None when skipped.

        Values with a ``state_dict()`` are stored as their state_dicts, the rest as they
        are; the random generators' states go with them. After a termination signal this
        saves whatever the step and raises :class:`~kiln.training.Preempted`.
        """
        if self._closed:
            raise Conflict(f"this Checkpointer of run {self.run_id} is closed; make a new one")
        step = _step(step)
        preempting = self.preempted
        if not (_flag("force", force) or preempting or step % self.every == 0):
            return None
        if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
            raise InvalidInput(
                "The 'state' parameter of save must be a mapping of names (str) to values, "
                f"e.g. {{'model': model, 'epoch': 3}}; got {type(state).__name__}"
            )
        checked = _metrics(metrics)
        self._check_best_metric(step, checked)
        self.wait()
        prepared = to_state_dicts(state)
        if not isinstance(prepared, dict):  # a read-only or custom mapping: store its items
            prepared = dict(prepared)
        rng = _rng.capture()
        created = now_millis()
        stored: CheckpointInfo | Future[CheckpointInfo]
        if self.async_save and not preempting:
            snapshot = self._staging.snapshot(prepared)
            future = self._pool().submit(self._store, snapshot, step, checked, rng, created)
            self._inflight = (step, future)
            stored = future
        else:
            stored = self._store(prepared, step, checked, rng, created, durable=False)
            digest = stored.digest
            self._inflight = (step, self._pool().submit(self.client.blobs.sync, digest))
        saved = Checkpoint(
            step=step,
            state=prepared,
            metrics=checked,
            run_id=self.run_id,
            rng=rng,
            stored=stored,
        )
        if preempting:
            self._preempt(step)
        return saved

    def wait(self) -> None:
        """Block until the background save in flight is stored; raise what it raised."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        step, future = inflight
        error = future.exception()
        if error is not None:
            error.add_note(f"raised storing checkpoint step {step} of run {self.run_id}")
            raise error

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="kiln-checkpoint")
        return self._executor

    def _store(
        self,
        state: dict[str, Any],
        step: int,
        metrics: dict[str, float],
        rng: dict[str, Any],
        created: int,
        *,
        durable: bool = True,
    ) -> CheckpointInfo:
        """Encode, store the bytes, then list them: runs in the caller or the saver thread,
        never in both at once (a save waits for the one in flight).

        A synchronous save stores with ``durable=False`` and leaves forcing the bytes to
        disk to the saver thread, which the next save and ``close`` wait for: the loop
        goes on as soon as the checkpoint is readable, as after ``torch.save``. A process
        that dies meanwhile loses nothing (the bytes are in the OS's cache); a power cut
        can cost only this checkpoint, which ``restore`` then skips by its hash for the
        one before, forced to disk before this one was listed.
        """
        with self._lock:
            fmt = TORCH if holds_torch(state) else PICKLE
            payload = {
                "kiln_checkpoint": 1,
                "run_id": self.run_id,
                "step": step,
                "metrics": metrics,
                "created_at": created,
                "rng": rng,
                "state": state,
            }
            blob = self.client.blobs.put_bytes(self._encoder.encode(payload, fmt), durable=durable)
            info = CheckpointInfo(
                run_id=self.run_id,
                step=step,
                digest=blob.digest,
                size=blob.size,
                format=fmt,
                metrics=metrics,
                created_at=from_millis(created),
            )
            entries = [e for e in self._listed() if e.step != step]
            entries.append(info)
            kept = self._retain(entries)
            _manifest.write(self.client, self.run_id, kept)
            self._entries = kept
            return info

    def _listed(self) -> list[CheckpointInfo]:
        """The list this process keeps writing, read from the store once."""
        if self._entries is None:
            listed = _manifest.read(self.client, self.run_id)
            if listed.damaged:
                warnings.warn(
                    f"the checkpoint list of run {self.run_id} cannot be read "
                    f"({listed.damaged}); starting a new list, older checkpoints are no "
                    "longer listed",
                    KilnWarning,
                    stacklevel=4,
                )
            self._entries = list(listed.entries)
        return self._entries

    def _retain(self, entries: list[CheckpointInfo]) -> list[CheckpointInfo]:
        """The ``keep_last`` newest and the best, in the order they were saved."""
        keep = entries if self.keep_last is None else entries[-self.keep_last :]
        best = self._best(entries)
        kept_ids = {id(e) for e in keep} | ({id(best)} if best is not None else set())
        return [e for e in entries if id(e) in kept_ids]

    def _best(self, entries: list[CheckpointInfo]) -> CheckpointInfo | None:
        if self.keep_best is None:
            return None
        metric, mode = self.keep_best
        best: CheckpointInfo | None = None
        for entry in entries:
            value = entry.metrics.get(metric)
            if value is None or math.isnan(value):
                continue
            held = best.metrics[metric] if best is not None else None
            if held is None or (value <= held if mode == "min" else value >= held):
                best = entry
        return best

    def _check_best_metric(self, step: int, metrics: dict[str, float]) -> None:
        if self.keep_best is None or self._warned_metric or self.keep_best[0] in metrics:
            return
        self._warned_metric = True
        warnings.warn(
            f"keep_best ranks checkpoints by {self.keep_best[0]!r} but the save of step {step} "
            f"has no such metric (it has: {', '.join(sorted(metrics)) or 'none'}); a "
            "checkpoint saved without it is never kept as the best",
            KilnWarning,
            stacklevel=3,
        )

    def _preempt(self, step: int | None) -> None:
        """End a live run as preempted and raise :class:`Preempted` (``step``: the last
        checkpoint saved)."""
        watch = self._watch
        if watch is None or watch.received is None:
            return
        signum = watch.received
        watch.received = None
        error = Preempted(signum, step, self.run_id)
        if self.run is not None:
            self.run.end(
                RunStatus.KILLED,
                error=f"preempted: {error.signal_name}",
                tags={PREEMPTED_TAG: "true"},
            )
        raise error

    # -- reading --------------------------------------------------------------------------

    def checkpoints(self) -> list[CheckpointInfo]:
        """The run's checkpoint list as stored now, oldest first (the last is the latest)."""
        listed = _manifest.read(self.client, self.run_id)
        if listed.damaged:
            raise IntegrityError(
                f"the checkpoint list of run {self.run_id} cannot be read: {listed.damaged}"
            )
        return list(listed.entries)

    def restore(
        self,
        step: int | None = None,
        *,
        best: bool = False,
        rng: bool = True,
        map_location: Any = None,
    ) -> Checkpoint | None:
        """The latest good checkpoint (or the one of ``step``, or the best), None if none.

        Each is checked against its sha256 first; a damaged latest one is skipped, with a
        warning naming its step and digest, for the one before it. With ``rng`` (the
        default) the random generators are put back as they were at that save.
        ``map_location`` is passed to ``torch.load`` (``"cpu"`` on a machine without the
        GPUs the state was saved from).
        """
        self.wait()
        listed = _manifest.read(self.client, self.run_id)
        checkpoint: Checkpoint | None
        if step is not None or best:
            info = self._chosen(listed, step, best)
            checkpoint = self._load(info.digest, info, map_location)
        else:
            checkpoint = self._latest_good(listed, map_location)
        if checkpoint is not None and rng:
            checkpoint.restore_rng()
        return checkpoint

    def resume(self, **objects: Any) -> int:
        """The step a loop starts from: 0 when nothing is stored yet, else the latest good
        checkpoint's step + 1, its state loaded into ``objects`` (``model=``,
        ``optimizer=``...) and the random generators put back, as :meth:`restore` does."""
        checkpoint = self.restore()
        if checkpoint is None:
            return 0
        checkpoint.load_into(**objects)
        return checkpoint.step + 1

    def _chosen(self, listed: _manifest.Manifest, step: int | None, best: bool) -> CheckpointInfo:
        if listed.damaged:
            raise IntegrityError(
                f"the checkpoint list of run {self.run_id} cannot be read: {listed.damaged}"
            )
        if best:
            if step is not None:
                raise InvalidInput("restore takes a step or best=True, not both")
            if self.keep_best is None:
                raise InvalidInput(
                    "restore(best=True) needs the Checkpointer's keep_best=(metric, mode) to "
                    "know what best means"
                )
            found = self._best(list(listed.entries))
            if found is None:
                raise NotFound(
                    f"run {self.run_id} has no checkpoint with metric {self.keep_best[0]!r}"
                )
            return found
        step = _step(step)
        for info in listed.entries:
            if info.step == step:
                return info
        steps = ", ".join(str(e.step) for e in listed.entries) or "none"
        raise NotFound(f"run {self.run_id} has no checkpoint of step {step}; it has: {steps}")

    def _latest_good(self, listed: _manifest.Manifest, map_location: Any) -> Checkpoint | None:
        if listed.damaged:
            warnings.warn(
                f"the checkpoint list of run {self.run_id} cannot be read ({listed.damaged}); "
                "trying checkpoints/latest.ckpt",
                KilnWarning,
                stacklevel=3,
            )
            candidates: list[tuple[str, CheckpointInfo | None]] = [
                (d, None) for d in listed.fallback
            ]
        else:
            candidates = [(e.digest, e) for e in reversed(listed.entries)]
        for i, (digest, info) in enumerate(candidates):
            try:
                return self._load(digest, info, map_location)
            except (IntegrityError, NotFound) as exc:
                which = f"step {info.step}" if info is not None else "checkpoints/latest.ckpt"
                older = candidates[i + 1][1] if i + 1 < len(candidates) else None
                then = (
                    f"falling back to step {older.step}"
                    if older is not None
                    else "no older checkpoint is left"
                )
                warnings.warn(
                    f"checkpoint {which} (sha256:{digest}) of run {self.run_id} cannot be "
                    f"used: {exc}; {then}",
                    KilnWarning,
                    stacklevel=3,
                )
        if candidates:
            warnings.warn(
                f"run {self.run_id} has no good checkpoint left ({len(candidates)} damaged); "
                "restore returns None and training starts from the beginning",
                KilnWarning,
                stacklevel=3,
            )
        return None

    def _load(self, digest: str, info: CheckpointInfo | None, map_location: Any) -> Checkpoint:
        data = self.client.blobs.get_bytes(digest)
        payload = decode(data, map_location=map_location)
        step = int(payload["step"])
        metrics = {str(k): float(v) for k, v in payload.get("metrics", {}).items()}
        if info is None:
            info = CheckpointInfo(
                run_id=self.run_id,
                step=step,
                digest=digest,
                size=len(data),
                format=TORCH if data[:2] == b"PK" else PICKLE,
                metrics=metrics,
                created_at=from_millis(int(payload.get("created_at", 0))),
            )
        return Checkpoint(
            step=step,
            state=payload["state"],
            metrics=metrics,
            run_id=self.run_id,
            rng=payload.get("rng"),
            stored=info,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Wait for the save in flight, free the buffers, put the signal handler back.

        A termination signal that came after the last save still ends the run as
        preempted: the next start resumes from that save.
        """
        if self._closed:
            return
        try:
            self.wait()
        finally:
            self._closed = True
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            self._encoder.release()
            self._staging.release()
            if self._watch is not None:
                self._watch.uninstall()
        if self.preempted:
            self._preempt(self._entries[-1].step if self._entries else None)

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        if self._watch is not None:
            self._watch.received = None  # the exception in flight decides how this ends
        try:
            self.close()
        except Exception as error:  # the exception already in flight is the one to see
            warnings.warn(
                f"the background checkpoint save of run {self.run_id} also failed: {error}",
                KilnWarning,
                stacklevel=2,
            )


def _positive(name: str, value: Any, rule: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(
            f"The '{name}' parameter of Checkpointer must be a positive integer ({rule}); "
            f"got {value!r}"
        )
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"The '{name}' parameter must be True or False; got {value!r}")
    return value


def _check_keep_best(value: Any) -> tuple[str, str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not value[0]
        or value[1] not in _MODES
    ):
        raise InvalidInput(
            "The 'keep_best' parameter of Checkpointer must be (metric, 'min' | 'max'), e.g. "
            f"('val_loss', 'min'); got {value!r}"
        )
    return (value[0], value[1])


def _step(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(
            f"The 'step' parameter of save must be a non-negative integer; got {value!r}"
        )
    return value


def _metrics(value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(
            f"The 'metrics' parameter of save must be a mapping of name to number; got "
            f"{type(value).__name__}"
        )
    out: dict[str, float] = {}
    for key, number in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"metric names must be non-empty strings; got {key!r}")
        try:
            out[key] = float(number)
        except (TypeError, ValueError):
            raise InvalidInput(f"metric {key!r} must be a number; got {number!r}") from None
    return out
