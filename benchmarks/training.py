"""Training benchmark: checkpoints of a large state, saved in the loop and in the background.

    python benchmarks/training.py [--quick] [--write [PATH]]

(1) ``Checkpointer.save`` of a 100 MB state (25 float32 tensors of 4 MB, one value
changed before each save so every save stores new bytes) against ``torch.save`` of the
same state to a new local file named by the step (the last three kept), and against the
same followed by ``fsync``, interleaved, medians of 7 rounds after one untimed round of
each. (2) The same saves with ``async_save=True``: how long ``save`` blocks the training
loop, against (1)'s synchronous save; the loop waits for each background save to finish
(untimed) before the next, as a loop saving every few hundred steps does. (3)
``Checkpointer.restore`` of that checkpoint (hash check included) against ``torch.load``
of the file (1) wrote. (4), (5): distributed data-parallel training, see ``_training_ddp.py``.
``--quick``: a 20 MB state, 3 rounds, a short DDP run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import kiln
from _common import add_write_flag, replace_section, timed, verdict
from _training_ddp import ddp_section

TENSOR_ELEMENTS = 1 << 20  # 4 MB of float32


def _state(megabytes: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {f"w{i}": torch.randn(TENSOR_ELEMENTS) for i in range(megabytes // 4)}


def _save_synced(state: dict[str, torch.Tensor], path: Path) -> None:
    """``torch.save``, then the file forced to disk: the durability Kiln's save gives."""
    with path.open("wb") as out:
        torch.save(state, out)
        out.flush()
        os.fsync(out.fileno())


def _listed(samples: list[float]) -> str:
    return ", ".join(f"{s * 1000:.0f}" for s in samples)


