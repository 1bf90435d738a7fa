"""The workers of a fit, and the two engines that start and restart them.

Every worker runs :func:`run_worker`, whichever engine started it: open the driver's
stores, join the process group, call the training function with its context; rank 0
counts the group's starts on the run and stores the function's return value. The
engines differ only in how they start a group and what they do when a worker dies:
torch's elastic agent (local processes) and Ray Train both restart every worker of the
group, up to the failures allowed, and report the failure that ended it.
"""

from __future__ import annotations

import os
import socket
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["launch_local", "launch_ray", "result", "run_worker"]

STARTS_TAG = "kiln.fit.starts"
VALUE_TAG = "kiln.fit.value"


def run_worker(payload: dict[str, Any], rank: int, local_rank: int, world_size: int) -> None:
    import cloudpickle

    from kiln.core import configure
    from kiln.tracking import runs
    from kiln.training import distributed as api

    configure(**payload["settings"])
    run_id = payload["run_id"]
    attempt = 0
    if rank == 0:  # one writer: the group's starts, so a restart knows it is one
        attempt = int(runs.get(run_id).tags.get(STARTS_TAG, "0"))
        runs.set_tags(run_id, {STARTS_TAG: attempt + 1})
    attempt = _from_rank_0(attempt, payload["backend"], local_rank)
    ctx = api.TrainContext(
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        run_id=run_id,
        config=payload["config"],
        backend=payload["backend"],
        attempt=attempt,
    )
    fn = cloudpickle.loads(payload["fn"])
    api._current.append(ctx)
    try:
        wants_ctx = _takes_context(fn)
        value = fn(ctx) if wants_ctx else fn()
    finally:
        api._current.pop()
        ctx.close()
    if rank == 0:
        from kiln.tracking import default_client

        info = default_client().blobs.put_bytes(cloudpickle.dumps(value))
        runs.set_tags(run_id, {VALUE_TAG: info.digest})
        _flush(run_id)


def _from_rank_0(value: int, backend: str, local_rank: int) -> int:
    """Rank 0's value on every rank (the group is up: one broadcast)."""
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    box = [value]
    dist.broadcast_object_list(box, src=0, device=device)
    return int(box[0])


