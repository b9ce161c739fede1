"""Deterministic kernels of the aggregation rules: every miner and device gets the same bits.

Results use element-wise IEEE-754 operations in a fixed order only, never a library reduction
(whose order depends on the SIMD width, the BLAS and the thread count):

- sums over updates run in block order (ascending device address) in float64, one correctly
  rounded operation at a time, a cache-sized chunk of the accumulator over all updates before
  the next, in a compiled loop (`blockfl.aggregation.accumulate`);
- coordinate-wise order statistics come from a sort, whose result is unique once every -0.0
  is made +0.0 (update values are finite: miners verify that): a compiled sorting network
  for up to ``NETWORK_MAX`` updates (`blockfl.aggregation.order_network`), NumPy's sort above;
- squared norms and distances are float64 pairwise sums in a fixed tree: the values squared,
  halved until one remains (``v[i] + v[i + half]``, a +0.0 appended to an odd count), in a
  compiled loop (`blockfl.aggregation.squares`);
- Krum's distances are exact integers: updates quantized to a common fixed-point grid, their
  Gram matrix a BLAS product over chunks small enough that float64 holds every partial sum
  exactly, so the BLAS's order of additions cannot change it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from scipy.linalg.blas import dsyrk

CHUNK = 1 << 16  # elements per chunk of a weighted sum
SORT_CELLS = 1 << 19  # elements per chunk of a coordinate-wise sort (rows x updates)
NETWORK_MAX = 1024  # updates up to which a sorting network sorts each coordinate (faster than
# NumPy's sort at every count measured up to 1,000; its comparators grow as n log^2 n)
GRAM_CELLS = 1 << 19  # elements per chunk of Krum's Gram product (rows x updates)
_DIRECT = (torch.float32, torch.float64)  # the dtypes of the compiled loop
_HALF = (torch.float16, torch.bfloat16)  # widened to float32 (exactly) for the compiled loop


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def _widened(flat: torch.Tensor) -> torch.Tensor:
    """The values as a float32 or float64 tensor in memory, widened exactly where need be."""
    flat = flat.detach().cpu()
    if flat.dtype in _DIRECT:
        return flat
    return flat.float() if flat.dtype in _HALF else flat.double()


@functools.cache
def _negative_zeros(dtype: torch.dtype) -> torch.Tensor:
    """One chunk of -0.0: the values of the updates that pad the last group."""
    return torch.full((CHUNK,), -0.0, dtype=dtype)


def weighted_mean(
    base: torch.Tensor, deltas: Sequence[torch.Tensor], weights: Sequence[float], total: float
) -> torch.Tensor:
    """``base + sum_i(weights[i] * deltas[i]) / total``, rounded once to ``base.dtype``.

    Per element, a float64 accumulator starts at +0 and adds ``w_i * delta_i`` in the given
    order, the product rounded on its own (exact for an integer weight below 2**29 and a
    float32 value), then ``acc / total``, ``+ base``. The accumulator is one ``CHUNK`` that
    stays in cache: every update's values for that chunk are added to it, ``GROUP`` updates
    per pass, before the next chunk, so each update byte is read from memory once; one
    compiled call does it all (`blockfl.aggregation.accumulate`).
    """
    from blockfl.aggregation import accumulate  # numba: imported and compiled on first use

    if len(weights) != len(deltas):
        raise ValueError(f"{len(weights)} weights for {len(deltas)} updates")
    # the compiled loop reads each update where it lies: contiguous values in this process
    flats = [d if d.dtype in _DIRECT and d.is_contiguous() and d.device.type == "cpu"
             else _widened(_flat(d)).contiguous() for d in deltas]
    if len({f.dtype for f in flats}) > 1:
        flats = [f.double() for f in flats]  # exact; the products are float64 anyway
    pad = _negative_zeros(flats[0].dtype if flats else torch.float32)
    padding = [pad] * (-len(flats) % accumulate.GROUP if flats else accumulate.GROUP)
    # the padding goes first: +0 + -0.0 is +0, and the last pass (which also divides) reads
    # a whole group of updates from memory
    addresses = np.array([f.data_ptr() for f in padding + flats], np.intp)
    steps = np.array([0] * len(padding) + [f.element_size() for f in flats], np.intp)
    w = np.array([1.0] * len(padding) + [float(x) for x in weights], np.float64)
    flat_base = _widened(_flat(base)).numpy()
    direct = base.dtype in _DIRECT  # else rounded by torch, as before
    # numpy's allocation reuses freed memory; a large torch.empty maps fresh pages, whose
    # faults on first write cost 10 updates of 1M about 1 ms of 3.6
    out = np.empty(flat_base.size, dtype=flat_base.dtype if direct else np.float64)
    accumulate.weighted_sum(addresses, steps, w, pad.numpy(), float(total), flat_base, out,
                            CHUNK)
    result = torch.from_numpy(out).view(base.shape)
    return result if direct else result.to(base.dtype)


def order_statistic_mean(
    base: torch.Tensor, deltas: Sequence[torch.Tensor], low: int, high: int
) -> torch.Tensor:
    """Per element, ``base + mean(sorted values[low:high])`` of the updates' values.

    The values of each element are sorted ascending; ranks ``low .. high - 1`` are added in
    rank order in float64, divided by their count, added to the base and rounded once. The
    coordinate-wise median is ranks ``(n - 1) // 2 .. n // 2``; the trimmed mean drops ``k``
    at each end.
    """
    n = len(deltas)
    if not 0 <= low < high <= n:
        raise ValueError(f"ranks [{low}, {high}) out of range for {n} updates")
    dtypes = {d.dtype for d in deltas}
    if n <= NETWORK_MAX and len(dtypes) == 1 and dtypes <= set(_DIRECT) \
            and base.dtype in _DIRECT:
        return _network_order_statistic_mean(base, deltas, low, high)
    flats = [_flat(d).numpy() for d in deltas]
    flat_base = _flat(base).numpy()
    length = flat_base.size
    dtype = flats[0].dtype if flats else np.float32
    out = np.empty(length, dtype=flat_base.dtype)
    step = max(1, SORT_CELLS // n)
    rows = np.empty((n, min(step, length)), dtype=dtype)
    cols = np.empty((min(step, length), n), dtype=dtype)
    acc = np.empty(min(step, length), dtype=np.float64)
    for start in range(0, length, step):
        end = min(start + step, length)
        m = end - start
        r, c, a = rows[:, :m], cols[:m], acc[:m]
        for i, flat in enumerate(flats):
            r[i] = flat[start:end]
        np.copyto(c, r.T)
        np.add(c, 0.0, out=c)  # -0.0 becomes +0.0: equal values are then equal bits
        c.sort(axis=1)
        np.copyto(r, c.T)
        a[:] = r[low]
        for rank in range(low + 1, high):
            a += r[rank]
        if high - low > 1:
            a /= high - low
        a += flat_base[start:end]
        out[start:end] = a
    return torch.from_numpy(out).view(base.shape)


def _network_order_statistic_mean(base: torch.Tensor, deltas: Sequence[torch.Tensor],
                                  low: int, high: int) -> torch.Tensor:
    """`order_statistic_mean` of up to ``NETWORK_MAX`` float32 or float64 updates of one dtype,
    by the compiled sorting network (`blockfl.aggregation.order_network`): the same bits."""
    from blockfl.aggregation import order_network  # numba: imported and compiled on first use

    flats = [_flat(d).detach().cpu().contiguous() for d in deltas]
    addresses = np.array([f.data_ptr() for f in flats], np.intp)
    steps = np.array([f.element_size() for f in flats], np.intp)
    flat_base = _flat(base).detach().cpu().contiguous().numpy()
    out = np.empty(flat_base.size, dtype=flat_base.dtype)
    order_network.order_mean(addresses, steps, flats[0].numpy(), order_network.network(len(flats)),
                             flat_base, out, low, high)
    return torch.from_numpy(out).view(base.shape)


def _values(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as one float32 or float64 array (widened exactly where need be)."""
    return _widened(_flat(t)).contiguous().numpy()


