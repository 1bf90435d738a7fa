"""Content-addressed blob store over fsspec: a local directory or an S3-API bucket.

A blob's key is the sha256 of its bytes, so identical files are stored once and a reader
can prove it got what was written. Writes are atomic: on a local disk the bytes go to a
temporary file that is fsynced and renamed into place; on object storage a single PUT is
atomic by itself. A reader hashes what it reads and raises :class:`IntegrityError` rather
than return bytes that do not match their key.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from kiln.core import (
    ConfigError,
    IntegrityError,
    InvalidInput,
    MissingDependency,
    NotFound,
    new_id,
)

__all__ = ["BlobInfo", "BlobStore", "FsspecBlobStore", "open_blob_store"]

_CHUNK = 1 << 20
_OVERLAP_BYTES = 8 << 20  # from here, hashing beside the write pays for its thread
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int


@runtime_checkable
class BlobStore(Protocol):
    """Contract every blob backend meets (proved by ``kiln.testing.blob_store``).

    - ``put_file``/``put_bytes`` return the sha256 and size; storing the same bytes twice
      stores them once; a blob becomes visible only when complete.
    - ``get_bytes``/``get_file`` raise ``NotFound`` for an unknown digest and
      ``IntegrityError`` when the stored bytes no longer hash to the digest; ``get_file``
      never leaves a partial destination file.
    - ``exists`` says whether a complete blob is stored under the digest.
    - ``put_bytes(..., durable=False)`` may return before the bytes are on disk (they are
      readable at once); ``sync(digest)`` returns once they are. Without it, a power cut
      may leave the blob short, which a reader detects by its hash and the next put of
      the same bytes repairs.
    """

    uri: str

    def put_file(self, path: str | os.PathLike[str]) -> BlobInfo: ...

    def put_bytes(self, data: bytes | memoryview, *, durable: bool = True) -> BlobInfo: ...

    def sync(self, digest: str) -> None: ...

    def get_bytes(self, digest: str) -> bytes: ...

    def get_file(self, digest: str, dst: str | os.PathLike[str]) -> None: ...

    def exists(self, digest: str) -> bool: ...


def _hash_file(path: Path) -> BlobInfo:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return BlobInfo(h.hexdigest(), size)


def _check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise InvalidInput(f"blob digest must be 64 lowercase hex characters, got {digest!r}")
    return digest


class FsspecBlobStore:
    """The one :class:`BlobStore` implementation, over any fsspec filesystem."""

    def __init__(self, uri: str, *, storage_options: dict[str, Any] | None = None) -> None:
        import fsspec

        self.uri = uri.rstrip("/")
        if "://" in self.uri and not self.uri.startswith("file://"):
            protocol = self.uri.split("://", 1)[0]
            self._fs = fsspec.filesystem(protocol, **(storage_options or {}))
            self._root = self.uri.split("://", 1)[1]
            self._local = False
        else:
            self._root = str(Path(self.uri.removeprefix("file://")).resolve())
            self._fs = fsspec.filesystem("file")
            self._local = True
            Path(self._root, "tmp").mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"FsspecBlobStore({self.uri!r})"

    def _key(self, digest: str) -> str:
        return f"{self._root}/sha256/{digest[:2]}/{digest[2:4]}/{digest}"

    def exists(self, digest: str) -> bool:
        key = self._key(_check_digest(digest))
        if self._local:
            return os.path.exists(key)
        self._fs.invalidate_cache(key)
        return bool(self._fs.exists(key))

    def put_file(self, path: str | os.PathLike[str]) -> BlobInfo:
        src = Path(path)
        if not src.is_file():
            raise NotFound(f"cannot store {str(src)!r}: no such file")
        info = _hash_file(src)
        if not self._stored(info):
            with src.open("rb") as fh:
                self._write(info.digest, lambda out: shutil.copyfileobj(fh, out, _CHUNK))
        return info

    def put_bytes(self, data: bytes | memoryview, *, durable: bool = True) -> BlobInfo:
        if self._local and len(data) >= _OVERLAP_BYTES:
            return self._put_large(data, durable)
        info = BlobInfo(hashlib.sha256(data).hexdigest(), len(data))
        if not self._stored(info):
            self._write(info.digest, lambda out: out.write(data), durable)
        return info

    def sync(self, digest: str) -> None:
        """Force a blob put with ``durable=False`` to disk (object storage: stored already)."""
        if not self._local:
            return
        try:
            fd = os.open(self._key(_check_digest(digest)), os.O_RDONLY)
        except FileNotFoundError:
            raise NotFound(f"blob sha256:{digest} is not in the store {self.uri!r}") from None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _stored(self, info: BlobInfo) -> bool:
        """Whether the blob is there whole; on a local disk a file of another size (a
        write a power cut left short) is not, and is written again."""
        if not self._local:
            return self.exists(info.digest)
        try:
            return os.stat(self._key(info.digest)).st_size == info.size
        except FileNotFoundError:
            return False

    def _put_large(self, data: bytes | memoryview, durable: bool) -> BlobInfo:
        """Hash on a second thread while the bytes go to disk (both release the GIL), then
        move the file to the name its hash gives: a large blob costs the slower of the
        two, not their sum. Identical bytes already stored are kept, the new copy dropped."""
        digest: list[str] = []
        hasher = threading.Thread(
            target=lambda: digest.append(hashlib.sha256(data).hexdigest()), name="kiln-hash"
        )
        hasher.start()
        tmp = f"{self._root}/tmp/{new_id()}"
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            hasher.join()
            info = BlobInfo(digest[0], len(data))
            if not self._stored(info):
                key = self._key(info.digest)
                os.makedirs(os.path.dirname(key), exist_ok=True)
                os.replace(tmp, key)
        finally:
            hasher.join()
            if os.path.exists(tmp):
                os.unlink(tmp)
        return info

    def _write(
        self, digest: str, fill: Callable[[IO[bytes]], object], durable: bool = True
    ) -> None:
        key = self._key(digest)
        if self._local:
            tmp = f"{self._root}/tmp/{digest}.{new_id()}"
            try:
                with open(tmp, "wb") as out:
                    fill(out)
                    out.flush()
                    if durable:
                        os.fsync(out.fileno())
                os.makedirs(os.path.dirname(key), exist_ok=True)
                os.replace(tmp, key)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            with self._fs.open(key, "wb") as out:  # one PUT (or multipart): atomic
                fill(out)

    def _open(self, digest: str) -> IO[bytes]:
        key = self._key(_check_digest(digest))
        try:
            fh: IO[bytes] = self._fs.open(key, "rb")
        except FileNotFoundError:
            raise NotFound(f"blob sha256:{digest} is not in the store {self.uri!r}") from None
        return fh

    def get_bytes(self, digest: str) -> bytes:
        if self._local:  # plain open(): fsspec's local file layer costs more than small reads
            try:
                with open(self._key(_check_digest(digest)), "rb") as local:
                    data = local.read()
            except FileNotFoundError:
                raise NotFound(f"blob sha256:{digest} is not in the store {self.uri!r}") from None
        else:
            with self._open(digest) as fh:
                data = fh.read()
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise _corrupted(digest, actual, self.uri)
        return data

    def get_file(self, digest: str, dst: str | os.PathLike[str]) -> None:
        target = Path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{new_id()}.part")
        h = hashlib.sha256()
        try:
            with self._open(digest) as src, tmp.open("wb") as out:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != digest:
                raise _corrupted(digest, h.hexdigest(), self.uri)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def _corrupted(digest: str, actual: str, uri: str) -> IntegrityError:
    return IntegrityError(
        f"blob sha256:{digest} in {uri!r} is corrupted (its bytes hash to {actual[:12]}...); "
        "refusing to return it"
    )


def open_blob_store(uri: str, *, s3_endpoint_url: str | None = None) -> BlobStore:
    """Open the blob store for ``uri``: a directory, ``file://...`` or ``s3://bucket/prefix``."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else "file"
    if scheme == "file":
        return FsspecBlobStore(uri)
    if scheme == "s3":
        try:
            import s3fs  # noqa: F401
        except ImportError:
            raise MissingDependency(
                "the S3 artifact store needs s3fs: pip install 'kiln[s3]'"
            ) from None
        options: dict[str, Any] = {}
        if s3_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": s3_endpoint_url}
        return FsspecBlobStore(uri, storage_options=options)
    raise ConfigError(
        f"KILN_ARTIFACT_URI: unknown scheme {scheme!r} in {uri!r}; supported: file, s3"
    )
