"""Conformance suite for :class:`kiln.store.BlobStore`: the contract in its docstring, proved.

Star-import this module into a test module and provide two fixtures:

``blob_store``
    A fresh, empty store of the backend under test (anything meeting the Protocol).
``corrupt_blob``
    A callable ``(store, digest) -> None`` that replaces the bytes stored under ``digest``
    with different bytes behind the store's back (a flipped bit on disk, an object
    overwritten in the bucket). It is the only backend-specific piece the suite needs.

The suite uses nothing but the Protocol, so the same tests prove every backend::

    from kiln.testing.blob_store import *  # noqa: F403

    @pytest.fixture
    def corrupt_blob() -> Callable[[BlobStore, str], None]: ...
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.errors import IntegrityError, InvalidInput, NotFound
from kiln.store import BlobInfo, BlobStore

__all__ = [
    "test_a_put_that_is_not_durable_yet_is_readable_and_syncs",
    "test_blob_is_visible_only_when_complete",
    "test_concurrent_puts_of_the_same_bytes_agree",
    "test_corrupted_blob_raises_integrity_error",
    "test_different_bytes_are_different_blobs",
    "test_exists",
    "test_get_file_creates_parent_directories_and_replaces_dst",
    "test_malformed_digest_is_invalid_input",
    "test_meets_the_protocol",
    "test_put_bytes_returns_sha256_and_size",
    "test_put_file_returns_sha256_and_size",
    "test_put_of_stored_bytes_writes_nothing",
    "test_round_trip",
    "test_same_bytes_are_stored_once",
    "test_unknown_digest_is_not_found",
]

CorruptBlob = Callable[[BlobStore, str], None]

MIB = 1 << 20
# Sizes around the interesting edges: nothing, a few bytes, and several MiB that do not
# fall on a chunk or part boundary.
SIZES = {"empty": 0, "small": 11, "multi-mib": 3 * MIB + 7}
UNKNOWN_DIGEST = hashlib.sha256(b"kiln conformance: never stored").hexdigest()
MALFORMED_DIGESTS = {
    "empty": "",
    "short": "abc123",
    "63-chars": "a" * 63,
    "65-chars": "a" * 65,
    "upper-case": UNKNOWN_DIGEST.upper(),
    "not-hex": "g" * 64,
    "prefixed": f"sha256:{UNKNOWN_DIGEST}",
    "path-traversal": "../" * 21 + "a",
    "slash": UNKNOWN_DIGEST[:32] + "/" + UNKNOWN_DIGEST[33:],
}


def _payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _expected(data: bytes) -> BlobInfo:
    return BlobInfo(hashlib.sha256(data).hexdigest(), len(data))


def _files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_meets_the_protocol(blob_store: BlobStore) -> None:
    assert isinstance(blob_store, BlobStore)
    assert isinstance(blob_store.uri, str)
    assert blob_store.uri


def test_put_bytes_returns_sha256_and_size(blob_store: BlobStore) -> None:
    data = _payload(1000)
    info = blob_store.put_bytes(data)
    assert info == _expected(data)
    assert isinstance(info.digest, str)
    assert isinstance(info.size, int)


def test_put_file_returns_sha256_and_size(blob_store: BlobStore, tmp_path: Path) -> None:
    data = _payload(5000, seed=1)
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    assert blob_store.put_file(src) == _expected(data)
    assert blob_store.put_file(str(src)) == _expected(data)  # str paths work too
    assert src.read_bytes() == data  # the source is left as it was


def test_a_put_that_is_not_durable_yet_is_readable_and_syncs(blob_store: BlobStore) -> None:
    data = _payload(3 * MIB + 7, seed=5)
    info = blob_store.put_bytes(data, durable=False)
    assert info == _expected(data)
    assert blob_store.get_bytes(info.digest) == data  # readable before it is on disk
    blob_store.sync(info.digest)
    assert blob_store.get_bytes(info.digest) == data


def test_exists(blob_store: BlobStore) -> None:
    data = b"exists?"
    digest = _expected(data).digest
    assert blob_store.exists(digest) is False
    blob_store.put_bytes(data)
    assert blob_store.exists(digest) is True
    assert blob_store.exists(UNKNOWN_DIGEST) is False


@pytest.mark.parametrize("size", SIZES.values(), ids=list(SIZES))
def test_round_trip(blob_store: BlobStore, tmp_path: Path, size: int) -> None:
    data = _payload(size, seed=size)
    info = blob_store.put_bytes(data)
    assert info == _expected(data)
    assert blob_store.exists(info.digest)
    assert blob_store.get_bytes(info.digest) == data

    out = tmp_path / "out"
    out.mkdir()
    blob_store.get_file(info.digest, out / "blob.bin")
    assert (out / "blob.bin").read_bytes() == data
    blob_store.get_file(info.digest, str(out / "again.bin"))
    assert (out / "again.bin").read_bytes() == data
    assert _files_under(out) == ["again.bin", "blob.bin"]  # no temporary files left behind

    src = tmp_path / "src.bin"
    src.write_bytes(data)
    assert blob_store.put_file(src) == info


def test_same_bytes_are_stored_once(blob_store: BlobStore, tmp_path: Path) -> None:
    data = _payload(2 * MIB, seed=2)
    src = tmp_path / "a.bin"
    src.write_bytes(data)
    copy = tmp_path / "copy-with-another-name.bin"
    copy.write_bytes(data)

    first = blob_store.put_bytes(data)
    assert blob_store.put_bytes(data) == first
    assert blob_store.put_file(src) == first
    assert blob_store.put_file(copy) == first
    assert blob_store.get_bytes(first.digest) == data


def test_put_of_stored_bytes_writes_nothing(
    blob_store: BlobStore, corrupt_blob: CorruptBlob, tmp_path: Path
) -> None:
    """Storing bytes that are already there is a lookup, not a second upload.

    Proved without timing: damage the stored copy behind the store's back, store the same
    bytes again, and the damage is still there, so the second put wrote nothing.
    """
    data = _payload(4096, seed=3)
    info = blob_store.put_bytes(data)
    corrupt_blob(blob_store, info.digest)

    assert blob_store.put_bytes(data) == info
    src = tmp_path / "same.bin"
    src.write_bytes(data)
    assert blob_store.put_file(src) == info
    with pytest.raises(IntegrityError):
        blob_store.get_bytes(info.digest)


def test_different_bytes_are_different_blobs(blob_store: BlobStore) -> None:
    a, b = b"alpha", b"beta"
    info_a, info_b = blob_store.put_bytes(a), blob_store.put_bytes(b)
    assert info_a.digest != info_b.digest
    assert blob_store.get_bytes(info_a.digest) == a
    assert blob_store.get_bytes(info_b.digest) == b


def test_get_file_creates_parent_directories_and_replaces_dst(
    blob_store: BlobStore, tmp_path: Path
) -> None:
    data = b"new contents"
    info = blob_store.put_bytes(data)
    dst = tmp_path / "a" / "b" / "c" / "file.txt"
    blob_store.get_file(info.digest, dst)
    assert dst.read_bytes() == data

    dst.write_bytes(b"an older, longer version of the file")
    blob_store.get_file(info.digest, dst)
    assert dst.read_bytes() == data
    assert _files_under(tmp_path / "a") == [str(Path("b", "c", "file.txt"))]


def test_unknown_digest_is_not_found(blob_store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=UNKNOWN_DIGEST):
        blob_store.get_bytes(UNKNOWN_DIGEST)

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(NotFound, match=UNKNOWN_DIGEST):
        blob_store.get_file(UNKNOWN_DIGEST, out / "missing.bin")
    assert _files_under(out) == []


@pytest.mark.parametrize("digest", MALFORMED_DIGESTS.values(), ids=list(MALFORMED_DIGESTS))
def test_malformed_digest_is_invalid_input(
    blob_store: BlobStore, tmp_path: Path, digest: str
) -> None:
    with pytest.raises(InvalidInput):
        blob_store.exists(digest)
    with pytest.raises(InvalidInput):
        blob_store.get_bytes(digest)

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InvalidInput):
        blob_store.get_file(digest, out / "x.bin")
    assert _files_under(out) == []


def test_corrupted_blob_raises_integrity_error(
    blob_store: BlobStore, corrupt_blob: CorruptBlob, tmp_path: Path
) -> None:
    data = _payload(MIB + MIB // 2, seed=4)  # more than one read chunk
    info = blob_store.put_bytes(data)
    corrupt_blob(blob_store, info.digest)

    with pytest.raises(IntegrityError, match=info.digest):
        blob_store.get_bytes(info.digest)

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError, match=info.digest):
        blob_store.get_file(info.digest, out / "model.bin")
    assert _files_under(out) == []  # neither the destination nor a partial file

    existing = out / "existing.bin"
    existing.write_bytes(b"a good file from before")
    with pytest.raises(IntegrityError):
        blob_store.get_file(info.digest, existing)
    assert existing.read_bytes() == b"a good file from before"
    assert _files_under(out) == ["existing.bin"]


def test_concurrent_puts_of_the_same_bytes_agree(blob_store: BlobStore) -> None:
    data = _payload(MIB + 3, seed=5)
    results: list[BlobInfo] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def put() -> None:
        try:
            start.wait()
            results.append(blob_store.put_bytes(data))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [_expected(data)] * 6
    assert blob_store.get_bytes(results[0].digest) == data


def test_blob_is_visible_only_when_complete(blob_store: BlobStore) -> None:
    """A reader that sees ``exists`` true always reads the whole blob, never a prefix."""
    data = _payload(4 * MIB + 1, seed=6)
    digest = _expected(data).digest
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            blob_store.put_bytes(data)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while not done.is_set():
            if blob_store.exists(digest):
                assert blob_store.get_bytes(digest) == data
    finally:
        writer.join()
    assert errors == []
    assert blob_store.exists(digest)
    assert blob_store.get_bytes(digest) == data
