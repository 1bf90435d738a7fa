"""Distributed data-parallel training: one function on N workers, restarted from its
latest checkpoint when one dies.

``fit`` never sets up collectives or launches processes itself: on local processes it
hands the workers to torch's elastic launcher (the machinery behind ``torchrun``), on Ray
to Ray Train's ``TorchTrainer``. Both start the workers with ``torch.distributed``
initialized, restart the whole group when a worker dies (up to ``max_failures``), and
run the same worker code (:mod:`kiln.training._workers`): the user's function with a
:class:`TrainContext` whose checkpointer is bound to the fit's run, so a restarted group
continues from the last checkpoint rank 0 saved.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kiln.core import InvalidInput, KilnError

__all__ = ["FitFailed", "FitResult", "TrainContext", "fit", "get_context"]

BACKENDS = ("gloo", "nccl")


class FitFailed(KilnError):
    """The training group failed more often than ``max_failures`` allows."""


@dataclass(frozen=True)
class FitResult:
    """What a fit left: its run, rank 0's return value, how often the group restarted."""

    run_id: str
    value: Any
    restarts: int
    checkpoint: Any  # the latest CheckpointInfo, or None
    model_version: Any = None  # the registered ModelVersion, with register=

    @property
    def model(self) -> Any:
        return self.value


class TrainContext:
    """What the training function gets on each worker: its place in the group, the
    fit's run and config, and a checkpointer every rank restores from (rank 0 saves)."""

    def __init__(
        self,
        *,
        rank: int,
        local_rank: int,
        world_size: int,
        run_id: str,
        config: Mapping[str, Any],
        backend: str,
        attempt: int,
    ) -> None:
        self.rank = rank
        self.local_rank = local_rank
        self.world_size = world_size
        self.run_id = run_id
        self.config = dict(config)
        self.backend = backend
        self.attempt = attempt  # 0 on the first start, n after the group's n-th restart
        self._checkpointers: list[Any] = []

    def __repr__(self) -> str:
        return f"<TrainContext rank {self.rank}/{self.world_size} of run {self.run_id}>"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> Any:
        """This worker's device: its GPU under ``nccl``, else the CPU."""
        import torch

        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def checkpointer(self, **options: Any) -> Any:
        """A :class:`~kiln.training.Checkpointer` on the fit's run: rank 0 saves, every rank
        restores (so a restarted group starts from the same state everywhere)."""
        from kiln.training.checkpoints import Checkpointer

        ckpt: Any = Checkpointer(self.run_id, **options)
        if self.rank != 0:
            ckpt = _Reader(ckpt)
        self._checkpointers.append(ckpt)
        return ckpt

    def report(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Metrics of the group, logged once (by rank 0) on the fit's run."""
        if self.rank != 0:
            return
        _run_handle(self.run_id).log_metrics(dict(metrics), step=step)

    def shard(self, dataset: Any, *, shuffle: bool = False, seed: int = 0) -> Any:
        """This rank's share of a map-style dataset (torch's ``DistributedSampler``)."""
        from torch.utils.data import DistributedSampler

        return DistributedSampler(
            dataset, num_replicas=self.world_size, rank=self.rank, shuffle=shuffle, seed=seed
        )

    def close(self) -> None:
        for ckpt in self._checkpointers:
            ckpt.close()
        self._checkpointers.clear()


class _Reader:
    """A checkpointer for ranks other than 0: restores like rank 0's, saves nothing (one
    writer per run), and is due when rank 0 is, so code reads the same on every rank."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def save(self, state: Mapping[str, Any], step: int, metrics: Any = None, **_: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()


_runs: dict[str, Any] = {}
_current: list[TrainContext] = []


def _run_handle(run_id: str) -> Any:
    """A handle to log metrics on the fit's run from rank 0's process, without changing
    its status (the driver started it and ends it)."""
    from kiln.tracking import Run, default_client, runs

    run = _runs.get(run_id)
    if run is None:
        record = runs.get(run_id)
        client = default_client()
        run = Run(
            client=client,
            run_id=run_id,
            experiment=record.experiment,
            experiment_id=record.experiment_id,
            name=record.name,
            parent_id=record.parent_id,
        )
        _runs[run_id] = run
    return run


def get_context() -> TrainContext:
    """The context of the training function running in this worker."""
    if not _current:
        raise InvalidInput("no training function runs in this process (kiln.training.fit)")
    return _current[-1]


def _check(train_fn: Any, num_workers: Any, backend: Any, max_failures: Any) -> None:
    if not callable(train_fn):
        raise InvalidInput(f"train_fn must be a function; got {train_fn!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise InvalidInput(f"num_workers must be an integer >= 1; got {num_workers!r}")
    if backend not in BACKENDS:
        raise InvalidInput(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        raise InvalidInput(f"max_failures must be an integer >= 0; got {max_failures!r}")
    required = [p for p in inspect.signature(train_fn).parameters.values() if p.default is p.empty]
    params = [p for p in required if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) > 1:
        raise InvalidInput(
            f"train_fn takes one argument (the TrainContext) or none; {_name(train_fn)} "
            f"requires {len(params)}"
        )
    keywords = [p.name for p in required if p.kind is p.KEYWORD_ONLY]
    if keywords:  # the workers pass none: it would fail on every start of the group
        raise InvalidInput(
            f"train_fn takes one argument (the TrainContext) or none; {_name(train_fn)} "
            f"requires keyword argument(s) {', '.join(keywords)}: pass values through "
            "config= (ctx.config) or bind them with functools.partial"
        )


def _refuse_in_a_starting_worker() -> None:
    """A worker process starting re-runs the script that called ``fit`` (Python's
    ``spawn``); a script that calls ``fit`` outside ``if __name__ == "__main__":`` would
    start workers from its workers. Say so, rather than multiprocessing's riddle."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise InvalidInput(
            "fit was called while a worker process was starting: the script that calls "
            'fit must do so under `if __name__ == "__main__":` (its workers run the '
            "script's top level again as they start)"
        )


