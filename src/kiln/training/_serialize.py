"""A checkpoint's bytes: live objects to state_dicts, a snapshot for background saves, and
one encoding per payload (torch's when it holds torch values, pickle otherwise).

Large saves are dominated by memory traffic, not by the encoders: a fresh 100 MB buffer
costs more in page faults than torch spends writing into it. So an :class:`Encoder` and a
:class:`Staging` keep their buffers between saves and write into memory already mapped.
"""

from __future__ import annotations

import copy
import io
import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from kiln.core import IntegrityError, MissingDependency

__all__ = ["Encoder", "Staging", "decode", "holds_torch", "to_state_dicts"]

TORCH = "torch"
PICKLE = "pickle"
_ZIP_MAGIC = b"PK\x03\x04"
_SCALARS = (int, float, complex, str, bytes, bool, type(None))
_SLACK = 1 << 20


def to_state_dicts(value: Any) -> Any:
    """Objects with a ``state_dict()`` (modules, optimizers, schedulers, scalers) become
    their state_dicts; containers are walked; everything else is kept as it is.

    A container in which nothing changed is returned itself, so a state_dict passed in
    keeps its type and the ``_metadata`` that ``load_state_dict`` reads.
    """
    if isinstance(value, _SCALARS) or _is_tensor(value) or _is_ndarray(value):
        return value
    if isinstance(value, Mapping):
        items = {k: to_state_dicts(v) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    if type(value) is list or type(value) is tuple:
        converted = [to_state_dicts(v) for v in value]
        if all(a is b for a, b in zip(converted, value, strict=True)):
            return value
        return converted if type(value) is list else tuple(converted)
    state_dict = getattr(value, "state_dict", None)
    if callable(state_dict) and not isinstance(value, type):
        return state_dict()
    return value


def holds_torch(value: Any) -> bool:
    """Whether the payload holds a torch tensor anywhere (then torch's format stores it)."""
    if _is_tensor(value):
        return True
    if isinstance(value, Mapping):
        return any(holds_torch(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(holds_torch(v) for v in value)
    return False


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "untyped_storage")


def _is_ndarray(value: Any) -> bool:
    return type(value).__name__ == "ndarray" and type(value).__module__ == "numpy"


def _nbytes(value: Any) -> int:
    if _is_tensor(value):
        return int(value.nelement() * value.element_size())
    if _is_ndarray(value):
        return int(value.nbytes)
    if isinstance(value, Mapping):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, bytes | str):
        return len(value)
    return 0


class _Buffer:
    """A growable write target whose memory is reused from one save to the next."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._view = memoryview(self._data)
        self.size = 0
        self.on_first_write: Callable[[], None] | None = None

    def reset(self, expected: int) -> None:
        self.size = 0
        if expected > len(self._data):
            self._grow(expected)

    def _grow(self, needed: int) -> None:
        data = bytearray(max(needed, len(self._data) * 2))
        view = memoryview(data)
        view[: self.size] = self._view[: self.size]
        self._view.release()
        self._data, self._view = data, view

    def write(self, chunk: Any) -> int:
        if self.on_first_write is not None:
            self.on_first_write()
            self.on_first_write = None
        view = memoryview(chunk)
        if view.ndim != 1 or view.format not in ("B", "b", "c"):
            view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        end = self.size + view.nbytes
        if end > len(self._data):
            self._grow(end + _SLACK)
        if view.nbytes >= _SLACK:
            _copy_releasing_gil(self._view[self.size : end], view)
        else:
            self._view[self.size : end] = view
        self.size = end
        return view.nbytes

    def flush(self) -> None:
        """torch calls it when done; the bytes are already in place."""

    def getvalue(self) -> memoryview:
        return self._view[: self.size]

    def release(self) -> None:
        self._view.release()
        self._data = bytearray()
        self._view = memoryview(self._data)
        self.size = 0


def _copy_releasing_gil(dst: memoryview, src: memoryview) -> None:
    """A large copy without the GIL (numpy releases it; a memoryview assignment does not),
    so a background save does not stall the training thread for each tensor it copies."""
    import numpy as np

    np.copyto(np.frombuffer(dst, dtype=np.uint8), np.frombuffer(src, dtype=np.uint8))


class Encoder:
    """Encodes payloads into one reused buffer: the view :meth:`encode` returns is valid
    until the next call (the caller stores it before saving again)."""

    def __init__(self) -> None:
        self._buffer = _Buffer()

    def encode(self, payload: dict[str, Any], fmt: str) -> memoryview:
        buffer = self._buffer
        buffer.reset(_nbytes(payload) + _SLACK)
        if fmt == TORCH:
            _torch_save_without_crc32(payload, buffer)
        else:
            pickle.Pickler(buffer, protocol=5).dump(payload)
        return buffer.getvalue()

    def release(self) -> None:
        self._buffer.release()


def _torch_save_without_crc32(payload: dict[str, Any], buffer: _Buffer) -> None:
    """``torch.save`` into ``buffer`` without a CRC32 per record.

    The sha256 of the whole checkpoint already proves its integrity, and the CRC32 costs
    more than the copy itself (25 of 35 ms for 100 MB). torch reads the option when its
    writer is made, so the process-wide option is switched off only until the first
    write reaches ``buffer``: a ``torch.save`` another thread starts in that window also
    writes no CRC32, which ``torch.load`` accepts (only unzip tools would notice).
    """
    import torch

    serialization = torch.serialization
    if not hasattr(serialization, "set_crc32_options"):  # torch < 2.4 always writes it
        torch.save(payload, buffer)  # type: ignore[arg-type]  # a writable file-like
        return
    previous = serialization.get_crc32_options()
    serialization.set_crc32_options(False)
    buffer.on_first_write = lambda: serialization.set_crc32_options(previous)
    try:
        torch.save(payload, buffer)  # type: ignore[arg-type]  # a writable file-like
    finally:
        if buffer.on_first_write is not None:
            buffer.on_first_write = None
            serialization.set_crc32_options(previous)


def decode(data: bytes, *, map_location: Any = None) -> dict[str, Any]:
    """The payload back from its bytes (already verified against their digest)."""
    if data[:4] == _ZIP_MAGIC:
        try:
            import torch
        except ImportError:
            raise MissingDependency(
                "this checkpoint holds torch tensors and loading it needs torch: "
                "pip install 'kiln[torch]'"
            ) from None
        # The digest was checked against the metadata store, so these are the bytes this
        # project wrote; weights_only would refuse the numpy arrays and plain objects a
        # training state holds.
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    elif data[:1] == b"\x80":
        payload = pickle.loads(data)
    else:
        raise IntegrityError("the stored bytes are not a Kiln checkpoint (unknown encoding)")
    if not isinstance(payload, dict) or "state" not in payload:
        raise IntegrityError("the stored bytes are not a Kiln checkpoint (no state in them)")
    return payload


class Staging:
    """Copies of a state that training can no longer change, made in the caller's thread
    so the bytes can be written in the background.

    Tensors and arrays are copied into the buffers the previous snapshot used when their
    shape and type still match (a copy into mapped memory, several times faster than a
    fresh clone); CUDA tensors go to pinned host memory. Other values are deep-copied.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[Any, ...], Any] = {}

    def snapshot(self, value: Any) -> Any:
        used: dict[tuple[Any, ...], Any] = {}
        memo: dict[int, Any] = {}
        cuda: list[bool] = []
        out = self._copy(value, (), used, memo, cuda)
        if cuda:
            import torch

            torch.cuda.synchronize()
        self._buffers = used
        return out

    def release(self) -> None:
        self._buffers = {}

    def _copy(
        self,
        value: Any,
        path: tuple[Any, ...],
        used: dict[tuple[Any, ...], Any],
        memo: dict[int, Any],
        cuda: list[bool],
    ) -> Any:
        if isinstance(value, _SCALARS):
            return value
        if id(value) in memo:
            return memo[id(value)]
        if _is_tensor(value):
            out = self._tensor(value, path, used, cuda)
        elif _is_ndarray(value):
            out = self._array(value, path, used)
        elif type(value) is dict or type(value) is OrderedDict:
            out = type(value)(
                (k, self._copy(v, (*path, k), used, memo, cuda)) for k, v in value.items()
            )
            extra = getattr(value, "__dict__", None)
            if extra:  # a state_dict's _metadata, which load_state_dict reads
                out.__dict__.update(copy.deepcopy(extra))
        elif type(value) is list:
            out = [self._copy(v, (*path, i), used, memo, cuda) for i, v in enumerate(value)]
        elif type(value) is tuple:
            out = tuple(self._copy(v, (*path, i), used, memo, cuda) for i, v in enumerate(value))
        else:
            out = copy.deepcopy(value)
        memo[id(value)] = out
        return out

    def _tensor(
        self, value: Any, path: tuple[Any, ...], used: dict[tuple[Any, ...], Any], cuda: list[bool]
    ) -> Any:
        import torch

        source = value.detach()
        if source.layout != torch.strided or source.is_quantized:
            return source.clone().cpu()
        held = self._buffers.get(path)
        if not (
            isinstance(held, torch.Tensor)
            and held.shape == source.shape
            and held.dtype == source.dtype
            and (not source.is_cuda or held.is_pinned())
        ):
            held = torch.empty(
                source.shape, dtype=source.dtype, device="cpu", pin_memory=source.is_cuda
            )
        if source.is_cuda:
            held.copy_(source, non_blocking=True)
            cuda.append(True)
        elif not _memcpy(held, source, torch):
            held.copy_(source)
        used[path] = held
        return held

    def _array(self, value: Any, path: tuple[Any, ...], used: dict[tuple[Any, ...], Any]) -> Any:
        import numpy as np

        if value.dtype.hasobject:
            return copy.deepcopy(value)
        held = self._buffers.get(path)
        if not (
            isinstance(held, np.ndarray) and held.shape == value.shape and held.dtype == value.dtype
        ):
            held = np.empty_like(value, order="C")
        np.copyto(held, value)
        used[path] = held
        return held


def _memcpy(dst: Any, src: Any, torch: Any) -> bool:
    """Copy a contiguous CPU tensor's bytes on this thread alone, as one memcpy.

    ``Tensor.copy_`` splits a large copy across torch's intra-op threads; a copy is
    bound by memory bandwidth, not by cores, and on a machine whose cores are busy
    (data-loader workers, other jobs) waiting for every thread made a 100 MB snapshot
    take 200 ms instead of 10.
    """
    if not (src.is_contiguous() and dst.is_contiguous()) or src.is_conj() or src.is_neg():
        return False
    if src.numel() == 0:
        return True
    import numpy as np

    np.copyto(dst.reshape(-1).view(torch.uint8).numpy(), src.reshape(-1).view(torch.uint8).numpy())
    return True
