"""The compiled fixed-tree sum of squares behind every norm and distance of the robust rules.

The tree is the one `blockfl.aggregation.kernels` specifies: the values (each squared in
float64, one rounding) are halved until one remains, ``v[i] + v[i + half]`` for ``i < half``,
a +0.0 appended first to an odd count. One compiled call builds the first level straight from
the tensor's values (widened, scaled, less the centre, squared: each its own IEEE-754
operation) into one buffer of half the size, then adds the levels in place, so a distance of
a 1M-value update reads its values once and writes no float64 temporary of its own size.
Compiled by numba without fast-math: nothing is fused or reordered.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, boundscheck=False, inline="always")
def _square(values, centre, scale, centred, i):
    """``(float64(values[i]) * scale - float64(centre[i]))**2``, less the centre if ``centred``."""
    x = np.float64(values[i]) * scale
    if centred:
        x = x - np.float64(centre[i])
    return x * x


@numba.njit(nogil=True, boundscheck=False, cache=True)
def tree_sum_of_squares(values: np.ndarray, centre: np.ndarray, scale: float,
                        centred: bool) -> float:
    """The fixed-tree sum of ``(values[i] * scale - centre[i])**2`` (``centre`` unread unless
    ``centred``); 0.0 for no values."""
    n = values.size
    if n < 2:
        return _square(values, centre, scale, centred, 0) if n else 0.0
    half = (n + 1) // 2
    level = np.empty(half, dtype=np.float64)
    for i in range(n - half):
        level[i] = (_square(values, centre, scale, centred, i)
                    + _square(values, centre, scale, centred, i + half))
    if n % 2:
        level[half - 1] = _square(values, centre, scale, centred, half - 1) + 0.0
    size = half
    while size > 1:
        half = (size + 1) // 2
        for i in range(size - half):
            level[i] = level[i] + level[i + half]
        if size % 2:
            level[half - 1] = level[half - 1] + 0.0
        size = half
    return level[0]
