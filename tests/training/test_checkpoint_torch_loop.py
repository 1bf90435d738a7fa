"""train_loop: interrupted anywhere and resumed, it ends with the same weights, bit for bit,
as a run that was never interrupted."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import kiln
from kiln.core import InvalidInput
from kiln.training import Checkpointer, train_loop

EPOCHS = 3


class Interrupted(Exception):
    pass


def build(
    seeded_loader: bool,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any, DataLoader[Any]]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = torch.randn(80, 5), torch.randn(80, 1)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    generator = torch.Generator().manual_seed(7) if seeded_loader else None
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=generator)
    return model, optimizer, scheduler, loader


def loss_failing_after(calls: int | None) -> Any:
    count = 0

    def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        if calls is not None and count > calls:
            raise Interrupted(f"stopped in step {count}")
        return torch.nn.functional.mse_loss(output, target)

    return loss_fn


def train(name: str, interrupt_after: list[int], *, seeded_loader: bool, **options: Any) -> Any:
    """Train to the end, interrupted after each of ``interrupt_after`` steps (counted from
    each start), each restart with new objects and the global generators disturbed."""
    interval = options.pop("scheduler_interval", "epoch")
    with kiln.start_run("loop", name) as run:
        for start, calls in enumerate([*interrupt_after, None]):
            model, optimizer, scheduler, loader = build(seeded_loader)
            torch.manual_seed(1234 + 1000 * start)  # a restart draws from elsewhere
            try:
                with Checkpointer(run, **options) as ckpt:
                    result = train_loop(
                        model,
                        optimizer,
                        loader,
                        loss_failing_after(calls),
                        epochs=EPOCHS,
                        ckpt=ckpt,
                        scheduler=scheduler,
                        scheduler_interval=interval,
                    )
            except Interrupted:
                continue
        return model, result, run


@pytest.mark.parametrize(
    ("seeded_loader", "options"),
    [
        (False, {"every": 4}),
        (True, {"every": 3, "async_save": True, "scheduler_interval": "step"}),
    ],
    ids=["global-generators", "loader-generator-async-step-scheduler"],
)
def test_an_interrupted_and_resumed_loop_ends_with_identical_weights(
    seeded_loader: bool, options: dict[str, Any]
) -> None:
    reference, done, _ = train("whole", [], seeded_loader=seeded_loader, **dict(options))
    resumed, again, _ = train("cut", [6, 9], seeded_loader=seeded_loader, **dict(options))
    assert done.step == again.step == EPOCHS * 10
    assert again.resumed_from is not None and again.resumed_from < EPOCHS * 10
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_loss_is_logged_every_step_and_a_finished_loop_resumes_as_done() -> None:
    model, result, run = train("logged", [], seeded_loader=False, every=5)
    history = kiln.runs.metric_history(run.id, "loss")
    assert [p.step for p in history] == list(range(1, EPOCHS * 10 + 1))
    assert result.loss == history[-1].value
    before = [p.detach().clone() for p in model.parameters()]
    with Checkpointer(run.id) as ckpt:
        model2, optimizer2, _, loader2 = build(False)
        again = train_loop(
            model2, optimizer2, loader2, loss_failing_after(0), epochs=EPOCHS, ckpt=ckpt
        )
    assert again.resumed_from == again.step == EPOCHS * 10  # no batch ran (loss_fn would raise)
    for a, b in zip(before, model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_train_loop_refuses_what_it_cannot_resume_or_run() -> None:
    model, optimizer, _, loader = build(False)
    with kiln.start_run("loop", "bad") as run, Checkpointer(run) as ckpt:
        with pytest.raises(InvalidInput, match="'epochs' parameter of train_loop"):
            train_loop(model, optimizer, loader, loss_failing_after(None), epochs=0, ckpt=ckpt)
        with pytest.raises(InvalidInput, match="batches of \\(inputs, targets\\); got a dict"):
            train_loop(model, optimizer, [{"x": 1}], loss_failing_after(None), epochs=1, ckpt=ckpt)
        ckpt.save({"weights": model}, 100, force=True)
        with pytest.raises(InvalidInput, match="step 100 was not saved by train_loop"):
            train_loop(model, optimizer, loader, loss_failing_after(None), epochs=1, ckpt=ckpt)
