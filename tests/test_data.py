import gzip
import struct

import numpy as np
import pytest
import torch

from blockfl.devices.data import (
    load_digits,
    load_mnist_idx,
    partition_dirichlet,
    partition_iid,
    synthetic_linear,
    train_test_split,
)


def _assert_cover(parts: list[np.ndarray], n_items: int) -> None:
    merged = np.concatenate(parts)
    assert len(merged) == n_items
    assert np.array_equal(np.sort(merged), np.arange(n_items))


def test_load_digits():
    ds = load_digits()
    assert ds.x.shape == (1797, 1, 8, 8) and ds.x.dtype == torch.float32
    assert ds.input_shape == (1, 8, 8) and ds.n_outputs == 10 and ds.task == "classification"
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert set(ds.y.tolist()) == set(range(10))


def test_synthetic_linear_is_seeded():
    a, b = synthetic_linear(50, 3, 0.1, seed=4), synthetic_linear(50, 3, 0.1, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.x.shape == (50, 3) and a.y.shape == (50,) and a.task == "regression"
    assert not torch.equal(a.y, synthetic_linear(50, 3, 0.1, seed=5).y)


def test_train_test_split_is_disjoint_and_complete():
    ds = synthetic_linear(100, 2, 0.0, seed=0)
    train, test = train_test_split(ds, 0.25, seed=1)
    assert len(train) == 75 and len(test) == 25
    rows = {tuple(r) for r in torch.cat([train.x, test.x]).tolist()}
    assert rows == {tuple(r) for r in ds.x.tolist()}


def _write_idx(path, array: np.ndarray, code: int, compress: bool) -> None:
    data = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_idx(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, 0x08, compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, 0x08, compress)
    ds = load_mnist_idx(tmp_path, split="test")
    assert ds.x.shape == (5, 1, 28, 28) and ds.input_shape == (1, 28, 28)
    assert torch.allclose(ds.x[2, 0], torch.as_tensor(images[2] / 255.0, dtype=torch.float32))
    assert ds.y.tolist() == [3, 1, 4, 1, 5]


def test_load_mnist_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist_idx(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 5)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"junk")
    with pytest.raises(ValueError):
        load_mnist_idx(tmp_path)


def test_partition_iid_covers_with_unequal_sizes():
    parts = partition_iid(1000, 10, seed=0, size_skew=1.0, min_size=20)
    _assert_cover(parts, 1000)
    sizes = [len(p) for p in parts]
    assert min(sizes) >= 20 and max(sizes) > 2 * min(sizes)
    again = partition_iid(1000, 10, seed=0, size_skew=1.0, min_size=20)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_partition_iid_equal_without_skew():
    sizes = [len(p) for p in partition_iid(1003, 10, seed=0, size_skew=0.0)]
    assert max(sizes) - min(sizes) <= 1


def test_partition_iid_rejects_too_few_items():
    with pytest.raises(ValueError):
        partition_iid(5, 10, seed=0)


def test_partition_dirichlet_skew_and_cover():
    labels = np.repeat(np.arange(10), 100)
    skewed = partition_dirichlet(labels, 20, alpha=0.05, seed=0)
    iid_like = partition_dirichlet(labels, 20, alpha=100.0, seed=0)
    for parts in (skewed, iid_like):
        _assert_cover(parts, len(labels))
        assert all(len(p) >= 1 for p in parts)

    def mean_dominant_share(parts):
        return np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])

    assert mean_dominant_share(skewed) > 0.5
    assert mean_dominant_share(iid_like) < 0.3


def test_partition_dirichlet_fills_empty_devices():
    labels = np.zeros(30, dtype=np.int64)
    parts = partition_dirichlet(labels, 25, alpha=0.01, seed=3)
    _assert_cover(parts, 30)
    assert all(len(p) >= 1 for p in parts)
