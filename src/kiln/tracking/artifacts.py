"""Run artifacts: logical paths per run mapped to content-addressed blobs.

The blob is written (atomically) before its row, so a crash can leave an unreferenced
blob but never a row pointing at missing or partial bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kiln.core import NotFound, close_matches, now_millis
from kiln.tracking import _tables as t
from kiln.tracking import _validate as v
from kiln.tracking._queries import get_run
from kiln.tracking.client import TrackingClient, default_client
from kiln.tracking.records import ArtifactRecord

__all__ = ["download_artifacts", "list_artifacts", "read_artifact", "record_artifacts"]


def _upsert(client: TrackingClient, run_id: str, rows: list[dict[str, Any]]) -> None:
    with client.meta.write() as conn:
        _upsert_rows(conn, run_id, rows)


def _upsert_rows(conn: Connection, run_id: str, rows: list[dict[str, Any]]) -> None:
    conn.execute(
        t.artifacts.delete().where(
            t.artifacts.c.run_id == run_id, t.artifacts.c.path.in_([r["path"] for r in rows])
        )
    )
    conn.execute(t.artifacts.insert(), rows)


def record_artifacts(conn: Connection, run_id: str, records: Sequence[ArtifactRecord]) -> None:
    """Attach already-stored blobs to a run inside the caller's write transaction."""
    if records:
        now = now_millis()
        _upsert_rows(conn, run_id, [_row(run_id, r, now) for r in records])


def log_files(
    client: TrackingClient, run_id: str, pairs: Sequence[tuple[Path, str]]
) -> list[ArtifactRecord]:
    now = now_millis()
    records = []
    for src, dest in pairs:
        info = client.blobs.put_file(src)
        records.append(ArtifactRecord(path=dest, size=info.size, digest=info.digest))
    if records:
        _upsert(client, run_id, [_row(run_id, r, now) for r in records])
    return records


def _row(run_id: str, record: ArtifactRecord, now: int) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "path": record.path,
        "digest": record.digest,
        "size": record.size,
        "created_at": now,
    }


def log_bytes(client: TrackingClient, run_id: str, data: bytes, dest: str) -> ArtifactRecord:
    info = client.blobs.put_bytes(data)
    record = ArtifactRecord(path=dest, size=info.size, digest=info.digest)
    _upsert(client, run_id, [_row(run_id, record, now_millis())])
    return record


def _run_id(run: Any) -> str:
    run_id = getattr(run, "id", run)
    if not isinstance(run_id, str):
        raise NotFound(f"expected a run, run record or run id; got {run!r}")
    return run_id


def _files(client: TrackingClient, run_id: str, path: str) -> list[ArtifactRecord]:
    get_run(client, run_id)  # NotFound for an unknown run
    cond = [t.artifacts.c.run_id == run_id]
    if path:
        cond.append(
            sa.or_(
                t.artifacts.c.path == path,
                t.artifacts.c.path.startswith(f"{path}/", autoescape=True),
            )
        )
    with client.meta.read() as conn:
        rows = conn.execute(
            sa.select(t.artifacts.c.path, t.artifacts.c.size, t.artifacts.c.digest)
            .where(*cond)
            .order_by(t.artifacts.c.path)
        ).all()
    return [ArtifactRecord(path=r.path, size=r.size, digest=r.digest) for r in rows]


def list_artifacts(
    run: Any, path: str = "", *, recursive: bool = True, client: TrackingClient | None = None
) -> list[ArtifactRecord]:
    """Files logged by ``run`` under ``path``; non-recursive lists one level, with dirs."""
    client = client or default_client()
    prefix = v.artifact_path(path)
    files = _files(client, _run_id(run), prefix)
    if recursive:
        return files
    level: dict[str, ArtifactRecord] = {}
    base = f"{prefix}/" if prefix else ""
    for f in files:
        if f.path == prefix:
            return [f]
        head, _, rest = f.path[len(base) :].partition("/")
        key = base + head
        if rest:
            old = level.get(key)
            size = f.size + (old.size if old else 0)
            level[key] = ArtifactRecord(path=key, size=size, digest=None, is_dir=True)
        else:
            level[key] = f
    return list(level.values())


def read_artifact(run: Any, path: str, *, client: TrackingClient | None = None) -> bytes:
    """The bytes of one logged file, sha256-verified (a viewer's preview; use
    :func:`download_artifacts` for directories and large files)."""
    client = client or default_client()
    run_id = _run_id(run)
    prefix = v.artifact_path(path)
    files = [f for f in _files(client, run_id, prefix) if f.path == prefix]
    if not files:
        known = [f.path for f in _files(client, run_id, "")]
        raise NotFound(f"run {run_id} has no file {prefix!r}{close_matches(prefix, known)}")
    return client.blobs.get_bytes(files[0].digest or "")


def download_artifacts(
    run: Any,
    path: str = "",
    dst: str | os.PathLike[str] = ".",
    *,
    client: TrackingClient | None = None,
) -> Path:
    """Copy a logged file or directory into ``dst``, verifying every blob's sha256.

    Returns the local path of what ``path`` names (``dst/path``).
    """
    client = client or default_client()
    run_id = _run_id(run)
    prefix = v.artifact_path(path)
    files = _files(client, run_id, prefix)
    if not files:
        known = [f.path for f in _files(client, run_id, "")]
        raise NotFound(f"run {run_id} has no artifact {prefix!r}{close_matches(prefix, known)}")
    root = Path(dst)
    for f in files:
        client.blobs.get_file(f.digest or "", root / f.path)
    return root / prefix if prefix else root
