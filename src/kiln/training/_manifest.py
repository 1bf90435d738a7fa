"""A run's checkpoint list, kept as two run artifacts written in one transaction.

``checkpoints/manifest.json`` lists the checkpoints kept (step, digest, size, metrics);
``checkpoints/latest.ckpt`` is the newest one, so a person browsing the run downloads it
without reading the list (and a damaged list still leaves it to restore from). A
checkpoint's bytes are stored (atomically, content-addressed) before the transaction that
lists them, so a save killed at any point leaves the previous list, and every checkpoint
on it, intact. Evicting a checkpoint drops it from the list; its blob stays where another
checkpoint or run shares the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from kiln.core import IntegrityError, NotFound
from kiln.tracking import ArtifactRecord, TrackingClient, record_artifacts
from kiln.tracking.runs import list_artifacts
from kiln.training._checkpoint import CheckpointInfo

__all__ = ["LATEST", "MANIFEST", "Manifest", "read", "write"]

MANIFEST = "checkpoints/manifest.json"
LATEST = "checkpoints/latest.ckpt"
_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """The list as read; ``damaged`` says why it could not be read, and ``fallback`` then
    holds the digest ``latest.ckpt`` still points at."""

    entries: tuple[CheckpointInfo, ...]
    damaged: str | None = None
    fallback: tuple[str, ...] = ()


def read(client: TrackingClient, run_id: str) -> Manifest:
    rows = {a.path: a for a in list_artifacts(run_id, "checkpoints", client=client)}
    listed = rows.get(MANIFEST)
    if listed is None or listed.digest is None:
        return Manifest(())
    try:
        data = json.loads(client.blobs.get_bytes(listed.digest))
        entries = tuple(CheckpointInfo.from_json(run_id, e) for e in data["checkpoints"])
    except (IntegrityError, NotFound, ValueError, KeyError, TypeError) as exc:
        latest = rows.get(LATEST)
        fallback = (latest.digest,) if latest is not None and latest.digest else ()
        return Manifest((), f"{type(exc).__name__}: {exc}", fallback)
    return Manifest(entries)


def write(
    client: TrackingClient,
    run_id: str,
    entries: Sequence[CheckpointInfo],
) -> None:
    """Replace the run's list with ``entries`` (oldest first; the last is the latest)."""
    body = json.dumps(
        {"version": _VERSION, "checkpoints": [e.to_json() for e in entries]},
        sort_keys=True,
    ).encode()
    stored = client.blobs.put_bytes(body)
    latest = entries[-1]
    records = [
        ArtifactRecord(path=MANIFEST, size=stored.size, digest=stored.digest),
        ArtifactRecord(path=LATEST, size=latest.size, digest=latest.digest),
    ]
    with client.meta.write() as conn:
        record_artifacts(conn, run_id, records)
