"""A small training job started as a user starts one, for the preemption tests.

    python _preemptible_job.py WEIGHTS_OUT MARKER SECONDS_PER_STEP

It resumes (or starts) the run "job" of experiment "preemption", trains with
``train_loop`` on a Checkpointer that turns SIGTERM into a checkpoint, and writes the
final weights to WEIGHTS_OUT. After its sixth step it writes MARKER, so a test knows
training is under way before it sends the signal.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import kiln

EPOCHS = 3


def build() -> tuple[torch.nn.Module, torch.optim.Optimizer, Any, DataLoader[Any]]:
    """The same model, optimizer, scheduler and shuffling loader on every start."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = torch.randn(96, 6), torch.randn(96, 1)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    return model, optimizer, scheduler, loader


def main(weights_out: Path, marker: Path, seconds_per_step: float) -> None:
    model, optimizer, scheduler, loader = build()
    calls = 0

    def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 6:
            marker.write_text("training")
        time.sleep(seconds_per_step)
        return torch.nn.functional.mse_loss(output, target)

    run = kiln.training.resume_or_start("preemption", "job")
    with run, kiln.training.Checkpointer(run, every=4, on_sigterm=True) as ckpt:
        kiln.training.train_loop(
            model, optimizer, loader, loss_fn, epochs=EPOCHS, ckpt=ckpt, scheduler=scheduler
        )
    torch.save(model.state_dict(), weights_out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]))
