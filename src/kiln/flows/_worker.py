"""One task, wherever it runs: load its inputs, call the step, store its output.

The same :func:`run_task` runs inline and in a local worker process (and is what an
executor on a cluster runs), so a step behaves alike on every executor. The task is a
tracked run, a child of the flow run and active while the step runs: what the step logs
(``kiln.active_run()``), and a model it registers, land on it. Its stdout and stderr are
captured (and still shown) and kept as the run's artifacts ``stdout.txt`` and
``stderr.txt``, beside its stored output (``output.parquet``, ``output.npy``...).
"""

from __future__ import annotations

import io
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import redirect_stderr, redirect_stdout, suppress
from dataclasses import dataclass
from typing import Any, TextIO

from kiln.flows._values import ValueRef, load, store_value

__all__ = ["LazySequence", "TaskResult", "TaskSpec", "run_task"]

# An argument as the task receives it:
#   ("const", value)              a value written in the flow
#   ("ref", ref_json, path)       a step's output (or a part of it)
#   ("item", ref_json, path, i)   item i of a step's output (a mapped task's share)
#   ("seq", [ref_json, ...])      the outputs of a mapped step, loaded on demand
Arg = tuple[Any, ...]


@dataclass
class TaskSpec:
    run_id: str
    task: str
    step: str
    fn: bytes  # the step's function, cloudpickled (by reference when importable)
    args: dict[str, Arg]
    settings: dict[str, Any]  # the flow process's Kiln settings, so every worker agrees
    experiment: str
    attempt: int = 1
    # what one task needs ({"cpus", "gpus", "memory"}), for an executor that places tasks
    resources: dict[str, float] | None = None
    # the function itself, for an executor in this process (no pickling: the step's
    # module globals are the caller's, and a debugger stops in the same code)
    function: Any = None
    # the task run's tags, for work other than a flow's (a tuning trial); None: a flow
    # task's own (its flow run, step and attempt)
    tags: dict[str, Any] | None = None


@dataclass
class TaskResult:
    ok: bool
    output: str | None = None  # ValueRef JSON
    child_run_id: str | None = None
    error: str | None = None
    traceback: str | None = None
    started: float = 0.0
    ended: float = 0.0


class LazySequence(Sequence[Any]):
    """The outputs of a mapped step: items are loaded when read, one at a time, and a
    loaded item is not kept (a fan-in over many large items never holds them all)."""

    def __init__(self, refs: Sequence[str], blobs: Any) -> None:
        self._refs = [ValueRef.from_json(r) for r in refs]
        self._blobs = blobs

    def __len__(self) -> int:
        return len(self._refs)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [load(ref, self._blobs) for ref in self._refs[index]]
        return load(self._refs[index], self._blobs)

    def __iter__(self) -> Iterator[Any]:
        for ref in self._refs:
            yield load(ref, self._blobs)

    def __repr__(self) -> str:
        return f"<LazySequence of {len(self._refs)} step outputs>"


class _Tee(io.TextIOBase):
    """Writes to a buffer and to the stream it replaces."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.buffer_ = io.StringIO()

    def write(self, text: str) -> int:
        self.buffer_.write(text)
        with suppress(OSError, ValueError):
            self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        with suppress(OSError, ValueError):
            self.stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())


def walk(value: Any, path: Sequence[int | str]) -> Any:
    for part in path:
        value = (
            value[part]
            if isinstance(part, int) or isinstance(value, dict)
            else (getattr(value, part))
        )
    return value


def resolve(arg: Arg, blobs: Any) -> Any:
    kind = arg[0]
    if kind == "const":
        return arg[1]
    if kind == "ref":
        return walk(load(ValueRef.from_json(arg[1]), blobs), arg[2])
    if kind == "item":
        return walk(load(ValueRef.from_json(arg[1]), blobs), arg[2])[arg[3]]
    if kind == "seq":
        return LazySequence(arg[1], blobs)
    raise ValueError(f"unknown task argument kind {kind!r}")


_configured: dict[str, Any] | None = None


def _configure(settings: dict[str, Any]) -> None:
    global _configured
    if _configured == settings:
        return
    from kiln.core import configure

    configure(**settings)
    _configured = dict(settings)


def _plain_params(args: dict[str, Arg]) -> dict[str, Any]:
    return {
        name: arg[1]
        for name, arg in args.items()
        if arg[0] == "const" and isinstance(arg[1], bool | int | float | str)
    }


def run_task(spec: TaskSpec) -> TaskResult:
    """Run one task to its end; a failure is returned (with its traceback), never raised."""
    import cloudpickle

    from kiln.tracking import RunStatus, default_client, start_run

    started = time.time()
    _configure(spec.settings)
    client = default_client()
    try:
        run = start_run(
            spec.experiment,
            name=spec.task,
            parent=spec.run_id,
            tags=spec.tags
            if spec.tags is not None
            else {
                "kiln.flow_run": spec.run_id,
                "kiln.step": spec.step,
                "kiln.attempt": spec.attempt,
            },
            client=client,
        )
    except Exception as exc:
        return TaskResult(
            False,
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            started=started,
            ended=time.time(),
        )
    out, err = _Tee(sys.stdout), _Tee(sys.stderr)
    result: TaskResult
    output: ValueRef | None = None
    try:
        params = _plain_params(spec.args)
        if params:
            run.log_params(params)
        fn = spec.function if spec.function is not None else cloudpickle.loads(spec.fn)
        with redirect_stdout(out), redirect_stderr(err), run:
            kwargs = {name: resolve(arg, client.blobs) for name, arg in spec.args.items()}
            value = fn(**kwargs)
        ref = store_value(value, client.blobs)
        output = ref
        result = TaskResult(True, ref.to_json(), run.id, started=started, ended=time.time())
    except BaseException as exc:  # the step's failure is the task's result
        if isinstance(exc, KeyboardInterrupt | SystemExit) and os.getpid() == _main_pid:
            raise
        run.end(RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        result = TaskResult(
            False,
            child_run_id=run.id,
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            started=started,
            ended=time.time(),
        )
    _keep_output(client, run.id, out.buffer_.getvalue(), err.buffer_.getvalue(), output)
    return result


_main_pid = os.getpid()


# a stored output as an artifact of its task's run, by kind
_OUTPUT_NAMES = {
    "json": "output.json",
    "npy": "output.npy",
    "parquet": "output.parquet",
    "model": "output.model.zip",
    "pickle": "output.pkl",
}


def _keep_output(
    client: Any, run_id: str, stdout: str, stderr: str, output: ValueRef | None
) -> None:
    """What the task printed, and its output, as artifacts of its run (after it ended:
    still allowed). The output is its blob already stored, not a copy; a small JSON value
    kept inline in the metadata store has no blob, and no artifact."""
    from kiln.tracking import ArtifactRecord, record_artifacts

    records = []
    try:
        for text, name in ((stdout, "stdout.txt"), (stderr, "stderr.txt")):
            if text:
                data = text.encode("utf-8", "replace")
                info = client.blobs.put_bytes(data)
                records.append(ArtifactRecord(path=name, size=len(data), digest=info.digest))
        if output is not None and not output.is_inline:
            name = _OUTPUT_NAMES.get(output.kind, f"output.{output.kind}")
            records.append(ArtifactRecord(path=name, size=output.size, digest=output.digest))
        if records:
            with client.meta.write() as conn:
                record_artifacts(conn, run_id, records)
    except Exception as exc:  # losing a log never fails a task that succeeded
        print(f"kiln: could not keep the output of run {run_id}: {exc}", file=sys.__stderr__)