def _name(train_fn: Any) -> str:
    """A function's name; a ``functools.partial`` or a callable object has none of its own."""
    inner = getattr(train_fn, "func", train_fn)
    return str(getattr(inner, "__name__", type(inner).__name__))


def _check_gpus(backend: str, num_workers: int, executor: str) -> None:
    """NCCL needs a GPU per worker: refused before any worker starts, not at the first
    collective. On a cluster the GPUs are Ray's to count."""
    if backend != "nccl" or executor != "processes":
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < num_workers:
        raise InvalidInput(
            f"backend 'nccl' needs one GPU per worker: num_workers={num_workers}, "
            f"GPUs here: {count}; use backend='gloo' on CPUs"
        )


def fit(
    train_fn: Callable[..., Any],
    *,
    num_workers: int = 2,
    backend: str = "gloo",
    executor: str = "processes",
    max_failures: int = 3,
    config: Mapping[str, Any] | None = None,
    experiment: str = "training",
    run_name: str | None = None,
    run: Any = None,
    dataset: str | None = None,
    register: str | None = None,
    input_example: Any = None,
    resources_per_worker: Mapping[str, float] | None = None,
) -> FitResult:
    """Run ``train_fn(ctx)`` on ``num_workers`` workers with ``torch.distributed`` set up,
    restarting the group from its latest checkpoint when a worker dies.

    ``executor`` is ``processes`` (torch's elastic launcher, one machine) or ``ray``
    (``ray:auto``, ``ray://host:port``: Ray Train). The fit is a tracked run (``run`` to
    log into an existing one); rank 0's return value is the result, and with ``register``
    it is registered as the next version of that model with lineage to the run, to
    ``dataset`` and to the checkpoints.
    """
    from kiln.flows import settings_snapshot
    from kiln.flows.executors import parse_executor
    from kiln.tracking import Run, start_run
    from kiln.training import _workers

    _refuse_in_a_starting_worker()
    _check(train_fn, num_workers, backend, max_failures)
    kind, address = parse_executor(executor)
    if kind == "inline":
        raise InvalidInput(
            "fit runs its workers as processes: executor 'processes' or 'ray', not 'inline'"
        )
    _check_gpus(backend, num_workers, kind)
    if register is not None and input_example is None:
        raise InvalidInput("register= needs input_example= (a few rows of the model's input)")
    try:
        payload_fn = _dumps(train_fn)
    except Exception as exc:
        raise InvalidInput(
            f"train_fn cannot be sent to the workers: {type(exc).__name__}: {exc}"
        ) from None
    owned = run is None
    if run is None:
        run = start_run(experiment, name=run_name or f"fit-{_name(train_fn)}")
    elif not isinstance(run, Run):
        raise InvalidInput(f"run must be a live kiln Run; got {run!r}")
    run.log_params(
        {
            "num_workers": num_workers,
            "backend": backend,
            "executor": executor,
            "max_failures": max_failures,
            **{
                f"config.{k}": v
                for k, v in (config or {}).items()
                if isinstance(v, bool | int | float | str)
            },
        }
    )
    if dataset is not None:
        run.log_input("dataset", str(dataset))
    payload = {
        "fn": payload_fn,
        "settings": settings_snapshot(),
        "run_id": run.id,
        "config": dict(config or {}),
        "backend": backend,
    }
    try:
        if kind == "processes":
            _workers.launch_local(payload, num_workers, max_failures)
        else:
            _workers.launch_ray(
                payload, num_workers, max_failures, address, backend, resources_per_worker
            )
    except FitFailed as exc:
        if owned:
            run.end("FAILED", error=str(exc))
        raise
    except BaseException as exc:
        if owned:
            run.end("FAILED", error=f"{type(exc).__name__}: {exc}")
        raise
    try:
        value, restarts = _workers.result(run.id)
        latest = _latest_checkpoint(run.id)
        for info in _kept_checkpoints(run.id):
            run.log_input("checkpoint", info.digest, step=info.step, size=info.size)
        version = None
        if register is not None:
            from kiln.registry import models

            version = models.register(register, value, input_example=input_example, run=run)
        run.set_tags({"kiln.fit.restarts": restarts})
    except BaseException as exc:
        if owned:
            run.end("FAILED", error=f"{type(exc).__name__}: {exc}")
        raise
    if owned:
        run.end("FINISHED")
    return FitResult(run.id, value, restarts, latest, version)


