"""PyTorch modules, stored as a state dict plus the class that rebuilds them, or TorchScript.

A pickled ``nn.Module`` runs arbitrary code when loaded and breaks when its source moves,
so the default stores only the weights (``torch.save`` of the ``state_dict``, read back
with ``weights_only=True``) next to an importable ``module:qualname`` reference and the
JSON constructor arguments. Registration rebuilds the class from that reference to prove
the package can load elsewhere. A ``ScriptModule`` (or ``flavor_options={"torchscript":
True}``) is stored as TorchScript, which needs no Python class at all.

Everything loads on the CPU, so a model trained on a GPU serves on machines without one.
"""

from __future__ import annotations

import importlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kiln.core import InvalidInput
from kiln.registry.flavors._base import ModelFiles, import_optional, instance_from
from kiln.registry.signature import Batch

__all__ = ["FLAVOR"]

_STATE_FILE = "state_dict.pt"
_SCRIPT_FILE = "model.torchscript.pt"
_METHODS = ("predict",)
_HINT = (
    "pass the constructor arguments as flavor_options={'init_kwargs': {...}} (JSON values), "
    "define the class in an importable module (not __main__ or inside a function), "
    "or register a TorchScript model (torch.jit.script(model), or "
    "flavor_options={'torchscript': True})"
)


def _resolve_class(reference: str, torch: Any) -> Any:
    module_name, _, qualname = reference.partition(":")
    if not module_name or not qualname or "<locals>" in qualname:
        raise InvalidInput(f"the pytorch model's class {reference!r} is not importable")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(
            f"the pytorch model's class {reference!r} cannot be imported here ({exc}); "
            f"install or put its module on PYTHONPATH"
        ) from None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
        raise InvalidInput(
            f"the pytorch model's class {reference!r} does not name a torch.nn.Module subclass"
        )
    return obj


def _construct(cls: Any, init_kwargs: Mapping[str, Any], reference: str) -> Any:
    try:
        return cls(**init_kwargs)
    except Exception as exc:
        raise InvalidInput(
            f"cannot rebuild the pytorch model as {reference}(**{dict(init_kwargs)!r}): "
            f"{type(exc).__name__}: {exc}; {_HINT}"
        ) from None


def _shapes(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}


class _Predictor:
    def __init__(self, torch: Any, module: Any) -> None:
        self._torch = torch
        module.eval()
        self._module = module
        # Inputs follow the weights' precision, so a float64 example feeds a float32 model.
        self._dtype = next(
            (p.dtype for p in module.parameters() if p.dtype.is_floating_point), torch.float32
        )

    def predict(self, batch: Batch) -> np.ndarray:
        torch = self._torch
        arr = np.asarray(batch.to_numpy())
        if arr.dtype.kind == "O":
            raise InvalidInput("the pytorch model takes numeric input; got non-numeric columns")
        # torch.from_numpy shares memory and warns on read-only arrays (Arrow, pandas).
        tensor = torch.from_numpy(np.require(arr, requirements=["C", "W"]))
        if tensor.is_floating_point():
            tensor = tensor.to(self._dtype)
        with torch.inference_mode():
            out = self._module(tensor)
        if isinstance(out, tuple | list):
            if not out:
                raise InvalidInput("the pytorch model returned an empty tuple")
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise InvalidInput(
                f"the pytorch model returned a {type(out).__name__}; it must return a tensor "
                "(or a tuple whose first element is one)"
            )
        return np.asarray(out.detach().cpu().numpy())


class PyTorchFlavor:
    name = "pytorch"
    packages = ("torch", "numpy")

    def matches(self, model: object) -> bool:
        return instance_from(model, "torch.nn", "Module")

    def save(self, model: Any, dst: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        method = str(options.get("method") or "predict")
        if method not in _METHODS:
            raise InvalidInput(
                f"method {method!r} is not available for a PyTorch model; it predicts with "
                "its forward call (method='predict')"
            )
        dst.mkdir(parents=True, exist_ok=True)
        if isinstance(model, torch.jit.ScriptModule) or options.get("torchscript"):
            return self._save_script(torch, model, dst)
        init_kwargs = options.get("init_kwargs") or {}
        if not isinstance(init_kwargs, Mapping):
            raise InvalidInput(f"flavor_options init_kwargs must be a mapping; got {init_kwargs!r}")
        try:
            init_kwargs = json.loads(json.dumps(dict(init_kwargs), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"flavor_options init_kwargs must hold JSON values (numbers, strings, lists, "
                f"dicts); {exc}"
            ) from None
        cls = type(model)
        reference = f"{cls.__module__}:{cls.__qualname__}"
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
            raise InvalidInput(
                f"the pytorch model's class {reference} cannot be imported by another "
                f"process; {_HINT}"
            )
        if _resolve_class(reference, torch) is not cls:
            raise InvalidInput(
                f"{reference} does not resolve to the model's class when imported; {_HINT}"
            )
        state = model.state_dict()
        rebuilt = _shapes(_construct(cls, init_kwargs, reference).state_dict())
        if rebuilt != _shapes(state):
            raise InvalidInput(
                f"{reference}(**{init_kwargs!r}) builds a module whose parameters differ from "
                f"the model's (names or shapes); {_HINT}"
            )
        buf = io.BytesIO()
        torch.save(state, buf)
        (dst / _STATE_FILE).write_bytes(buf.getvalue())
        return {
            "format": "state_dict",
            "file": _STATE_FILE,
            "class": reference,
            "init_kwargs": init_kwargs,
            "method": method,
        }

    def _save_script(self, torch: Any, model: Any, dst: Path) -> dict[str, Any]:
        if not isinstance(model, torch.jit.ScriptModule):
            try:
                model = torch.jit.script(model)
            except Exception as exc:
                raise InvalidInput(
                    f"cannot compile the {type(model).__name__} to TorchScript "
                    f"({type(exc).__name__}: {str(exc).strip().splitlines()[0]}); make its "
                    "forward scriptable, pass torch.jit.trace(model, example) instead, or "
                    "register it as a state dict with flavor_options={'init_kwargs': {...}}"
                ) from None
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        (dst / _SCRIPT_FILE).write_bytes(buf.getvalue())
        return {"format": "torchscript", "file": _SCRIPT_FILE, "method": "predict"}

    def load(self, files: ModelFiles, config: Mapping[str, Any]) -> _Predictor:
        torch = import_optional("torch", self.name, "torch")
        fmt = str(config.get("format", "state_dict"))
        if fmt == "torchscript":
            data = files.read(str(config.get("file", _SCRIPT_FILE)))
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
            return _Predictor(torch, module)
        if fmt != "state_dict":
            raise InvalidInput(f"unknown pytorch model format {fmt!r} in the model's config")
        reference = str(config.get("class", ""))
        cls = _resolve_class(reference, torch)
        module = _construct(cls, dict(config.get("init_kwargs") or {}), reference)
        data = files.read(str(config.get("file", _STATE_FILE)))
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise InvalidInput(
                f"the stored weights do not fit {reference}: {str(exc).splitlines()[0]}"
            ) from None
        return _Predictor(torch, module)


FLAVOR = PyTorchFlavor()