def squared_norm(tensors: Sequence[torch.Tensor]) -> float:
    """Sum of squares of every element, deterministic: per tensor (in the given order) a
    fixed-tree sum of the values squared in float64 (`blockfl.aggregation.squares`), the
    tensors' sums added in order from 0.0."""
    return squared_distance(tensors, 1.0, None)


def squared_distance(tensors: Sequence[torch.Tensor], scale: float,
                    centre: Sequence[torch.Tensor] | None) -> float:
    """``|scale x tensors - centre|**2`` (``centre`` None: 0), deterministic: per element
    ``float64(x) * scale - float64(c)``, squared, each rounded once; the same trees as
    `squared_norm`."""
    from blockfl.aggregation.squares import tree_sum_of_squares  # numba: compiled on first use

    total = 0.0
    for i, t in enumerate(tensors):
        values = _values(t)
        c = _values(centre[i]) if centre is not None else values  # unread without a centre
        total += tree_sum_of_squares(values, c, float(scale), centre is not None)
    return total


def _grid_bits(length: int) -> int:
    """Fixed-point bits per value so that any squared distance fits an int64 with room."""
    return max(4, min(20, (60 - max(1, length).bit_length()) // 2))


def _peak(updates: Sequence[Sequence[torch.Tensor]]) -> float:
    """The largest magnitude of any value of any update (0.0 for none)."""
    peak = 0.0
    for t in (t for u in updates for t in u if t.numel()):
        low, high = torch.aminmax(t)
        peak = max(peak, -float(low), float(high))
    return peak


def grid_distances(
    updates: Sequence[Sequence[torch.Tensor]],
) -> tuple[list[list[int]], list[int]]:
    """Exact pairwise squared distances, and squared norms, of updates on a common fixed-point
    grid.

    Every value is scaled by ``2**b / max|value|`` (the largest magnitude over all updates)
    and rounded to an integer (half to even), ``b`` chosen from the model size so that no sum
    overflows an int64. The Gram matrix is a symmetric rank-k update (BLAS ``dsyrk``: the upper
    triangle only, half a matrix product's flops) over chunks of at most ``2**(52 - 2b)``
    elements, so every partial sum is an integer below 2**53, exact in float64 whatever order
    the BLAS adds in; chunks are summed as int64. A chunk is quantized straight into one
    reused float64 buffer of at most ``GRAM_CELLS`` values, still in cache for the product.
    Returns Python ints: ``d[i][j] = |q_i - q_j|^2`` and ``|q_i|^2``.
    """
    n = len(updates)
    length = sum(t.numel() for t in updates[0]) if n else 0
    bits = _grid_bits(length)
    step = min(max(1, GRAM_CELLS // max(1, n)), 1 << (52 - 2 * bits))
    peak = _peak(updates)
    gram = np.zeros((n, n), dtype=np.int64)
    if peak > 0.0:
        scale = 2.0**bits / peak
        buf = np.empty(n * min(step, length))
        part = np.zeros((n, n), order="F")  # the upper triangle of one chunk's Gram matrix
        for k in range(len(updates[0])):
            flats = [_flat(u[k]).numpy() for u in updates]
            size = flats[0].size
            for start in range(0, size, step):
                m = min(step, size - start)
                q = buf[: n * m].reshape(n, m)
                for row, flat in zip(q, flats, strict=True):
                    np.copyto(row, flat[start : start + m])  # widening to float64 is exact
                np.multiply(q, scale, out=q)
                np.rint(q, out=q)
                part = dsyrk(1.0, q.T, beta=0.0, c=part, trans=1, overwrite_c=1)
                gram += part.astype(np.int64)
    g = (np.triu(gram) + np.triu(gram, 1).T).tolist()
    return ([[g[i][i] + g[j][j] - 2 * g[i][j] for j in range(n)] for i in range(n)],
            [g[i][i] for i in range(n)])
