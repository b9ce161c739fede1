"""The compiled coordinate-wise order statistics of a few updates: a sorting network per chunk.

`kernels.order_statistic_mean` sorts each coordinate's values across the updates. With few
updates (a bucket mean's 5, a 10-device block's 10) a library sort pays its call per row of a
handful of values. Here one compiled call sorts a chunk of coordinates at a time with Batcher's
odd-even merge network: a fixed list of compare-exchanges ``(i, k)``, ``i < k``, each a loop
over the chunk that leaves the smaller value in row ``i``, which the compiler vectorizes.
The network is Batcher's for the next power of two with every comparator that touches a row at
or past ``n`` dropped: such rows would hold +inf, which a comparator never moves.

The result has the bits of the sort it replaces: a sort's output is unique once every -0.0 is
+0.0 (update values are finite: miners verify that), and the ranks are then added exactly as
there, in rank order in float64, divided by their count, added to the base, rounded once.
Compiled by numba without fast-math.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from blockfl.aggregation.accumulate import _values

CHUNK = 256  # coordinates sorted at a time: n rows of them stay in the first-level cache


@functools.cache
def network(n: int) -> np.ndarray:
    """The compare-exchanges ``(i, k)`` that sort ``n`` rows (Batcher's odd-even merge sort
    for the next power of two, restricted to rows below ``n``), in the order applied."""
    size = 1 << max(0, (n - 1).bit_length())
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(k):
                    low, high = i + j, i + j + k
                    if low // (2 * p) == high // (2 * p) and high < n:
                        pairs.append((low, high))
            k //= 2
        p *= 2
    return np.array(pairs, dtype=np.intp).reshape(-1, 2)


@numba.njit(nogil=True, boundscheck=False, cache=True)
def order_mean(addresses: np.ndarray, steps: np.ndarray, like: np.ndarray, pairs: np.ndarray,
               base: np.ndarray, out: np.ndarray, low: int, high: int) -> None:
    """``out[j] = float64(sorted_j[low]) + ... + float64(sorted_j[high - 1])``, divided by
    ``high - low`` when above 1, ``+ float64(base[j])``, rounded to ``out``'s dtype, where
    ``sorted_j`` is coordinate ``j`` of the updates (update ``k``'s value ``j`` at
    ``addresses[k] + steps[k] * j`` as ``like``'s dtype) in ascending order."""
    n = addresses.size
    length = base.size
    rows = np.empty((n, CHUNK), dtype=like.dtype)
    for start in range(0, length, CHUNK):
        m = min(CHUNK, length - start)
        for k in range(n):
            values = _values(addresses, steps, k, start, m, like)
            row = rows[k]
            for j in range(m):
                row[j] = values[j] + 0.0  # -0.0 becomes +0.0: equal values are equal bits
        for c in range(pairs.shape[0]):
            a, b = rows[pairs[c, 0]], rows[pairs[c, 1]]
            for j in range(m):
                x, y = a[j], b[j]
                a[j] = y if y < x else x
                b[j] = x if y < x else y
        for j in range(m):
            acc = np.float64(rows[low, j])
            for rank in range(low + 1, high):
                acc = acc + np.float64(rows[rank, j])
            if high - low > 1:
                acc = acc / (high - low)
            out[start + j] = acc + np.float64(base[start + j])
