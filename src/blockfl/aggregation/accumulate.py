"""The compiled inner loops of FedAvg: add several weighted updates to one cache-sized block.

One pass over a block of the float64 accumulator adds a group of updates, element by element
in the given order (``acc = ((acc + w_0 * d_0) + w_1 * d_1) + ...``), so the accumulator moves
through memory once per group instead of once per update and each update value is read once,
widened to float64 in a register; the last group's pass also divides by the total, adds the
base and stores the result. Compiled by numba without fast-math: every product, sum and
quotient is its own IEEE-754 operation, never fused or reordered, so the bits are those of
the plain element-wise arithmetic on every CPU.
"""

from __future__ import annotations

import numba
import numpy as np

GROUP = 8  # updates added per pass (numba 0.68 stopped vectorizing a group of ten)


@numba.njit(nogil=True, boundscheck=False, inline="always")
def _added(x: float, deltas: tuple, weights: tuple, j: int) -> float:
    for k in range(len(deltas)):
        x = x + weights[k] * np.float64(deltas[k][j])
    return x


@numba.njit(nogil=True, boundscheck=False, cache=True)
def add_products(acc: np.ndarray, deltas: tuple, weights: tuple) -> None:
    """``acc[j] += weights[k] * float64(deltas[k][j])`` for ``k`` in order, each rounded once."""
    for j in range(acc.size):
        acc[j] = _added(acc[j], deltas, weights, j)


@numba.njit(nogil=True, boundscheck=False, cache=True)
def add_products_and_finish(acc: np.ndarray, deltas: tuple, weights: tuple, total: float,
                            base: np.ndarray, out: np.ndarray) -> None:
    """`add_products`, then ``out[j] = acc[j] / total + float64(base[j])`` rounded to
    ``out``'s dtype (float32 or float64; ``out`` may be ``acc`` itself)."""
    for j in range(acc.size):
        out[j] = _added(acc[j], deltas, weights, j) / total + np.float64(base[j])