def checkpoint_section(tmp: Path, quick: bool) -> str:
    """Measure (1)-(3) in a Kiln home under ``tmp``; the Markdown table of the figures."""
    megabytes, rounds = (20, 6) if quick else (100, 12)
    kiln.configure(home=tmp / "ckpt-home")
    state = _state(megabytes)
    saved_mb = sum(t.nelement() * t.element_size() for t in state.values()) / 1e6
    plain = tmp / "plain"
    plain.mkdir()

    print(f"(1) saving a {saved_mb:.0f} MB state, {rounds} rounds", flush=True)
    kiln_s: list[float] = []
    torch_s: list[float] = []
    synced_s: list[float] = []
    cold_s = 0.0
    with kiln.start_run("bench", "sync") as run, kiln.training.Checkpointer(run) as ckpt:
        contenders = {
            "kiln": lambda i: ckpt.save(state, i),
            "torch": lambda i: torch.save(state, plain / f"step-{i}.pt"),
            "synced": lambda i: _save_synced(state, plain / f"synced-{i}.pt"),
        }
        # The three share the disk: a save finds the page cache as the one before left it
        # (a deferred write-back slows the next writer), so each order comes in turn.
        orders = list(itertools.permutations(contenders))
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for i in range(rounds + 1):
            for name in orders[i % len(orders)]:
                state["w0"][0] = float(i)  # new bytes each time: nothing is deduplicated
                took = timed(lambda i=i, name=name: contenders[name](i))
                if i == 0 and name == "kiln":
                    cold_s = took
                elif i > 0:
                    times[name].append(took)
            for old in (f"step-{i - 3}.pt", f"synced-{i - 3}.pt"):  # keep the last three
                (plain / old).unlink(missing_ok=True)
        kiln_s, torch_s, synced_s = times["kiln"], times["torch"], times["synced"]
        sync = statistics.median(kiln_s)
        base = statistics.median(torch_s)
        durable = statistics.median(synced_s)
        print(
            f"    Kiln {sync * 1000:.0f} ms, torch.save {base * 1000:.0f} ms, torch.save and "
            f"fsync {durable * 1000:.0f} ms",
            flush=True,
        )

        print("(3) restoring it", flush=True)
        latest = plain / f"step-{rounds}.pt"
        restore_s, load_s = [], []
        for _ in range(rounds):
            restore_s.append(timed(lambda: ckpt.restore(rng=False)))
            load_s.append(timed(lambda: torch.load(latest, weights_only=True)))
        restore, load = statistics.median(restore_s), statistics.median(load_s)
        print(f"    Kiln {restore * 1000:.0f} ms, torch.load {load * 1000:.0f} ms", flush=True)

    print("(2) saving it in the background", flush=True)
    blocked_s: list[float] = []
    stored_s: list[float] = []
    first_blocked = 0.0
    with (
        kiln.start_run("bench", "async") as run,
        kiln.training.Checkpointer(run, async_save=True) as ckpt,
    ):
        for i in range(rounds + 1):
            state["w0"][0] = float(-i)
            start = time.perf_counter()
            ckpt.save(state, i)
            blocked = time.perf_counter() - start
            ckpt.wait()
            stored = time.perf_counter() - start
            if i == 0:
                first_blocked = blocked
                continue
            blocked_s.append(blocked)
            stored_s.append(stored)
    blocked = statistics.median(blocked_s)
    share = blocked / sync
    print(
        f"    blocked {blocked * 1000:.1f} ms ({share:.1%} of a synchronous save), stored "
        f"after {statistics.median(stored_s) * 1000:.0f} ms",
        flush=True,
    )

    ratio = sync / base
    rows = [
        (
            f"(1) `Checkpointer.save` of a {saved_mb:.0f} MB state ({len(state)} float32 "
            "tensors of 4 MB), "
            "local artifact store",
            f"{sync * 1000:.0f} ms",
            f"{ratio:.2f}x `torch.save` to a new local file ({base * 1000:.0f} ms, same rounds; "
            f"runs: {_listed(kiln_s)} ms vs {_listed(torch_s)} ms); {sync / durable:.2f}x "
            f"`torch.save` then `fsync` ({durable * 1000:.0f} ms); first save "
            f"{cold_s * 1000:.0f} ms",
            "<= 1.5x",
            verdict(ratio, 1.5),
        ),
        (
            "(2) the same with `async_save=True`: time `save` blocks the loop",
            f"{blocked * 1000:.1f} ms",
            f"{share:.1%} of a synchronous save ({sync * 1000:.0f} ms); stored "
            f"{statistics.median(stored_s) * 1000:.0f} ms after `save` was called; first "
            f"save blocked {first_blocked * 1000:.0f} ms (its copy buffers allocated)",
            "< 10%",
            verdict(share, 0.10),
        ),
        (
            "(3) `Checkpointer.restore` of that checkpoint, hash verified",
            f"{restore * 1000:.0f} ms",
            f"{restore / load:.2f}x `torch.load` of the file (1) wrote ({load * 1000:.0f} ms)",
            "-",
            "-",
        ),
    ]
    return (
        "### Checkpoints\n\n"
        f"Medians of {rounds} rounds after one untimed round (the first save allocates the "
        "buffers later saves reuse; its time is shown). (1): each round changes one value "
        "of the state, so every save stores new bytes; Kiln's save encodes with `torch.save` "
        "into memory, writes the blob while hashing it, renames it into place and records it "
        "on the run in one transaction (a checkpoint's records carry no CRC32: the sha256 "
        "covers the whole), then returns; its saver thread forces the blob to disk (fsync) "
        "and the next save waits for that, so at most the latest checkpoint is not on disk "
        "yet (a power cut can cost it; restore then skips it by its hash). The baselines, "
        "interleaved with it in every order in turn (they share the disk and its page "
        "cache), are `torch.save(state, path)` (no fsync) and the same followed by `fsync`, "
        "each to a new file named by the step, the files "
        "beyond the last three deleted, as a checkpoint callback keeping three does (a new "
        "file each time is also what makes a save safe against a crash half-way: "
        "overwriting one file is cheaper on this machine's page cache but loses the "
        "previous checkpoint if interrupted). (2): the loop waits (untimed) for each background "
        "save to finish before the next. (3): Kiln reads the blob, checks its sha256 and "
        "decodes it; the baseline loads the file (1) wrote.\n\n"
        "| measurement | median | derived | target | met |\n|---|---|---|---|---|\n"
        + "".join(f"| {' | '.join(r)} |\n" for r in rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 20 MB state, 3 rounds")
    add_write_flag(parser, "training")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        checkpoints = checkpoint_section(tmp, args.quick)
        ddp = ddp_section(tmp, args.quick)
    text = (
        "## Training (`benchmarks/training.py`)\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after. Command: "
        f"`python benchmarks/training.py{' --quick' if args.quick else ''} --write`.\n\n"
        + checkpoints
        + "\n"
        + ddp
    )
    print(text)
    if args.write:
        replace_section(args.write, "training", text)


if __name__ == "__main__":
    main()
