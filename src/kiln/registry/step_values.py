"""Models returned by flow steps, stored in their registry flavor's format.

A step that returns a model has it stored the way the registry stores a version's files
(LightGBM's text model, XGBoost's JSON, an ONNX graph, a TorchScript archive, joblib for
scikit-learn), rather than as a pickle of the Python object: the stored bytes are the
library's own format, readable without the code that trained it. ``kiln.flows`` finds
this module by name (it cannot import the registry, a package of its own layer) and asks
it first for any value from a model library.

Only models whose stored form reads back as the very object the step returned are taken:
a downstream step gets what the upstream step returned, never a look-alike. A LightGBM
scikit-learn wrapper (``LGBMClassifier``) reads back only as a ``Booster``, and an eager
PyTorch module needs its class to be rebuilt, so those (and models a flavor refuses)
are left to the generic serializer.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from kiln.core import IntegrityError
from kiln.registry.flavors import get_flavor
from kiln.registry.flavors._base import instance_from

__all__ = ["LIBRARIES", "dump", "load"]

LIBRARIES = ("sklearn", "lightgbm", "xgboost", "onnx", "torch")
_MANIFEST = "kiln-model-value.json"


def _flavor_of(value: Any) -> str | None:
    """The flavor whose stored form reads back as ``value`` itself, if any."""
    if instance_from(value, "lightgbm", "Booster"):
        return "lightgbm"
    if instance_from(value, "xgboost", "Booster", "XGBModel"):
        return "xgboost"
    if instance_from(value, "onnx", "ModelProto"):
        return "onnx"
    if instance_from(value, "torch.jit", "ScriptModule"):
        return "pytorch"
    module = type(value).__module__
    if module.startswith("sklearn.") and callable(getattr(value, "predict", None)):
        return "sklearn"
    return None


def dump(value: Any) -> bytes | None:
    """``value`` as its flavor stores it (a zip of the flavor's files and its config), or
    None when it is not a model whose stored form reads back as itself."""
    name = _flavor_of(value)
    if name is None:
        return None
    flavor = get_flavor(name)
    with tempfile.TemporaryDirectory(prefix="kiln-step-model-") as tmp:
        try:
            config = flavor.save(value, Path(tmp), {})
        except Exception:  # e.g. an unfitted model: the generic serializer keeps it as is
            return None
        sink = io.BytesIO()
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
            manifest = {"flavor": name, "config": config}
            archive.writestr(_MANIFEST, orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS))
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(tmp).as_posix())
    return sink.getvalue()


def load(data: bytes) -> Any:
    """The model :func:`dump` stored, as the same type of object."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        try:
            manifest = orjson.loads(archive.read(_MANIFEST))
        except KeyError:
            raise IntegrityError("a stored model value has no manifest") from None
        files = {n: archive.read(n) for n in archive.namelist() if n != _MANIFEST}
    reader = _READERS.get(manifest.get("flavor"))
    if reader is None:
        raise IntegrityError(f"a stored model value has unknown flavor {manifest.get('flavor')!r}")
    return reader(files, manifest.get("config") or {})


def _file(files: dict[str, bytes], config: dict[str, Any]) -> bytes:
    return files[str(config["file"])]  # every flavor's save names its file


def _sklearn(files: dict[str, bytes], config: dict[str, Any]) -> Any:
    import joblib

    return joblib.load(io.BytesIO(_file(files, config)))


def _lightgbm(files: dict[str, bytes], config: dict[str, Any]) -> Any:
    import lightgbm

    return lightgbm.Booster(model_str=_file(files, config).decode("utf-8"))


def _xgboost(files: dict[str, bytes], config: dict[str, Any]) -> Any:
    import xgboost

    from kiln.registry.flavors.xgboost import _resolve_wrapper

    raw = bytearray(_file(files, config))
    reference = str(config.get("wrapper", "booster"))
    if reference == "booster":
        booster = xgboost.Booster()
        booster.load_model(raw)
        return booster
    params = {"missing": float(config["missing"])} if config.get("missing") is not None else {}
    wrapper = _resolve_wrapper(reference, xgboost)(**params)
    wrapper.load_model(raw)
    return wrapper


def _onnx(files: dict[str, bytes], config: dict[str, Any]) -> Any:
    import onnx

    return onnx.load_model_from_string(_file(files, config))


def _torchscript(files: dict[str, bytes], config: dict[str, Any]) -> Any:
    import torch

    jit: Any = torch.jit  # untyped in torch's stubs
    return jit.load(io.BytesIO(_file(files, config)), map_location="cpu")


_READERS: dict[str, Callable[[dict[str, bytes], dict[str, Any]], Any]] = {
    "sklearn": _sklearn,
    "lightgbm": _lightgbm,
    "xgboost": _xgboost,
    "onnx": _onnx,
    "pytorch": _torchscript,
}
