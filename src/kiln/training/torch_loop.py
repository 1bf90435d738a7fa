"""A PyTorch training loop that resumes where it stopped, to the same bits.

Resuming exactly needs more than the weights: the optimizer's moments, the scheduler, the
random generators, and the order of the batches still to come in the interrupted epoch.
A shuffling loader draws that order from the random generators when the epoch starts, so
each checkpoint keeps the generators' state from the start of its epoch as well as from
the save: on resume the loop rewinds to the epoch's start, draws the same order, skips the
batches already trained on, then puts the generators where the save left them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from kiln.core import InvalidInput
from kiln.training import _rng
from kiln.training.checkpoints import Checkpointer

if TYPE_CHECKING:
    import torch

__all__ = ["LoopResult", "train_loop"]

_LOOP_KEYS = ("epoch", "batch", "step", "epoch_rng", "generators")


@dataclass(frozen=True, kw_only=True)
class LoopResult:
    """Where the loop ended: optimizer steps and epochs done, the last batch's loss, and
    the step of the checkpoint it resumed from (None when it started fresh)."""

    step: int
    epoch: int
    loss: float | None
    resumed_from: int | None


def train_loop(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable[Any],
    loss_fn: Callable[[Any, Any], torch.Tensor],
    *,
    epochs: int,
    ckpt: Checkpointer,
    scheduler: Any = None,
    scheduler_interval: Literal["epoch", "step"] = "epoch",
    device: str | torch.device | None = None,
    log_every: int = 1,
) -> LoopResult:
    """Train ``model`` for ``epochs`` over ``loader``'s ``(inputs, targets)`` batches,
    resuming from ``ckpt``'s latest checkpoint when there is one.

    Each step computes ``loss_fn(model(inputs), targets)``, steps the optimizer (and the
    scheduler per ``scheduler_interval``), logs ``loss`` to the checkpointer's run every
    ``log_every`` steps, and offers a checkpoint (``model``, ``optimizer``, ``scheduler``,
    the loop's position) to ``ckpt.save``, which stores it every ``ckpt.every`` steps. The
    end of training is always saved, so running the loop again is a no-op.

    Interrupted and resumed, the final weights equal an uninterrupted run's when the
    batches come from the global generators or from ``torch.Generator`` objects given to
    the loader or its sampler (the loop restores those too) and the model's own
    arithmetic is deterministic.
    """
    import torch

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidInput(
            f"The 'epochs' parameter of train_loop must be a positive integer; got {epochs!r}"
        )
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
        raise InvalidInput(
            f"The 'log_every' parameter of train_loop must be a positive integer; got {log_every!r}"
        )
    if scheduler_interval not in ("epoch", "step"):
        raise InvalidInput(
            "The 'scheduler_interval' parameter of train_loop must be 'epoch' or 'step'; got "
            f"{scheduler_interval!r}"
        )
    if not isinstance(ckpt, Checkpointer):
        raise InvalidInput(
            f"The 'ckpt' parameter of train_loop must be a kiln.training.Checkpointer; got "
            f"{type(ckpt).__name__}"
        )
    parts: dict[str, Any] = {"model": model, "optimizer": optimizer}
    if scheduler is not None:
        parts["scheduler"] = scheduler
    generators = _loader_generators(loader, torch)

    resumed = ckpt.restore(rng=False)
    epoch, skip, step = 0, 0, 0
    epoch_rng: dict[str, Any] = {}
    generator_states: list[Any] = []
    if resumed is not None:
        position = _position(resumed.state, resumed.step, set(parts))
        resumed.load_into(**parts)
        epoch, skip, step = position["epoch"], position["batch"], position["step"]
        epoch_rng, generator_states = position["epoch_rng"], position["generators"]

    run = ckpt.run
    loss_value: float | None = None
    model.train()
    while epoch < epochs:
        if resumed is not None and skip >= 0:
            _rng.restore(epoch_rng)
            for generator, state in zip(generators, generator_states, strict=False):
                generator.set_state(torch.from_numpy(state.copy()))
        else:
            epoch_rng = _rng.capture()
            generator_states = [g.get_state().numpy() for g in generators]
        batches: Iterator[Any] = iter(loader)
        batch = 0
        if resumed is not None and skip >= 0:
            for _ in range(skip):
                if next(batches, _END) is _END:
                    break
                batch += 1
            resumed.restore_rng()
            skip = -1
        for item in batches:
            inputs, targets = _pair(item, device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            torch.autograd.backward(loss)
            optimizer.step()
            if scheduler is not None and scheduler_interval == "step":
                scheduler.step()
            step += 1
            batch += 1
            logging = run is not None and step % log_every == 0
            saving = ckpt.due(step)
            if not (logging or saving):
                continue
            loss_value = float(loss.item())
            if logging and run is not None:
                run.log_metric("loss", loss_value, step=step)
            if saving:
                position = {
                    "epoch": epoch,
                    "batch": batch,
                    "step": step,
                    "epoch_rng": epoch_rng,
                    "generators": generator_states,
                }
                ckpt.save({**parts, "loop": position}, step, {"loss": loss_value})
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        epoch += 1
    done = {"epoch": epoch, "batch": 0, "step": step, "epoch_rng": {}, "generators": []}
    ckpt.save({**parts, "loop": done}, step, _final_metrics(loss_value), force=True)
    return LoopResult(
        step=step,
        epoch=epoch,
        loss=loss_value,
        resumed_from=resumed.step if resumed is not None else None,
    )


_END = object()


def _final_metrics(loss: float | None) -> dict[str, float]:
    return {"loss": loss} if loss is not None else {}


def _loader_generators(loader: Any, torch: Any) -> list[Any]:
    """Dedicated generators the loader shuffles or samples with, restored with the rest."""
    found: list[Any] = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def _position(state: dict[str, Any], step: int, parts: set[str]) -> dict[str, Any]:
    loop = state.get("loop")
    missing = [p for p in sorted(parts) if p not in state]
    if not isinstance(loop, dict) or any(k not in loop for k in _LOOP_KEYS) or missing:
        raise InvalidInput(
            f"checkpoint step {step} was not saved by train_loop (it holds "
            f"{', '.join(sorted(state))}); resume it with your own loop, or give train_loop "
            "a Checkpointer on another run"
        )
    return loop


def _pair(item: Any, device: Any) -> tuple[Any, Any]:
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise InvalidInput(
            "train_loop takes batches of (inputs, targets); got a "
            f"{type(item).__name__}{f' of {len(item)}' if isinstance(item, tuple | list) else ''}"
        )
    inputs, targets = item
    if device is not None:
        inputs, targets = _to(inputs, device), _to(targets, device)
    return inputs, targets


def _to(value: Any, device: Any) -> Any:
    move = getattr(value, "to", None)
    return move(device) if callable(move) else value
