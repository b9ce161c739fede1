"""Plain-text tables for reports printed without rich (`latency`, `malfunction`)."""

from __future__ import annotations

from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A right-aligned plain-text table with a header rule."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    rule = "  ".join("-" * w for w in widths)
    head = "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))
    return "\n".join([head, rule, *lines])
