"""A flow run's graph laid out for server-side SVG: one box per step call, in columns by
depth (a node sits one column right of its deepest input), edges as curves.

A mapped step's box holds one small square per task (up to ``MAX_CHIPS``), each colored
by its task's status, so a fan-out of 20 shows which items failed; a plain step's box is
colored by its one task. No script is needed to draw it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import kiln

BOX_W, BOX_H, MAPPED_H = 180, 46, 64
GAP_X, GAP_Y, PAD = 70, 22, 16
CHIP, CHIP_GAP, MAX_CHIPS = 10, 3, 40
_LABEL = 24  # characters of a name shown in a box (the full name is its tooltip)
# The order a mapped node's overall status is chosen in: the first one any task has.
_PRECEDENCE = ("failed", "running", "retrying", "cancelled", "pending", "cached", "finished")


@dataclass
class Box:
    name: str
    step: str
    mapped: bool
    site: str
    tasks: list[Any] = field(default_factory=list)
    upstream: tuple[str, ...] = ()
    x: float = 0.0
    y: float = 0.0
    height: int = BOX_H

    @property
    def status(self) -> str:
        if not self.tasks:
            return "waiting"
        found = {str(t.status) for t in self.tasks}
        if len(found) == 1:
            return found.pop()
        return next((s for s in _PRECEDENCE if s in found), "running")

    @property
    def label(self) -> str:
        return self.name if len(self.name) <= _LABEL else self.name[: _LABEL - 1] + "…"

    @property
    def chips(self) -> list[tuple[float, float, Any]]:
        """(x, y, task) of the small squares of a mapped node's tasks."""
        per_row = int((BOX_W - 16 + CHIP_GAP) // (CHIP + CHIP_GAP))
        return [
            (
                self.x + 8 + (i % per_row) * (CHIP + CHIP_GAP),
                self.y + 30 + (i // per_row) * (CHIP + CHIP_GAP),
                task,
            )
            for i, task in enumerate(self.tasks[:MAX_CHIPS])
        ]

    @property
    def more(self) -> int:
        return max(0, len(self.tasks) - MAX_CHIPS)

    @property
    def summary(self) -> str:
        counts: dict[str, int] = {}
        for t in self.tasks:
            counts[t.status] = counts.get(t.status, 0) + 1
        return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "not started"


def _boxes(graph: Any, tasks: list[Any]) -> list[Box]:
    """Boxes from the graph's nodes (or from the tasks alone, without a graph), with
    every task in its node's box; tasks the graph does not name get boxes of their own."""
    node_of = kiln.flows.FlowGraph.node_of
    boxes: dict[str, Box] = {}
    if graph is not None:
        for n in graph.nodes:
            boxes[n.name] = Box(n.name, n.step, n.mapped, n.site, upstream=tuple(n.upstream))
    for t in tasks:
        name = node_of(t.task)
        box = boxes.get(name)
        if box is None:
            box = boxes[name] = Box(name, t.step, t.task != name, "")
        box.tasks.append(t)
    for box in boxes.values():
        box.tasks.sort(key=lambda t: _index(t.task))
    return list(boxes.values())


def _index(task: str) -> int:
    inside = task.rpartition("[")[2].rstrip("]")
    return int(inside) if inside.isdigit() else 0


def layout(graph: Any, tasks: list[Any]) -> dict[str, Any]:
    """Positions of every box and edge, and the drawing's size."""
    boxes = _boxes(graph, tasks)
    for box in boxes:
        box.height = _height(box)
    return arrange(boxes)


def arrange(boxes: Sequence[Any]) -> dict[str, Any]:
    """Place boxes (anything with ``name``, ``upstream``, ``height``, ``x``, ``y``) in
    columns by depth, each one column right of its deepest input, and draw the edges as
    curves. Boxes come in an order where every input is placed before its users."""
    by_name = {b.name: b for b in boxes}
    depth: dict[str, int] = {}
    for box in boxes:
        ups = [depth[u] for u in box.upstream if u in depth]
        depth[box.name] = max(ups) + 1 if ups else 0
    columns: dict[int, list[Any]] = {}
    for box in boxes:
        columns.setdefault(depth[box.name], []).append(box)
    for col, members in columns.items():
        y = float(PAD)
        for box in members:
            box.x, box.y = PAD + col * (BOX_W + GAP_X), y
            y += box.height + GAP_Y
    edges = []
    for box in boxes:
        for up in box.upstream:
            src = by_name.get(up)
            if src is None:
                continue
            x1, y1 = src.x + BOX_W, src.y + src.height / 2
            x2, y2 = box.x, box.y + box.height / 2
            bend = max(30.0, (x2 - x1) / 2)
            path = (
                f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} "
                f"{x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
            )
            edges.append({"src": up, "dst": box.name, "path": path})
    width = PAD * 2 + (max(columns) + 1) * BOX_W + max(columns) * GAP_X if columns else 0
    height = max(b.y + b.height for b in boxes) + PAD if boxes else 0
    return {"boxes": list(boxes), "edges": edges, "width": int(width), "height": int(height)}


def _height(box: Box) -> int:
    if not box.mapped:
        return BOX_H
    per_row = int((BOX_W - 16 + CHIP_GAP) // (CHIP + CHIP_GAP))
    rows = max(1, -(-min(len(box.tasks), MAX_CHIPS) // per_row))
    return max(MAPPED_H, 30 + rows * (CHIP + CHIP_GAP) + 16)
