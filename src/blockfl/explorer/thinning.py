"""Thinning a long series for a chart: Largest-Triangle-Three-Buckets (Steinarsson, 2013).

A chart of thousands of rounds on a few hundred pixels draws bands, not a curve; LTTB keeps
the first and the last point and, from each of ``limit - 2`` equal buckets between them, the
point that spans the largest triangle with the point kept before it and the mean of the next
bucket, so peaks and dips survive. Deterministic: ties go to the earliest point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CHART_POINTS = 500  # points per metric the explorer's chart receives at most


def lttb(points: Sequence[tuple[float, float]], limit: int) -> list[int]:
    """Indices (ascending) of at most ``max(limit, 2)`` of ``points`` (sorted by x) to draw."""
    n = len(points)
    if n <= max(limit, 2):
        return list(range(n))
    if limit <= 2:
        return [0, n - 1]
    every = (n - 2) / (limit - 2)
    keep = [0]
    for i in range(limit - 2):
        start, end = int(i * every) + 1, int((i + 1) * every) + 1
        nxt = points[end:min(int((i + 2) * every) + 1, n)]
        mean_x = sum(p[0] for p in nxt) / len(nxt)
        mean_y = sum(p[1] for p in nxt) / len(nxt)
        ax, ay = points[keep[-1]]
        best, best_area = start, -1.0
        for j in range(start, end):
            x, y = points[j]
            area = abs((ax - mean_x) * (y - ay) - (ax - x) * (mean_y - ay))
            if area > best_area:
                best, best_area = j, area
        keep.append(best)
    keep.append(n - 1)
    return keep


def thinned(rows: Sequence[dict[str, Any]], names: Sequence[str], limit: int = CHART_POINTS,
            x: str = "round") -> list[dict[str, Any]]:
    """The rows (sorted by ``x``) where LTTB keeps a point of any of the metrics ``names``, in
    order, each with ``x`` and only the metrics kept there: at most ``limit`` values a metric."""
    kept: dict[int, list[str]] = {}
    for name in names:
        at = [i for i, r in enumerate(rows) if isinstance(r.get(name), (int, float))]
        for i in lttb([(rows[i][x], rows[i][name]) for i in at], limit):
            kept.setdefault(at[i], []).append(name)
    return [{x: rows[i][x]} | {name: rows[i][name] for name in kept[i]} for i in sorted(kept)]
