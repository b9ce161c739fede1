import itertools
import random

import pytest
import torch

from blockfl.aggregation import FedAvg, WeightedUpdate, apply_delta
from blockfl.tensors import TensorFormatError, tensor_hash


def _setup(n_updates: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(7, 5, generator=g), "b": torch.randn(7, generator=g)}
    updates = [
        WeightedUpdate(
            device=f"0x{i:040X}",
            delta={
                k: torch.randn(v.shape, generator=g) * 10.0 ** (i % 4 - 2) for k, v in base.items()
            },
            n_samples=int(torch.randint(1, 1000, (1,), generator=g)),
        )
        for i in range(n_updates)
    ]
    return base, updates


def test_fedavg_matches_float64_reference():
    base, updates = _setup()
    result = FedAvg().aggregate(base, updates)
    total = sum(u.n_samples for u in updates)
    for name, b in base.items():
        ref = b.double() + sum(u.n_samples * u.delta[name].double() for u in updates) / total
        assert result[name].dtype == torch.float32
        torch.testing.assert_close(result[name].double(), ref, rtol=1e-6, atol=1e-6)


def test_fedavg_weights_by_sample_count():
    base = {"w": torch.zeros(2)}
    updates = [
        WeightedUpdate("0xaa", {"w": torch.tensor([1.0, 0.0])}, 3),
        WeightedUpdate("0xbb", {"w": torch.tensor([0.0, 1.0])}, 1),
    ]
    assert torch.equal(FedAvg().aggregate(base, updates)["w"], torch.tensor([0.75, 0.25]))


def test_fedavg_bit_identical_under_permutation():
    base, updates = _setup(n_updates=5)
    expected = tensor_hash(FedAvg().aggregate(base, updates))
    for perm in itertools.permutations(updates):
        assert tensor_hash(FedAvg().aggregate(base, list(perm))) == expected


def test_fedavg_bit_identical_across_thread_counts():
    g = torch.Generator().manual_seed(1)
    base = {"w": torch.randn(300_000, generator=g)}
    updates = [
        WeightedUpdate(f"0x{i:02x}", {"w": torch.randn(300_000, generator=g)}, i + 1)
        for i in range(8)
    ]
    threads = torch.get_num_threads()
    try:
        hashes = set()
        for n in (1, 2):
            torch.set_num_threads(n)
            shuffled = random.Random(n).sample(updates, len(updates))
            hashes.add(tensor_hash(FedAvg().aggregate(base, shuffled)))
    finally:
        torch.set_num_threads(threads)
    assert len(hashes) == 1


def test_fedavg_device_order_is_case_insensitive():
    base, updates = _setup(n_updates=3)
    lowered = [WeightedUpdate(u.device.lower(), u.delta, u.n_samples) for u in updates]
    assert tensor_hash(FedAvg().aggregate(base, updates)) == tensor_hash(
        FedAvg().aggregate(base, lowered[::-1])
    )


def test_fedavg_rejects_bad_input():
    base, updates = _setup(n_updates=2)
    with pytest.raises(ValueError, match="no updates"):
        FedAvg().aggregate(base, [])
    dup = WeightedUpdate(updates[0].device.lower(), updates[1].delta, 5)
    with pytest.raises(ValueError, match="duplicate"):
        FedAvg().aggregate(base, [updates[0], dup])
    with pytest.raises(ValueError, match="n_samples"):
        FedAvg().aggregate(base, [WeightedUpdate("0x01", updates[0].delta, 0)])
    wrong = WeightedUpdate("0x01", {"w": torch.zeros(7, 5)}, 1)
    with pytest.raises(TensorFormatError) as exc:
        FedAvg().aggregate(base, [wrong])
    assert exc.value.reason == "missing_tensor"


def test_apply_delta():
    base = {"w": torch.tensor([1.0, 2.0])}
    out = apply_delta(base, {"w": torch.tensor([0.5, -2.0])})
    assert torch.equal(out["w"], torch.tensor([1.5, 0.0]))
    with pytest.raises(TensorFormatError):
        apply_delta(base, {"w": torch.zeros(3)})
