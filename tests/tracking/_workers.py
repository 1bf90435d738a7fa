"""Child-process bodies for ``test_reliability.py`` (run as a script, never imported by pytest).

Usage: ``python _workers.py MODE ARGS...``. Every mode reads its store from the usual
``KILN_*`` environment (``KILN_DB_URL``, ``KILN_ARTIFACT_URI``, ``KILN_HEARTBEAT_TIMEOUT_S``,
``KILN_METRIC_FLUSH_INTERVAL_S``...) through ``kiln.start_run`` and the default client, and
talks to the parent with one line per event on stdout, flushed at once.

Values are chosen to be exactly representable as float64, so the parent can compare them
with ``==`` after a round trip through SQLite or PostgreSQL.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def say(*parts: object) -> None:
    print(*parts, flush=True)


def metric_value(worker: int, step: int) -> float:
    return worker * 1_000_000 + step * 0.25


def wait_for(path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {path}")
        time.sleep(0.002)


def concurrent(worker: int, n: int, go_file: str) -> None:
    """Wait for the go file, then log ``n`` values of ``loss`` into a run of one's own.

    Odd workers let kiln number the steps; even ones pass them and also write params and
    tags while the others are logging.
    """
    import kiln

    say("READY")
    wait_for(Path(go_file))
    with kiln.start_run("concurrency", name=f"worker-{worker}", tags={"worker": worker}) as run:
        say("RUN", run.id)
        run.log_params({"worker": worker, "n": n})
        for step in range(n):
            if worker % 2:
                run.log_metric("loss", metric_value(worker, step))
            else:
                run.log_metric("loss", metric_value(worker, step), step=step)
            if step % 100 == 99:
                time.sleep(0.003)  # spread the work so the processes' flushes interleave
            if worker % 2 == 0 and step % 500 == 499:
                run.set_tag("progress", step)
                run.log_params({f"checkpoint_{step}": step})
    say("DONE")


def flush_loop(every: int) -> None:
    """Log ``loss`` forever; after each explicit flush print the last flushed step."""
    import kiln

    run = kiln.start_run("killed", name="victim")
    say("RUN", run.id)
    step = 0
    while True:
        run.log_metric("loss", metric_value(0, step), step=step)
        if step % every == every - 1:
            run.flush()
            say("FLUSHED", step)
            time.sleep(0.001)
        step += 1


def artifact_loop(size: int, work_dir: str) -> None:
    """Log a ``size``-byte file again and again, with different bytes each time.

    Before each upload it prints ``UPLOADING i`` (the source file is complete by then) and
    after it ``LOGGED i DIGEST``; the parent kills it somewhere in between.
    """
    import kiln

    base = bytearray(os.urandom(size))
    src = Path(work_dir) / "model.bin"
    run = kiln.start_run("artifacts", name="uploader")
    say("RUN", run.id)
    i = 0
    while True:
        base[:16] = os.urandom(16)  # new content, new digest, same size
        with src.open("wb") as out:
            out.write(base)
        say("UPLOADING", i)
        record = run.log_artifact(src, artifact_path=f"v{i}")
        say("LOGGED", i, record.digest)
        i += 1


def create_experiments(names: str, go_file: str) -> None:
    """Wait for the go file, then create the same experiments as every other worker."""
    import kiln

    kiln.experiments.list()  # the schema exists before the race starts
    say("READY")
    wait_for(Path(go_file))
    for name in names.split(","):
        say("CREATED", kiln.experiments.create(name).id)
    with kiln.start_run(names.split(",")[-1]) as run:
        say("RUN", run.id)
    say("DONE")


def out_of_range_values() -> None:
    """Log a step and timestamps no database can hold, then a normal value; end the run."""
    import kiln
    from kiln.errors import InvalidInput

    run = kiln.start_run("poison", name="poison")
    say("RUN", run.id)
    bad: list[tuple[str, dict[str, int | float]]] = [
        ("step", {"step": 2**70}),
        ("timestamp", {"timestamp": 2**70}),
        ("negative-timestamp", {"timestamp": -(2**70)}),
        ("infinite-timestamp", {"timestamp": float("inf")}),
    ]
    for label, kwargs in bad:
        try:
            run.log_metric("huge", 1.0, **kwargs)  # type: ignore[arg-type]
            say("ACCEPTED", label)
        except InvalidInput:
            say("REJECTED", label)
        except Exception as exc:
            say("RAISED", label, type(exc).__name__)
    run.log_metric("ok", 2.0, step=1)
    run.end()
    say("DONE")


def main(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode == "concurrent":
        concurrent(int(args[0]), int(args[1]), args[2])
    elif mode == "flush_loop":
        flush_loop(int(args[0]))
    elif mode == "artifact_loop":
        artifact_loop(int(args[0]), args[1])
    elif mode == "create_experiments":
        create_experiments(args[0], args[1])
    elif mode == "out_of_range_values":
        out_of_range_values()
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
