"""Training functions the distributed tests run (importable by spawned workers)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import torch


def _data() -> Any:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x @ torch.arange(8.0) > 0).float().unsqueeze(1)
    return torch.utils.data.TensorDataset(x, y)


class MLP(torch.nn.Module):
    """A module the registry can rebuild by name (importable, no constructor arguments)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
        )

    def forward(self, x: Any) -> Any:
        return self.net(x)


def mlp(ctx: Any) -> Any:
    """A small MLP, data-parallel over the group, checkpointed every step; with
    config["kill_at"] rank 1 kills itself (SIGKILL) at that step on the first start, and
    with config["term_at"] rank 0 is stopped as a preempted machine stops it (SIGTERM) at
    that step on the second start, and its checkpointer saves on the signal (local
    processes: the function runs on the worker's main thread)."""
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    model = MLP()
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    data = _data()
    sampler = ctx.shard(data)
    loader = torch.utils.data.DataLoader(data, batch_size=16, sampler=sampler)
    steps = int(ctx.config.get("steps", 12))
    term_at = ctx.config.get("term_at")
    ckpt = ctx.checkpointer(every=1, keep_last=2, on_sigterm=term_at is not None and ctx.rank == 0)
    start = ckpt.resume(model=model, optimizer=opt)  # 0, or the step after the latest
    if ctx.rank == 0 and ctx.config.get("starts"):
        with open(str(ctx.config["starts"]), "a") as starts:
            starts.write(f"{start}\n")
    kill_at = ctx.config.get("kill_at")
    marker = Path(str(ctx.config.get("marker", "")))
    batches = list(loader)
    for step in range(start, steps):
        if kill_at is not None and step == kill_at and ctx.rank == 1 and not marker.exists():
            # what the engine told this worker about its health checks (Ray Train's)
            marker.write_text(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", ""))
            os.kill(os.getpid(), signal.SIGKILL)
        if term_at is not None and step == term_at and ctx.attempt == 1 and ctx.rank == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # acted on at this step's save
        x, y = batches[step % len(batches)]
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(ddp(x), y)
        loss.backward()
        opt.step()
        ctx.report({"loss": float(loss.detach())}, step=step)
        ckpt.save({"model": model, "optimizer": opt, "step": step}, step)
    return model


def fails(ctx: Any) -> None:
    raise ValueError(f"bad batch on rank {ctx.rank}")
