"""The lineage graph: typed edges between any two objects Kiln knows by id.

Every capability adds edges here (a dataset ``input_to`` a run, a run ``produced`` a
model version...), so "what made this?" is one walk over one table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kiln.core import InvalidInput, from_millis, now_millis
from kiln.tracking import _tables as t
from kiln.tracking import _validate as v
from kiln.tracking.client import TrackingClient, default_client
from kiln.tracking.records import LineageEdge

__all__ = ["Edge", "add_edge", "delete_edges", "edges", "record_edges"]

# (src_kind, src_id, relation, dst_kind, dst_id, properties)
Edge = tuple[str, str, str, str, str, dict[str, Any]]


def add_edge(
    src_kind: str,
    src_id: str,
    relation: str,
    dst_kind: str,
    dst_id: str,
    *,
    client: TrackingClient | None = None,
    **properties: Any,
) -> None:
    """Record ``src --relation--> dst`` (idempotent: the latest properties win)."""
    for field, value in (("src_kind", src_kind), ("relation", relation), ("dst_kind", dst_kind)):
        v.check_key(f"lineage {field}", value)
    for field, value in (("src_id", src_id), ("dst_id", dst_id)):
        v.check_name(f"lineage {field}", value)
    meta = (client or default_client()).meta
    with meta.write() as conn:
        record_edges(conn, [(src_kind, src_id, relation, dst_kind, dst_id, properties)])


def record_edges(conn: Connection, edges: Sequence[Edge]) -> None:
    """Write edges inside the caller's write transaction (idempotent: latest properties win).

    Capabilities that create an object call this in the same transaction that stores the
    object, so the object and its lineage appear together or not at all.
    """
    now = now_millis()
    for src_kind, src_id, relation, dst_kind, dst_id, properties in edges:
        key = (
            (t.lineage_edges.c.src_kind == src_kind)
            & (t.lineage_edges.c.src_id == src_id)
            & (t.lineage_edges.c.relation == relation)
            & (t.lineage_edges.c.dst_kind == dst_kind)
            & (t.lineage_edges.c.dst_id == dst_id)
        )
        conn.execute(t.lineage_edges.delete().where(key))
        conn.execute(
            t.lineage_edges.insert().values(
                src_kind=src_kind,
                src_id=src_id,
                relation=relation,
                dst_kind=dst_kind,
                dst_id=dst_id,
                properties=json.dumps(properties, sort_keys=True, default=str),
                created_at=now,
            )
        )


def delete_edges(conn: Connection, kind: str, object_id: str) -> None:
    """Remove every edge touching ``kind``/``object_id``, inside the caller's transaction."""
    e = t.lineage_edges.c
    conn.execute(
        t.lineage_edges.delete().where(
            sa.or_(
                (e.src_kind == kind) & (e.src_id == object_id),
                (e.dst_kind == kind) & (e.dst_id == object_id),
            )
        )
    )


def edges(
    kind: str, object_id: str, *, direction: str = "both", client: TrackingClient | None = None
) -> list[LineageEdge]:
    """Edges touching ``kind``/``object_id``: ``"in"`` (what it came from), ``"out"``, or both."""
    if direction not in ("in", "out", "both"):
        raise InvalidInput(f"direction must be 'in', 'out' or 'both'; got {direction!r}")
    e = t.lineage_edges.c
    conds = []
    if direction in ("in", "both"):
        conds.append((e.dst_kind == kind) & (e.dst_id == object_id))
    if direction in ("out", "both"):
        conds.append((e.src_kind == kind) & (e.src_id == object_id))
    with (client or default_client()).meta.read() as conn:
        rows = conn.execute(
            sa.select(t.lineage_edges).where(sa.or_(*conds)).order_by(e.created_at)
        ).all()
    return [
        LineageEdge(
            src_kind=r.src_kind,
            src_id=r.src_id,
            relation=r.relation,
            dst_kind=r.dst_kind,
            dst_id=r.dst_id,
            properties=json.loads(r.properties),
            created_at=from_millis(r.created_at),
        )
        for r in rows
    ]
