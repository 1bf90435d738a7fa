"""The two checkpoint records: :class:`CheckpointInfo`, what the run's list says about one
(step, digest, metrics), and :class:`Checkpoint`, one loaded with its state."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kiln.core import InvalidInput, NotFound, from_millis, to_millis

__all__ = ["Checkpoint", "CheckpointInfo"]


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """One entry of a run's checkpoint list, readable without loading the state."""

    run_id: str
    step: int
    digest: str
    size: int
    format: str  # "torch" (torch.save) or "pickle"
    metrics: Mapping[str, float]
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "step": self.step,
            "digest": self.digest,
            "size": self.size,
            "format": self.format,
            "metrics": dict(self.metrics),
            "created_at": self.created_at.isoformat(),
        }

    def to_json(self) -> dict[str, Any]:
        """The manifest's form: times in milliseconds, as the metadata store keeps them."""
        out = self.to_dict()
        del out["run_id"]
        out["created_at"] = to_millis(self.created_at)
        return out

    @classmethod
    def from_json(cls, run_id: str, data: Mapping[str, Any]) -> CheckpointInfo:
        return cls(
            run_id=run_id,
            step=int(data["step"]),
            digest=str(data["digest"]),
            size=int(data["size"]),
            format=str(data["format"]),
            metrics={str(k): float(v) for k, v in data["metrics"].items()},
            created_at=from_millis(int(data["created_at"])),
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class Checkpoint:
    """A checkpoint with its state: ``state`` maps the names given to ``save`` to values,
    objects with a ``state_dict()`` (modules, optimizers, schedulers) as their state_dicts.

    A checkpoint returned by a background save is complete in the training thread at
    once; only ``digest``, ``size`` and ``created_at`` wait for the bytes to be stored
    (and raise what storing them raised).
    """

    step: int
    state: dict[str, Any]
    metrics: Mapping[str, float]
    run_id: str
    rng: Mapping[str, Any] | None = field(default=None, repr=False)
    stored: CheckpointInfo | Future[CheckpointInfo] = field(repr=False)

    @property
    def info(self) -> CheckpointInfo:
        stored = self.stored
        return stored.result() if isinstance(stored, Future) else stored

    @property
    def digest(self) -> str:
        return self.info.digest

    @property
    def size(self) -> int:
        return self.info.size

    @property
    def created_at(self) -> datetime:
        return self.info.created_at

    def load_into(self, **objects: Any) -> None:
        """Load each named part of the state into a live object, by the name it was saved
        under: ``ckpt.load_into(model=model, optimizer=opt, scheduler=sched)``.

        Objects whose state refers to others load after them (a scheduler after its
        optimizer), as the keyword order gives.
        """
        missing = [name for name in objects if name not in self.state]
        if missing:
            raise NotFound(
                f"checkpoint step {self.step} of run {self.run_id} holds no state named "
                f"{missing[0]!r}; it holds: {', '.join(sorted(self.state)) or 'nothing'}"
            )
        for name, target in objects.items():
            load = getattr(target, "load_state_dict", None)
            if not callable(load):
                raise InvalidInput(
                    f"load_into({name}=...) needs an object with load_state_dict() (a torch "
                    f"module, optimizer or scheduler); got {type(target).__name__}"
                )
            load(self.state[name])

    def restore_rng(self) -> None:
        """Put the random generators back as they were when this checkpoint was saved."""
        from kiln.training import _rng

        if self.rng is not None:
            _rng.restore(dict(self.rng))
