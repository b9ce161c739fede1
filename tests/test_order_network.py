"""The sorting network behind the coordinate-wise median and trimmed mean
(`blockfl.aggregation.order_network`) sorts every input and gives the bits of NumPy's sort."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from blockfl.aggregation import kernels
from blockfl.aggregation.order_network import network


def _apply(pairs: np.ndarray, values: list) -> list:
    values = list(values)
    for i, k in pairs:
        if values[k] < values[i]:
            values[i], values[k] = values[k], values[i]
    return values


@pytest.mark.parametrize("n", range(1, 15))
def test_the_network_sorts_every_input_of_zeros_and_ones(n):
    """The 0-1 principle: a comparator network that sorts every 0/1 input sorts every input."""
    pairs = network(n)
    assert all(0 <= i < k < n for i, k in pairs)
    for bits in itertools.product((0, 1), repeat=n):
        assert _apply(pairs, bits) == sorted(bits)


@pytest.mark.parametrize("n", [15, 16, 17, 31, 50, 64, 100, 257])
def test_the_network_sorts_larger_counts(n):
    rng = np.random.default_rng(n)
    pairs = network(n)
    for _ in range(50):
        values = rng.integers(0, 7, n).tolist()
        assert _apply(pairs, values) == sorted(values)


def _updates(n: int, length: int, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    """Updates with the ties a sort must break the same way: -0.0 beside +0.0, equal values."""
    g = torch.Generator().manual_seed(seed)
    deltas = [torch.randn(length, generator=g, dtype=dtype) for _ in range(n)]
    deltas[0][:40] = -0.0
    deltas[-1][20:60] = 0.0
    deltas[n // 2][100:200] = deltas[0][100:200]
    deltas[-1][300:310] = 3e38  # near float32's largest
    return deltas


@pytest.mark.parametrize(("n", "dtype", "base_dtype"), [
    (1, torch.float32, torch.float32), (2, torch.float32, torch.float32),
    (5, torch.float32, torch.float32), (10, torch.float32, torch.float32),
    (11, torch.float64, torch.float64), (50, torch.float32, torch.float64),
    (100, torch.float64, torch.float32)])
def test_the_compiled_network_gives_the_bits_of_numpys_sort(n, dtype, base_dtype, monkeypatch):
    length = 1000 + 3  # not a whole number of chunks
    deltas = _updates(n, length, dtype, seed=n)
    base = torch.randn(length, generator=torch.Generator().manual_seed(99), dtype=base_dtype)
    cases = [((n - 1) // 2, n // 2 + 1), (n // 5, n - n // 5), (0, n), (n - 1, n)]
    network = [kernels.order_statistic_mean(base, deltas, lo, hi) for lo, hi in cases]
    monkeypatch.setattr(kernels, "NETWORK_MAX", 0)  # NumPy's sort, as before the network
    for (lo, hi), got in zip(cases, network, strict=True):
        want = kernels.order_statistic_mean(base, deltas, lo, hi)
        assert got.dtype == want.dtype == base_dtype and got.shape == want.shape
        bits = torch.int64 if base_dtype == torch.float64 else torch.int32
        assert torch.equal(got.view(bits), want.view(bits)), (lo, hi)


def test_the_network_reads_non_contiguous_updates_and_keeps_the_base_shape():
    deltas = [torch.randn(8, 6, generator=torch.Generator().manual_seed(i)).t() for i in range(7)]
    base = torch.zeros(6, 8)
    got = kernels.order_statistic_mean(base, deltas, 3, 4)
    assert got.shape == (6, 8)
    assert torch.equal(got, torch.stack(deltas).median(dim=0).values)
