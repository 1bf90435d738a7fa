"""Step outputs as stored values: a serializer chosen by type, content-addressed.

A value is kept in the artifact store under the sha256 of its serialized bytes, and
referred to by a small :class:`ValueRef` (kind, digest) that the metadata store holds. A
small plain value (JSON of at most :data:`INLINE_MAX` bytes: numbers, strings, short
lists and dicts of them) is not a blob at all: the reference carries it, so a flow of
small steps writes no file per output.

=========  ==============================================  ===========================
kind       for                                             bytes
=========  ==============================================  ===========================
json       None, bool, int, float, str, lists and dicts    UTF-8 JSON, inline when small
npy        numpy arrays (not object arrays)                ``numpy.save``, no pickle
parquet    pandas DataFrames, Arrow tables, Polars frames  Parquet (snappy), read back
                                                           as the same type
model      models of the registry's flavors that read back    the flavor's own files
           as the same object (scikit-learn, LightGBM          (zipped, with its config)
           Booster, XGBoost, ONNX, TorchScript)
pickle     anything else                                   cloudpickle
=========  ==============================================  ===========================
"""

from __future__ import annotations

import hashlib
import importlib
import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from kiln.core import IntegrityError, InvalidInput

if TYPE_CHECKING:
    from kiln.store import BlobStore

__all__ = ["INLINE_MAX", "ValueRef", "dump", "load", "store_value"]

INLINE_MAX = 16 * 1024

# Models are stored by the registry's flavors. kiln.flows cannot import the registry (a
# package of its own layer), so it names the module, imported only for a value whose
# type comes from one of the model libraries (the module's LIBRARIES, checked by a test).
_MODEL_VALUES = "kiln.registry.step_values"
_MODEL_LIBRARIES = frozenset({"sklearn", "lightgbm", "xgboost", "onnx", "torch"})


@dataclass(frozen=True)
class ValueRef:
    """Where a stored value is: its kind and digest, and the value itself when inline."""

    kind: str
    digest: str
    size: int
    inline: Any = None
    frame: str | None = None  # for parquet: "pandas", "arrow" or "polars"

    def to_json(self) -> str:
        data: dict[str, Any] = {"kind": self.kind, "digest": self.digest, "size": self.size}
        if self.kind == "json" and self.inline is not None:
            data["inline"] = self.inline
        if self.frame is not None:
            data["frame"] = self.frame
        return orjson.dumps(data).decode()

    @classmethod
    def from_json(cls, text: str) -> ValueRef:
        data = orjson.loads(text)
        return cls(
            kind=data["kind"],
            digest=data["digest"],
            size=int(data["size"]),
            inline=data.get("inline"),
            frame=data.get("frame"),
        )

    @property
    def is_inline(self) -> bool:
        return self.kind == "json" and self.size <= INLINE_MAX


def _plain(value: Any) -> bool:
    """Whether ``value`` round-trips through JSON unchanged (tuples and NaN do not)."""
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if type(value) is list:
        return all(_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


def _frame_kind(value: Any) -> str | None:
    module = type(value).__module__.partition(".")[0]
    name = type(value).__name__
    if module == "pandas" and name == "DataFrame":
        return "pandas"
    if module == "pyarrow" and name == "Table":
        return "arrow"
    if module == "polars" and name == "DataFrame":
        return "polars"
    return None


def parquet_options(table: Any) -> dict[str, Any]:
    """How a frame is written: snappy, and dictionary encoding for every column but the
    floating-point ones. A step's output is written and read back at once, so speed wins
    over size; and measured floats rarely repeat, so trying a dictionary on them (Parquet's
    default) costs more than the rest of the write (0.5 of 1.2 s on 2M x 10 floats here)."""
    import pyarrow.types as pat

    keyed = [f.name for f in table.schema if not pat.is_floating(f.type)]
    return {"compression": "snappy", "use_dictionary": keyed or False}


def dump(value: Any) -> tuple[str, bytes | memoryview, str | None]:
    """``value`` serialized: (kind, bytes, frame type for parquet)."""
    if _plain(value):
        return "json", orjson.dumps(value), None
    frame = _frame_kind(value)
    if frame is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if frame == "pandas":
            table = pa.Table.from_pandas(value)
        elif frame == "polars":
            table = value.to_arrow()
        else:
            table = value
        sink = io.BytesIO()
        pq.write_table(table, sink, **parquet_options(table))
        return "parquet", sink.getbuffer(), frame  # a view of what was written, no copy
    numpy_array = type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"
    if numpy_array and value.dtype.kind != "O":
        import numpy as np

        sink = io.BytesIO()
        np.save(sink, value, allow_pickle=False)
        return "npy", sink.getvalue(), None
    if type(value).__module__.partition(".")[0] in _MODEL_LIBRARIES:
        model = importlib.import_module(_MODEL_VALUES).dump(value)
        if model is not None:
            return "model", model, None
    import cloudpickle

    try:
        return "pickle", cloudpickle.dumps(value), None
    except Exception as exc:
        raise InvalidInput(
            f"a step returned a {type(value).__name__}, which cannot be stored: {exc}"
        ) from None


def store_value(value: Any, blobs: BlobStore) -> ValueRef:
    """Serialize ``value`` and keep it: inline when small JSON, else as a blob."""
    kind, data, frame = dump(value)
    if kind == "json" and len(data) <= INLINE_MAX:
        return ValueRef(kind, hashlib.sha256(data).hexdigest(), len(data), inline=value)
    info = blobs.put_bytes(data)  # hashes once, writes only what is not stored yet
    return ValueRef(kind, info.digest, len(data), frame=frame)


def load(ref: ValueRef, blobs: BlobStore) -> Any:
    """The value ``ref`` names, read back as the type it was stored from."""
    if ref.is_inline:
        return ref.inline
    data = blobs.get_bytes(ref.digest)  # the blob store checks the bytes against the hash
    return decode(ref.kind, data, ref.frame)


def decode(kind: str, data: bytes, frame: str | None = None) -> Any:
    if kind == "json":
        return orjson.loads(data)
    if kind == "npy":
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(pa.BufferReader(data))
        if frame == "pandas":
            return table.to_pandas()
        if frame == "polars":
            import polars as pl

            return pl.from_arrow(table)
        return table
    if kind == "model":
        return importlib.import_module(_MODEL_VALUES).load(data)
    if kind == "pickle":
        import cloudpickle

        return cloudpickle.loads(data)
    raise IntegrityError(f"unknown stored value kind {kind!r}")