def _kept_checkpoints(run_id: str) -> list[Any]:
    from kiln.training.checkpoints import Checkpointer

    ckpt = Checkpointer(run_id)
    try:
        return ckpt.checkpoints()
    except KilnError:
        return []
    finally:
        ckpt.close()


def _latest_checkpoint(run_id: str) -> Any:
    kept = _kept_checkpoints(run_id)
    return kept[-1] if kept else None


def _dumps(train_fn: Any) -> bytes:
    """The function as the workers load it (cloudpickle: by value from ``__main__`` or a
    notebook, by reference from an importable module).

    A function sent by value carries the submodules of the modules it uses whose names
    its code mentions; ``torch.distributed.config`` (matched by ``torch``, ``.distributed``
    and ``ctx.config``) is one of torch's configuration objects, a subclass of
    ``ModuleType`` that pickle cannot copy. Such a module is sent as its name and imported
    again in the worker, as cloudpickle sends a plain module.
    """
    import importlib
    import io
    import pickle
    import sys
    import types

    import cloudpickle

    class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle has no types
        def reducer_override(self, obj: Any) -> Any:
            if (
                isinstance(obj, types.ModuleType)
                and type(obj) is not types.ModuleType
                and sys.modules.get(obj.__name__) is obj
            ):
                return importlib.import_module, (obj.__name__,)
            return super().reducer_override(obj)

    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(train_fn)
    return buffer.getvalue()
