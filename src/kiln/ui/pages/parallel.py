"""Parallel coordinates drawn as SVG on the server (no script needed): one vertical axis
per column, one polyline per row. The compare page draws runs over their params and
metrics, a study's page its trials over their params and objectives; both render
``_parallel.html`` with what :func:`parallel_axes` returns.

A column becomes an axis when every row has a value for it: numbers (finite, not
booleans) on a linear axis from the lowest to the highest, and a few distinct texts or
booleans (at most :data:`MAX_CATEGORIES`) as evenly spaced categories, each labelled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MAX_CATEGORIES", "SHADES", "parallel_axes"]

MAX_CATEGORIES = 12
SHADES = 6  # lines colored by a score use classes v0 (best) .. v5 (worst)
HEIGHT, PAD, SPACING, MIN_WIDTH = 260, 30, 140, 320


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _axis(label: str, values: list[Any]) -> dict[str, Any] | None:
    """An axis over ``values`` (one per row): each value's share of the height (0 at the
    bottom), with what to print; None when the column cannot be drawn."""
    numbers = [_number(v) for v in values]
    if all(n is not None for n in numbers):
        floats = [n for n in numbers if n is not None]
        low, high = min(floats), max(floats)
        shares = [0.5 if high == low else (n - low) / (high - low) for n in floats]
        return {"label": label, "low": low, "high": high, "shares": shares, "categories": []}
    if any(v is None or isinstance(v, dict | list | tuple) for v in values):
        return None
    texts = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    names = sorted(set(texts))
    if len(names) > MAX_CATEGORIES:
        return None
    place = {n: 0.5 if len(names) == 1 else i / (len(names) - 1) for i, n in enumerate(names)}
    return {
        "label": label,
        "low": None,
        "high": None,
        "shares": [place[t] for t in texts],
        "categories": [(n, place[n]) for n in names],
    }


def parallel_axes(
    rows: Sequence[tuple[str, Mapping[str, Any]]],
    columns: Sequence[str],
    *,
    scores: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The drawing of ``rows`` (each a title and its values by column) over ``columns``.

    Lines are colored one color per row, or by ``scores`` (one per row, lower is better)
    in :data:`SHADES` shades from best to worst, the best drawn last (on top). Returns the
    SVG's ``width``, ``height`` and ``pad``, ``ticks`` (one per axis: ``x``, ``label``,
    ``low``, ``high``, ``categories`` as ``(name, y)``) and ``lines`` (``title``,
    ``points``, ``css`` class).
    """
    axes = []
    if len(rows) >= 2:
        for column in columns:
            values = [values.get(column) for _, values in rows]
            axis = _axis(column, values)
            if axis is not None:
                axes.append(axis)
    width = max(MIN_WIDTH, SPACING * len(axes))
    span = HEIGHT - 2 * PAD

    def x_of(j: int) -> float:
        return round(PAD + j * (width - 2 * PAD) / max(1, len(axes) - 1), 1)

    def y_of(share: float) -> float:
        return HEIGHT - PAD - share * span

    order = list(range(len(rows)))
    css = [f"c{i % 8}" for i in order]
    if scores is not None:
        ranked = sorted(order, key=lambda i: scores[i])
        for rank, i in enumerate(ranked):
            css[i] = f"v{min(SHADES - 1, rank * SHADES // max(1, len(rows)))}"
        order = ranked[::-1]  # the worst first, so the best is drawn on top
    lines = []
    for i in order:
        points = " ".join(
            f"{x_of(j):.1f},{y_of(axis['shares'][i]):.1f}" for j, axis in enumerate(axes)
        )
        lines.append({"title": rows[i][0], "points": points, "css": css[i]})
    ticks = [
        {
            "x": x_of(j),
            "label": axis["label"],
            "low": axis["low"],
            "high": axis["high"],
            "categories": [(name, y_of(share)) for name, share in axis["categories"]],
        }
        for j, axis in enumerate(axes)
    ]
    return {"width": width, "height": HEIGHT, "pad": PAD, "lines": lines, "ticks": ticks}
