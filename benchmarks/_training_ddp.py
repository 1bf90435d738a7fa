"""Distributed data-parallel figures for ``benchmarks/training.py``.

(4) Samples per second of a small MLP trained with ``kiln.training.fit`` on 2 workers
(gloo) against 1 worker, each worker one thread, the same per-worker batch and steps:
timed inside rank 0 from a barrier before the first step to the last step, so process
start-up is not counted (it is reported). On local processes and on a local Ray instance.
(5) Recovery from a killed worker: rank 1 kills itself (SIGKILL) at step K; the time from
the kill to the first step the restarted group completes, and how many steps it replayed.

Run alone: ``python benchmarks/_training_ddp.py [--quick]`` prints the section.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(256, 1024),
            torch.nn.ReLU(),
            torch.nn.Linear(1024, 1024),
            torch.nn.ReLU(),
            torch.nn.Linear(1024, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def train(ctx: Any) -> dict[str, float]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Net()
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    batch, steps = int(ctx.config["batch"]), int(ctx.config["steps"])
    g = torch.Generator().manual_seed(ctx.rank)
    x, y = torch.randn(batch, 256, generator=g), torch.randn(batch, 1, generator=g)
    ckpt = ctx.checkpointer(every=int(ctx.config.get("every", 10**9)), keep_last=1)
    start = ckpt.resume(model=model, optimizer=opt)  # 0, or the step after the latest
    kill_at = ctx.config.get("kill_at")
    marks = Path(str(ctx.config.get("marks", "")))
    dist.barrier()
    began = time.perf_counter()
    for step in range(start, steps):
        if kill_at is not None and step == kill_at and ctx.rank == 1 and ctx.attempt == 0:
            (marks / "killed").write_text(str(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        opt.zero_grad()
        torch.nn.functional.mse_loss(ddp(x), y).backward()
        opt.step()
        if ctx.rank == 0 and ctx.attempt > 0 and step == start:
            (marks / "recovered").write_text(json.dumps([time.time(), start]))
        ckpt.save({"model": model, "optimizer": opt, "step": step}, step)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "samples": float(batch * ctx.world_size * (steps - start))}


def _fit(workers: int, executor: str, config: dict[str, Any]) -> tuple[dict[str, Any], float]:
    import kiln

    started = time.perf_counter()
    result = kiln.training.fit(train, num_workers=workers, executor=executor, config=config)
    return dict(result.value), time.perf_counter() - started


def ddp_section(tmp: Path, quick: bool) -> str:
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    os.environ["KILN_HOME"] = str(tmp / "ddp-home")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import kiln

    kiln.core.reset_settings()
    steps, batch, rounds = (10, 512, 1) if quick else (20, 2048, 3)
    config = {"steps": steps, "batch": batch}
    rows = []
    for executor in ("processes", "ray"):
        if executor == "ray":
            import ray

            ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
        rate: dict[int, list[float]] = {1: [], 2: []}
        whole: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(rounds):
            for workers in (1, 2):
                value, total = _fit(workers, executor, config)
                rate[workers].append(value["samples"] / value["seconds"])
                whole[workers].append(total)
        one, two = statistics.median(rate[1]), statistics.median(rate[2])
        rows.append(
            (
                f"(4{'b' if executor == 'ray' else ''}) DDP samples/s, 2 workers vs 1 "
                f"(gloo, 1 thread each), {executor.replace('processes', 'local processes')}",
                f"{two:,.0f} samples/s",
                f"{two / one:.2f}x 1 worker ({one:,.0f} samples/s); whole fit call "
                f"{statistics.median(whole[2]):.1f} s vs {statistics.median(whole[1]):.1f} s "
                "(process start-up included)",
                ">= 1.5x",
                "yes" if two / one >= 1.5 else "**no**",
            )
        )
        marks = tmp / f"marks-{executor}"
        marks.mkdir()
        kill_config = {**config, "every": 5, "kill_at": steps // 2 + 2, "marks": str(marks)}
        _fit(2, executor, kill_config)
        killed = float((marks / "killed").read_text())
        recovered_at, resumed_from = json.loads((marks / "recovered").read_text())
        replayed = kill_config["kill_at"] - int(resumed_from)
        recovery = recovered_at - killed
        rows.append(
            (
                f"(5{'b' if executor == 'ray' else ''}) recovery from a worker killed at step "
                f"{kill_config['kill_at']} (checkpoint every 5 steps), {executor}",
                f"{recovery:.1f} s",
                f"from the kill to the first step of the restarted group; it resumed at step "
                f"{resumed_from} ({replayed} step(s) replayed)",
                "< 10 s + replayed steps",
                "yes" if recovery < 10 else "**no**",
            )
        )
        if executor == "ray":
            import ray

            ray.shutdown()
    return (
        "### Distributed data-parallel training\n\n"
        f"A {sum(p.numel() for p in Net().parameters()):,}-parameter MLP, batch {batch} per "
        f"worker, {steps} steps, medians of {rounds} round(s), 1 and 2 workers alternating; "
        "samples/s timed inside rank 0 from a barrier before the first step to the end of "
        "the last (the whole call, process start-up included, beside it). Each worker runs "
        "one thread, so 2 workers use both cores where 1 uses one: the figure is the "
        "data-parallel speed-up at equal work per worker. (5): rank 1 SIGKILLs itself; the "
        "engine restarts both workers, which restore the latest checkpoint.\n\n"
        "| measurement | median | derived | target | met |\n|---|---|---|---|---|\n"
        + "".join(f"| {' | '.join(r)} |\n" for r in rows)
    )


if __name__ == "__main__":
    # the workers import the training function by module name, not from __main__
    sys.path.insert(0, str(HERE))
    import _training_ddp

    with tempfile.TemporaryDirectory() as name:
        print(_training_ddp.ddp_section(Path(name), "--quick" in sys.argv))
