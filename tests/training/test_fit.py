"""How ``fit`` takes a training function: a function from a script or a notebook travels
to the workers by value, whatever torch modules its code names; a partial is named by the
function it wraps."""

from __future__ import annotations

import functools
import pickle
import textwrap
import types
from typing import Any

import pytest

import kiln
from kiln.errors import InvalidInput, NotFound
from kiln.training.distributed import TrainContext, _dumps

SCRIPT = textwrap.dedent(
    """
    import torch


    def train(ctx):
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
        return torch.full((2,), float(ctx.config["lr"]))
    """
)


def _script_function() -> Any:
    """``train`` as a script run with ``python train.py`` defines it: in a module no
    worker can import by name, with torch imported at the top."""
    module = types.ModuleType("__main__")
    exec(compile(SCRIPT, "train.py", "exec"), module.__dict__)
    return module.__dict__["train"]


def test_a_script_function_naming_torch_distributed_and_ctx_config_is_sent_by_value() -> None:
    # by value, cloudpickle also sends torch's submodules whose names the code mentions
    # (here torch.distributed.config, one of torch's configuration objects)
    loaded = pickle.loads(_dumps(_script_function()))
    ctx = TrainContext(
        rank=0,
        local_rank=0,
        world_size=1,
        run_id="r",
        config={"lr": 0.5},
        backend="gloo",
        attempt=0,
    )
    assert loaded(ctx).tolist() == [0.5, 0.5]


def _three(ctx: Any, lr: float, steps: int) -> None:
    return None


def _keyword(ctx: Any, *, lr: float) -> None:
    return None


def test_arguments_the_workers_cannot_pass_are_refused_naming_the_function() -> None:
    with pytest.raises(InvalidInput, match=r"train_fn takes one argument .* _three requires 2"):
        kiln.training.fit(functools.partial(_three, steps=3))  # a partial: its function's name
    with pytest.raises(InvalidInput, match=r"_keyword requires keyword argument.* lr: pass"):
        kiln.training.fit(_keyword)
    with pytest.raises(NotFound, match="no experiment named 'training'"):
        kiln.runs.search("training")  # refused before the fit's run was started


def test_a_script_calling_fit_outside_a_main_guard_is_told_why_its_workers_die(
    tmp_path: Any,
) -> None:
    import os
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(
        "import kiln\n\n\ndef train(ctx):\n    return 1\n\n\n"
        "kiln.training.fit(train, num_workers=1, max_failures=0)\n"
    )
    env = {**os.environ, "KILN_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    # the worker says what is wrong, the driver's failure points at it
    assert "fit was called while a worker process was starting" in done.stderr
    assert 'must do so under `if __name__ == "__main__":`' in done.stderr
    assert "rank 0: exit code 1 before it ran train_fn" in done.stderr