def _takes_context(fn: Any) -> bool:
    import inspect

    try:
        return bool(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return True


def _flush(run_id: str) -> None:
    from kiln.training import distributed as api

    run = api._runs.pop(run_id, None)
    if run is not None:
        run.flush()


def result(run_id: str) -> tuple[Any, int]:
    """Rank 0's return value and how often the group restarted."""
    import pickle

    from kiln.core import IntegrityError
    from kiln.tracking import default_client, runs

    tags = runs.get(run_id).tags
    digest = tags.get(VALUE_TAG)
    if digest is None:
        raise IntegrityError(f"fit run {run_id} ended without rank 0's result")
    value = pickle.loads(default_client().blobs.get_bytes(digest))
    return value, max(0, int(tags.get(STARTS_TAG, "1")) - 1)


# -- local processes: torch's elastic launcher ------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_entry(payload: dict[str, Any]) -> None:
    """A worker started by torch's elastic agent; a failure is recorded for the agent's
    report (the worker's exception and traceback, not only its exit code)."""
    from torch.distributed.elastic.multiprocessing.errors import record

    record(_local_worker)(payload)


def _local_worker(payload: dict[str, Any]) -> None:
    """The process group from the environment the agent set (rank, world, store)."""
    import torch.distributed as dist

    dist.init_process_group(backend=payload["backend"])
    try:
        run_worker(
            payload,
            rank=dist.get_rank(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            world_size=dist.get_world_size(),
        )
    finally:
        dist.destroy_process_group()


def launch_local(payload: dict[str, Any], num_workers: int, max_failures: int) -> None:
    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from kiln.training.distributed import FitFailed

    # One machine: the group talks over loopback (gloo would otherwise pick the address
    # the host name resolves to, which a sandbox or a laptop off its network may refuse).
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    # A fresh store for each start of the group: on the rendezvous' shared store, the
    # addresses the killed group published are still there, and a restarted worker that
    # reads one fails to connect (and costs another restart).
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    with tempfile.TemporaryDirectory(prefix="kiln-fit-") as logs:
        config = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=num_workers,
            run_id=payload["run_id"],
            rdzv_backend="c10d",
            rdzv_endpoint=f"127.0.0.1:{_free_port()}",
            max_restarts=max_failures,
            monitor_interval=0.1,
            start_method="spawn",
            logs_specs=DefaultLogsSpecs(log_dir=logs),
        )
        try:
            elastic_launch(config, local_entry)(payload)
        except ChildFailedError as exc:
            raise FitFailed(_describe(exc, max_failures)) from None


# What torch's agent reports for a worker that left no error record: one that died while
# starting, before the function that records errors ran.
_NO_ERROR_FILE = "To enable traceback see"


def _describe(exc: Any, max_failures: int) -> str:
    """The failure that came first (the others are usually its echo: peers losing their
    connection to the rank that failed), with its rank and error."""
    rank, failure = exc.get_first_failure()
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", message)
    text = str(message).strip().splitlines()[0] if str(message).strip() else ""
    if text.startswith(_NO_ERROR_FILE):  # it died before it could record what happened
        text = (
            f"exit code {failure.exitcode} before it ran train_fn (its output says why; "
            'a script must call fit under `if __name__ == "__main__":`)'
        )
    if failure.signal_name() not in ("", "<N/A>"):
        text = f"killed by {failure.signal_name()}"
    text = text or f"exit code {failure.exitcode}"
    return (
        f"training failed and was restarted {max_failures} time(s), the most allowed "
        f"(max_failures={max_failures}); first failure of the last attempt: rank {rank}: {text}"
    )


# -- Ray Train ----------------------------------------------------------------------------

# How often Ray Train's controller asks whether its workers live, which bounds how long a
# dead worker goes unnoticed: its default (2 s) is most of a restart's wait on one
# machine. Ray Train passes the variable on to its controller; a value set by the user wins.
_RAY_HEALTH_CHECK = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
_RAY_HEALTH_CHECK_S = "0.5"


@contextmanager
def _environ_default(name: str, value: str) -> Iterator[None]:
    """``name`` set to ``value`` for the block unless it is set already."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


def ray_entry(config: dict[str, Any]) -> None:
    """A worker started by Ray Train: the process group is set up already."""
    import ray.train

    context = ray.train.get_context()
    run_worker(
        config["payload"],
        rank=context.get_world_rank(),
        local_rank=context.get_local_rank(),
        world_size=context.get_world_size(),
    )


def launch_ray(
    payload: dict[str, Any],
    num_workers: int,
    max_failures: int,
    address: str | None,
    backend: str,
    resources_per_worker: Any,
) -> None:
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from kiln.training.distributed import FitFailed

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, configure_logging=False)
    with (
        tempfile.TemporaryDirectory(prefix="kiln-fit-ray-") as storage,
        warnings.catch_warnings(),
        _environ_default(_RAY_HEALTH_CHECK, _RAY_HEALTH_CHECK_S),
    ):
        # Ray Train's own modules warn about options they deprecate (its data layer's
        # shuffle setting) whatever the caller passes: nothing a user of fit can act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        trainer = TorchTrainer(
            ray_entry,
            train_loop_config={"payload": payload},
            torch_config=TorchConfig(backend=backend),
            scaling_config=ScalingConfig(
                num_workers=num_workers,
                use_gpu=backend == "nccl",
                resources_per_worker=dict(resources_per_worker or {"CPU": 1}),
            ),
            run_config=RunConfig(
                name=f"kiln-fit-{payload['run_id']}",
                storage_path=storage,
                failure_config=FailureConfig(max_failures=max_failures),
            ),
        )
        try:
            trainer.fit()
        except Exception as exc:  # Ray Train's TrainingFailedError and kin
            reason = str(exc).strip().splitlines()
            raise FitFailed(
                f"training failed and was restarted {max_failures} time(s), the most "
                f"allowed (max_failures={max_failures}); last failure: "
                + " ".join(reason[:3])[:1500]
            ) from None
