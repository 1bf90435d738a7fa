"""ONNX models, stored as the serialized graph and run with ONNX Runtime on the CPU.

ONNX is the format for models that must be served without their training framework: the
graph runs no Python when loaded. Inputs are cast to the element types the graph
declares, since a signature inferred from a float64 example is common while most
exported graphs take float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kiln.core import InvalidInput
from kiln.registry.flavors._base import (
    ModelFiles,
    import_optional,
    instance_from,
    output_array,
)
from kiln.registry.signature import Batch

__all__ = ["FLAVOR"]

_FILE = "model.onnx"
_METHODS = ("predict",)
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


def _cast(values: Any, onnx_type: str, name: str) -> np.ndarray:
    dtype = _DTYPES.get(onnx_type)
    if dtype is None:
        raise InvalidInput(
            f"the onnx model's input {name!r} has type {onnx_type}, which kiln cannot feed"
        )
    arr = np.asarray(values)
    if dtype is np.object_:
        return arr.astype(object)
    if arr.dtype.kind == "O":
        raise InvalidInput(
            f"the onnx model's input {name!r} takes {onnx_type}; got non-numeric values"
        )
    return np.ascontiguousarray(arr, dtype=dtype)


def _columns(batch: Batch) -> dict[str, Any]:
    if batch.columns is not None:
        return dict(batch.columns)
    if batch.names and batch.matrix is not None and batch.matrix.ndim == 2:
        return {n: batch.matrix[:, i] for i, n in enumerate(batch.names)}
    return {}


class _Predictor:
    def __init__(self, session: Any, output: str) -> None:
        self._session = session
        self._inputs = [(i.name, i.type) for i in session.get_inputs()]
        # Per-column inputs are usually [N, 1]; a graph that declares [N] gets a vector.
        self._vector = {
            i.name for i in session.get_inputs() if isinstance(i.shape, list) and len(i.shape) == 1
        }
        self._output = output

    def _feeds(self, batch: Batch) -> dict[str, np.ndarray]:
        if len(self._inputs) == 1:
            name, onnx_type = self._inputs[0]
            return {name: _cast(batch.to_numpy(), onnx_type, name)}
        columns = _columns(batch)
        missing = [n for n, _ in self._inputs if n not in columns]
        if missing:
            raise InvalidInput(
                f"the onnx model takes inputs {[n for n, _ in self._inputs]}, so the input "
                f"needs columns of those names; missing {missing}"
            )
        return {
            n: _cast(columns[n], t, n).reshape((-1,) if n in self._vector else (-1, 1))
            for n, t in self._inputs
        }

    def predict(self, batch: Batch) -> np.ndarray:
        (out,) = self._session.run([self._output], self._feeds(batch))
        return output_array(out)


class OnnxFlavor:
    name = "onnx"
    packages = ("onnx", "onnxruntime", "numpy")

    def matches(self, model: object) -> bool:
        return instance_from(model, "onnx", "ModelProto")

    def save(self, model: Any, dst: Path, options: Mapping[str, Any]) -> dict[str, Any]:
        import onnx

        method = str(options.get("method") or "predict")
        if method not in _METHODS:
            raise InvalidInput(
                f"method {method!r} is not available for an ONNX model; pick one of its "
                "outputs with flavor_options={'output_name': ...} instead"
            )
        external = [
            t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
        ]
        if external:
            raise InvalidInput(
                f"the onnx model keeps {len(external)} tensors (e.g. {external[0]!r}) in "
                "external files; load it with onnx.load(path, load_external_data=True) first"
            )
        try:
            payload = model.SerializeToString()
        except ValueError as exc:  # protobuf's 2 GiB limit
            raise InvalidInput(f"cannot serialize the onnx model: {exc}") from None
        config: dict[str, Any] = {"file": _FILE, "method": method}
        if options.get("output_name") is not None:
            config["output_name"] = str(options["output_name"])
        dst.mkdir(parents=True, exist_ok=True)
        (dst / _FILE).write_bytes(payload)
        return config

    def load(self, files: ModelFiles, config: Mapping[str, Any]) -> _Predictor:
        ort = import_optional("onnxruntime", self.name, "onnx")
        data = files.read(str(config.get("file", _FILE)))
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in session.get_outputs()]
        output = config.get("output_name")
        if output is None:
            output = outputs[0]
        elif output not in outputs:
            raise InvalidInput(
                f"the onnx model has no output {output!r}; its outputs are {outputs}"
            )
        return _Predictor(session, str(output))


FLAVOR = OnnxFlavor()
