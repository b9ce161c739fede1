"""The FedAvg kernel's bits, pinned: any change to how `weighted_mean` walks memory must keep
every output byte (same float64 accumulation order per element, same rounding, same dtype)."""

import hashlib

import numpy as np
import pytest
import torch

from blockfl.aggregation.kernels import CHUNK, weighted_mean

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


def _case(seed: int, shape: tuple[int, ...], n: int, dtype: str, weights: str):
    """Seeded base, deltas (magnitudes 1e-3 .. 1e1, some -0.0) and weights of one kind."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))

    def tensor(scale: float) -> torch.Tensor:
        values = rng.standard_normal(size) * scale
        values[rng.integers(0, max(1, size), size // 7)] = -0.0
        return torch.from_numpy(values).to(DTYPES[dtype]).reshape(shape)

    base = tensor(1.0)
    deltas = [tensor(10.0 ** (i % 5 - 3)) for i in range(n)]
    if weights == "int":
        w = [float(x) for x in rng.integers(1, 1000, n)]
    elif weights == "big":  # at or past 2**29: products rounded on their own
        w = [float(x) for x in rng.integers(2**29, 2**40, n)]
    else:  # clipped FedAvg's scaled sample counts
        scaled = zip(rng.integers(1, 1000, n), rng.random(n), strict=True)
        w = [float(x) * float(s) for x, s in scaled]
    return base, deltas, w, float(sum(w)) if weights != "real" else float(rng.integers(n, 9000))


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _reference(base, deltas, w, total) -> torch.Tensor:
    """The documented arithmetic, one whole array at a time (numpy: one rounding per op)."""
    acc = np.zeros(base.numel(), dtype=np.float64)
    for d, wi in zip(deltas, w, strict=True):
        acc = acc + d.reshape(-1).double().numpy() * wi
    acc = acc / total + base.reshape(-1).double().numpy()
    return torch.from_numpy(acc).to(base.dtype).reshape(base.shape)


SHAPES = [(), (1,), (7,), (3, 5), (CHUNK + 3,), (257, 1023), (3 * CHUNK + 1,)]
CASES = [(i, shape, n, dtype, kind)
         for i, (shape, n, dtype, kind) in enumerate(
             [(s, n, "float32", "int") for s in SHAPES for n in (1, 3, 17)]
             + [(s, 5, "float32", k) for s in SHAPES for k in ("real", "big")]
             + [(s, 4, d, "int") for s in ((7,), (CHUNK + 3,)) for d in ("float64", "float16",
                                                                          "bfloat16")])]

# SHA-256 over the hex SHA-256 of every case's output bytes, in CASES order, taken from the
# chunk-by-chunk kernel before the update-blocked rewrite.
PINNED = "8725193d7e4d17734a3ec738f312f897df3b4a1f6e530a7c23d4a52359078732"


def test_weighted_mean_bits_are_pinned():
    digest = hashlib.sha256()
    for case in CASES:
        base, deltas, w, total = _case(*case)
        out = weighted_mean(base, deltas, w, total)
        assert (out.shape, out.dtype) == (base.shape, base.dtype)
        digest.update(_sha(out).encode())
    assert digest.hexdigest() == PINNED


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}-{c[4]}")
def test_weighted_mean_is_the_documented_arithmetic(case):
    base, deltas, w, total = _case(*case)
    assert _sha(weighted_mean(base, deltas, w, total)) == _sha(_reference(base, deltas, w, total))


def test_weighted_mean_takes_tensors_that_require_grad():
    base, deltas, w, total = _case(0, (3, 5), 3, "float32", "int")
    out = weighted_mean(base.requires_grad_(), [d.requires_grad_() for d in deltas], w, total)
    assert _sha(out) == _sha(_reference(base.detach(), [d.detach() for d in deltas], w, total))


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous tensor (every other element of a larger one)."""
    wide = torch.empty(t.numel() * 2, dtype=t.dtype)
    wide[::2] = t.reshape(-1)
    return wide[::2].view(t.shape)


@pytest.mark.parametrize("n", [0, 1, 4, 5, 6, 9, 10, 11, 100])
def test_weighted_mean_of_any_number_of_updates(n):
    """Every count, whole groups of the compiled loop or not, none included."""
    base, deltas, w, total = _case(100 + n, (CHUNK + 3,), n, "float32", "real")
    total = total or 1.0
    assert _sha(weighted_mean(base, deltas, w, total)) == _sha(_reference(base, deltas, w, total))


def test_weighted_mean_of_mixed_and_non_contiguous_updates():
    """Updates of mixed dtypes, transposed and strided tensors give the documented bits."""
    base, deltas, w, total = _case(7, (257, 1023), 6, "float32", "int")
    mixed = [deltas[0].double(), deltas[1].half(), deltas[2].t().contiguous().t(),
             _strided(deltas[3]), deltas[4].bfloat16(), deltas[5]]
    assert _sha(weighted_mean(_strided(base), mixed, w, total)) == _sha(
        _reference(base, mixed, w, total))


def test_weighted_mean_refuses_weights_that_do_not_match_the_updates():
    base, deltas, w, total = _case(0, (7,), 3, "float32", "int")
    with pytest.raises(ValueError, match="2 weights for 3 updates"):
        weighted_mean(base, deltas, w[:2], total)


def test_weighted_mean_is_one_compiled_call(monkeypatch):
    """Python dispatches to the compiled loop once per tensor, not once per chunk or group."""
    from blockfl.aggregation import accumulate

    calls = []
    compiled = accumulate.weighted_sum
    monkeypatch.setattr(accumulate, "weighted_sum", lambda *a: calls.append(1) or compiled(*a))
    base, deltas, w, total = _case(3, (3 * CHUNK + 1,), 17, "float32", "int")
    assert _sha(weighted_mean(base, deltas, w, total)) == _sha(_reference(base, deltas, w, total))
    assert len(calls) == 1


def test_weighted_mean_never_reads_a_tensor_without_data_in_memory():
    """A tensor whose values are not in this process's memory (here `meta`, as a GPU's would
    be) is refused by torch, never handed to the compiled loop as an address."""
    base, deltas, w, total = _case(0, (7,), 2, "float32", "int")
    with pytest.raises((NotImplementedError, RuntimeError, TypeError)):
        weighted_mean(base, [deltas[0], torch.empty(7, device="meta")], w, total)
