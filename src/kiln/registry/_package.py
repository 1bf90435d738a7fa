"""Model packages: a directory of files stored as content-addressed blobs.

Layout of a package::

    kiln-model.json   descriptor: flavor, config, signature, environment, file hashes
    model/...         the flavor's files
    model/artifacts/  files a Python-function model asked to keep

Every file is uploaded to the blob store before the version row that lists its sha256 is
committed, so a crash leaves at most unreferenced blobs. Reading fetches each file's
bytes and checks them against the sha256 recorded in the metadata store before any of
them is handed to a loader.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kiln.core import IntegrityError, new_id
from kiln.registry.records import FileEntry
from kiln.store import BlobStore

DESCRIPTOR = "kiln-model.json"
FLAVOR_DIR = "model"


def store_package(
    blobs: BlobStore, root: Path, descriptor: Mapping[str, Any]
) -> tuple[FileEntry, ...]:
    """Store every file under ``root``, then the descriptor listing their hashes.

    The blob store hashes each file as it stores it; the descriptor reuses those hashes,
    so every file is read once. Returns the manifest (descriptor included) in path order.
    """
    entries = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            info = blobs.put_file(path)
            entries.append(
                FileEntry(
                    path=path.relative_to(root).as_posix(), digest=info.digest, size=info.size
                )
            )
    files = [{"path": e.path, "sha256": e.digest} for e in entries]
    body = json.dumps({**descriptor, "files": files}, indent=2, sort_keys=True, default=str)
    info = blobs.put_bytes(body.encode())
    entries.append(FileEntry(path=DESCRIPTOR, digest=info.digest, size=info.size))
    return tuple(sorted(entries, key=lambda e: e.path))


def fetch(blobs: BlobStore, files: Sequence[FileEntry], cache: Path) -> dict[str, bytes]:
    """Every file's bytes, each checked against the sha256 recorded at registration."""
    remote = "://" in blobs.uri and not blobs.uri.startswith("file://")
    return {f.path: _read(blobs, f, cache if remote else None) for f in files}


def _read(blobs: BlobStore, entry: FileEntry, cache: Path | None) -> bytes:
    if cache is not None:
        cached = cache / "blobs" / entry.digest
        try:
            data = cached.read_bytes()
        except OSError:
            data = None
        if data is not None and hashlib.sha256(data).hexdigest() == entry.digest:
            return data
    data = blobs.get_bytes(entry.digest)  # the store checks the bytes against the sha256
    if len(data) != entry.size:
        raise IntegrityError(
            f"model file {entry.path!r} does not match the sha256 recorded at registration; "
            "refusing to load it"
        )
    if cache is not None:
        _atomic_write(cache / "blobs" / entry.digest, data)
    return data


def _atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{new_id()}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
