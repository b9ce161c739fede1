"""The compiled norms and distances of the robust rules, bit for bit against the fixed tree
written out in NumPy (the specification `blockfl.aggregation.kernels` gives): every size from
0 to 70 and large odd and even ones, each dtype, with and without a scale and a centre."""

import numpy as np
import pytest
import torch

from blockfl.aggregation.kernels import squared_distance, squared_norm


def _tree(values: np.ndarray) -> float:
    """Halves added element-wise until one value remains, a 0.0 appended to an odd count."""
    v = values
    while v.size > 1:
        if v.size % 2:
            v = np.append(v, 0.0)
        half = v.size // 2
        v = v[:half] + v[half:]
    return float(v[0]) if v.size else 0.0


def _reference(tensors, scale, centre) -> float:
    total = 0.0
    for i, t in enumerate(tensors):
        x = t.to(torch.float64).mul(scale)
        if centre is not None:
            x = x.sub_(centre[i])
        x = x.reshape(-1).numpy()
        total += _tree(x * x)
    return total


def _tensors(rng, sizes, dtype):
    out = []
    for n in sizes:
        values = rng.standard_normal(n) * 10.0 ** rng.integers(-6, 4, n)
        values[rng.integers(0, max(1, n), n // 5)] = -0.0
        out.append(torch.from_numpy(values).to(dtype))
    return out


SIZES = [[n] for n in range(71)] + [[1, 2, 3], [999_999], [1 << 20], [784_000, 1000, 216_000]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_norms_and_distances_are_the_fixed_tree_bit_for_bit(dtype):
    rng = np.random.default_rng(5)
    for sizes in SIZES:
        tensors = _tensors(rng, sizes, dtype)
        centre = [c.to(cdtype) for c, cdtype in zip(
            _tensors(rng, sizes, torch.float64), [torch.float32, torch.float64] * 2,
            strict=False)]
        scale = float(rng.random() * 3)
        assert squared_norm(tensors) == _reference(tensors, 1.0, None), sizes
        assert squared_distance(tensors, scale, centre) == _reference(tensors, scale, centre), \
            sizes


def test_a_norm_is_exact_where_it_can_be():
    assert squared_norm([torch.tensor([3.0, 4.0]), torch.tensor([12.0])]) == 169.0
    assert squared_distance([torch.tensor([3.0, 4.0])], 2.0, [torch.tensor([6.0, 0.0])]) == 64.0
    assert squared_norm([torch.zeros(0)]) == 0.0
