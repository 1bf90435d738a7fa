"""The global random number generators a training loop draws from, captured and put back.

Only libraries the process has already imported are captured: a loop that never imported
torch draws nothing from torch's generator, and capturing it would cost the import. CUDA
generators are captured only once CUDA is initialized, so a CPU-only loop on a GPU machine
does not start a CUDA context to save a checkpoint. States are plain values (tuples and
numpy arrays, torch's included), so the checkpoint of a LightGBM loop in a process that
happened to import torch still loads where torch is not installed.
"""

from __future__ import annotations

import random
import sys
import warnings
from typing import Any

from kiln.core import KilnWarning

__all__ = ["capture", "restore"]


def capture() -> dict[str, Any]:
    """The state of Python's ``random``, numpy's global generator and torch's generators."""
    states: dict[str, Any] = {"python": random.getstate()}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        states["numpy"] = numpy.random.get_state()
    torch = sys.modules.get("torch")
    if torch is not None:
        states["torch"] = torch.get_rng_state().numpy()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states["torch_cuda"] = [s.cpu().numpy() for s in torch.cuda.get_rng_state_all()]
    return states


def restore(states: dict[str, Any]) -> None:
    """Put back what :func:`capture` returned; generators it did not capture are left alone.

    Torch's states are skipped where torch is not installed: nothing there can draw from it.
    """
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in states:
        import numpy

        numpy.random.set_state(states["numpy"])
    if "torch" not in states and "torch_cuda" not in states:
        return
    try:
        import torch
    except ImportError:
        return
    if "torch" in states:
        torch.set_rng_state(torch.from_numpy(states["torch"].copy()))
    cuda = states.get("torch_cuda")
    if cuda is None:
        return
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices == len(cuda):
        torch.cuda.set_rng_state_all([torch.from_numpy(s.copy()) for s in cuda])
    else:
        warnings.warn(
            f"the checkpoint holds the random state of {len(cuda)} CUDA device(s) but this "
            f"process sees {devices}; CUDA random states were not restored, so GPU "
            "randomness will differ from the interrupted run",
            KilnWarning,
            stacklevel=3,
        )
