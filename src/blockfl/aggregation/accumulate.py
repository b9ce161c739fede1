"""The compiled loop of FedAvg: every weighted update added to one cache-sized block at a time.

One call does a tensor's whole weighted mean, so Python dispatches once, not once per block.
The updates come as the addresses of their values (all float32 or all float64), padded in
front to whole groups of ``GROUP`` with -0.0 of weight 1: ``x + -0.0`` is ``x`` for every
``x``, +0 and -0 included, and the last pass, which also divides, reads a whole group from
memory. For each block of ``chunk`` elements, one pass of the float64 accumulator adds a
group of updates element by element in the given order (``acc = ((acc + w_0 * d_0) + w_1 *
d_1) + ...``), so each update value is read from memory once, widened to float64 in a
register, and the accumulator moves once per group, in cache; the last pass also divides by
the total, adds the base and stores the result. Compiled by numba without fast-math: every
product, sum and quotient (a true division) is its own IEEE-754 operation, never fused or
reordered, so the bits are those of the plain element-wise arithmetic on every CPU.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

GROUP = 5  # updates added per pass, the tuple of `_group` (numba does not vectorize ten)


@intrinsic
def _pointer(typingctx, address, like):
    """The integer ``address`` as a pointer to values of ``like``'s dtype."""
    pointer = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer))

    return pointer(types.intp, like), codegen


@numba.njit(nogil=True, boundscheck=False, inline="always")
def _values(addresses, steps, k, start, m, like):
    """Update ``k``'s ``m`` values from element ``start`` (a padding slot's step is 0)."""
    return numba.carray(_pointer(addresses[k] + steps[k] * start, like), m)


@numba.njit(nogil=True, boundscheck=False, inline="always")
def _group(addresses, steps, weights, k, start, m, like):
    """The values and weights of updates ``k .. k + GROUP - 1``, as tuples (unrolled loops)."""
    return ((_values(addresses, steps, k, start, m, like),
             _values(addresses, steps, k + 1, start, m, like),
             _values(addresses, steps, k + 2, start, m, like),
             _values(addresses, steps, k + 3, start, m, like),
             _values(addresses, steps, k + 4, start, m, like)),
            (weights[k], weights[k + 1], weights[k + 2], weights[k + 3], weights[k + 4]))


@numba.njit(nogil=True, boundscheck=False, inline="always")
def _added(x: float, deltas: tuple, weights: tuple, j: int) -> float:
    for k in range(len(deltas)):
        x = x + weights[k] * np.float64(deltas[k][j])
    return x


@numba.njit(nogil=True, boundscheck=False, cache=True)
def weighted_sum(addresses: np.ndarray, steps: np.ndarray, weights: np.ndarray,
                 like: np.ndarray, total: float, base: np.ndarray, out: np.ndarray,
                 chunk: int) -> None:
    """``out[j] = sum_k(weights[k] * float64(d_k[j])) / total + float64(base[j])``, rounded to
    ``out``'s dtype, where update ``k``'s value ``j`` lies at ``addresses[k] + steps[k] * j``
    as ``like``'s dtype; ``addresses.size`` is a positive multiple of ``GROUP``."""
    length = base.size
    acc = np.empty(min(chunk, length), dtype=np.float64)
    last = addresses.size - GROUP
    for start in range(0, length, chunk):
        m = min(chunk, length - start)
        a = acc[:m]
        if last == 0:
            a[:] = 0.0
        else:  # the first pass starts each element from +0 rather than from memory
            ds, ws = _group(addresses, steps, weights, 0, start, m, like)
            for j in range(m):
                a[j] = _added(0.0, ds, ws, j)
        for k in range(GROUP, last, GROUP):
            ds, ws = _group(addresses, steps, weights, k, start, m, like)
            for j in range(m):
                a[j] = _added(a[j], ds, ws, j)
        ds, ws = _group(addresses, steps, weights, last, start, m, like)
        b = base[start:start + m]
        o = out[start:start + m]
        for j in range(m):
            o[j] = _added(a[j], ds, ws, j) / total + np.float64(b[j])
