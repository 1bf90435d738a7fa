"""The blob store conformance suite on every backend (local disk, S3 API), plus local specifics.

``blob_store`` comes from ``tests/conftest.py`` (parametrized local / s3 on a moto server).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.errors import ConfigError, IntegrityError, NotFound
from kiln.store import BlobStore, FsspecBlobStore, open_blob_store
from kiln.testing.blob_store import *  # noqa: F403


@pytest.fixture
def corrupt_blob(
    blob_store: BlobStore, request: pytest.FixtureRequest
) -> Callable[[BlobStore, str], None]:
    """Overwrite a stored blob with other bytes, bypassing the store."""
    assert isinstance(blob_store, FsspecBlobStore)
    if blob_store.uri.startswith("s3://"):
        import boto3

        s3 = boto3.client(
            "s3", endpoint_url=request.getfixturevalue("s3_endpoint"), region_name="us-east-1"
        )

        def corrupt_s3(store: BlobStore, digest: str) -> None:
            assert isinstance(store, FsspecBlobStore)
            bucket, key = store._key(digest).split("/", 1)
            original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            s3.put_object(Bucket=bucket, Key=key, Body=_damaged(original))

        return corrupt_s3

    def corrupt_local(store: BlobStore, digest: str) -> None:
        assert isinstance(store, FsspecBlobStore)
        path = Path(store._key(digest))
        path.write_bytes(_damaged(path.read_bytes()))

    return corrupt_local


def _damaged(data: bytes) -> bytes:
    """Same length, one bit flipped (or a byte appended to an empty blob)."""
    if not data:
        return b"\0"
    return bytes([data[0] ^ 1]) + data[1:]


# -- open_blob_store ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri", ["gs://bucket/prefix", "azure://container/x", "http://example.com/blobs", "hdfs://nn/x"]
)
def test_unknown_scheme_is_a_config_error_naming_supported_schemes(uri: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_blob_store(uri)
    message = str(info.value)
    scheme = uri.split("://", 1)[0]
    assert f"{scheme!r}" in message
    assert "file" in message
    assert "s3" in message
    assert "KILN_ARTIFACT_URI" in message
    assert "\n" not in message


@pytest.mark.parametrize("form", ["plain", "file-url"])
def test_local_forms_open_the_same_directory(tmp_path: Path, form: str) -> None:
    root = tmp_path / "blobs"
    uri = str(root) if form == "plain" else f"file://{root}"
    store = open_blob_store(uri)
    info = store.put_bytes(b"payload")
    # A second store on the same directory, opened the other way, sees the blob.
    other = open_blob_store(f"file://{root}" if form == "plain" else str(root))
    assert other.exists(info.digest)
    assert other.get_bytes(info.digest) == b"payload"
    assert (root / "sha256" / info.digest[:2] / info.digest[2:4] / info.digest).is_file()


def test_s3_store_keeps_blobs_under_its_prefix(s3_endpoint: str, s3_bucket: str) -> None:
    import boto3

    store = open_blob_store(f"s3://{s3_bucket}/team/blobs/", s3_endpoint_url=s3_endpoint)
    info = store.put_bytes(b"in the bucket")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    d = info.digest
    assert keys == [f"team/blobs/sha256/{d[:2]}/{d[2:4]}/{d}"]


def test_local_put_leaves_no_temporary_files(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = open_blob_store(str(root))
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * (3 * (1 << 20) + 5))
    infos = [
        store.put_bytes(b"one"),
        store.put_bytes(b"one"),  # deduplicated
        store.put_bytes(b""),
        store.put_file(src),
        store.put_file(src),
    ]
    digests = sorted({i.digest for i in infos})
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == sorted(f"sha256/{d[:2]}/{d[2:4]}/{d}" for d in digests)
    assert list((root / "tmp").iterdir()) == []


def test_a_large_blob_hashed_beside_its_write_is_stored_once_under_its_hash(
    tmp_path: Path,
) -> None:
    """From 8 MiB a local put hashes on a second thread while writing: same result."""
    root = tmp_path / "blobs"
    store = open_blob_store(str(root))
    data = bytes(range(256)) * (9 * (1 << 12))  # 9 MiB
    first, again = store.put_bytes(data), store.put_bytes(data)
    assert first == again
    assert first.digest == hashlib.sha256(data).hexdigest() and first.size == len(data)
    assert store.get_bytes(first.digest) == data
    files = [p for p in root.rglob("*") if p.is_file()]
    assert [p.name for p in files] == [first.digest]  # the second copy was dropped
    assert list((root / "tmp").iterdir()) == []


@pytest.mark.parametrize("size", [11, 9 << 20], ids=["small", "large"])
def test_a_blob_a_power_cut_left_short_is_written_again_by_the_next_put(
    tmp_path: Path, size: int
) -> None:
    """A blob put with durable=False is on disk only once synced: a power cut before
    that can leave its file short. The next put of the same bytes repairs it rather
    than trusting the name."""
    store = open_blob_store(str(tmp_path / "blobs"))
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    info = store.put_bytes(data, durable=False)
    store.sync(info.digest)
    path = next(p for p in (tmp_path / "blobs").rglob(info.digest))
    path.write_bytes(data[: size // 2])  # what a cut-short write leaves
    with pytest.raises(IntegrityError):
        store.get_bytes(info.digest)
    assert store.put_bytes(data) == info
    assert store.get_bytes(info.digest) == data
    path.write_bytes(b"")
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    assert store.put_file(src) == info and store.get_bytes(info.digest) == data
    with pytest.raises(NotFound, match="is not in the store"):
        store.sync(hashlib.sha256(b"never stored").hexdigest())


def test_put_file_of_a_missing_file_is_not_found(tmp_path: Path) -> None:
    store = open_blob_store(str(tmp_path / "blobs"))
    with pytest.raises(NotFound, match=r"nope\.bin"):
        store.put_file(tmp_path / "nope.bin")


def test_digest_with_trailing_newline_is_invalid_input(tmp_path: Path) -> None:
    from kiln.errors import InvalidInput

    store = open_blob_store(str(tmp_path / "blobs"))
    digest = hashlib.sha256(b"x").hexdigest() + "\n"
    with pytest.raises(InvalidInput):
        store.exists(digest)
