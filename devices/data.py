"""Datasets held by devices, and how they are split across devices."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from blockfl.dataset import Dataset


def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 samples, 10 classes), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = torch.as_tensor(bunch.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    return Dataset(x, y, (1, 8, 8), 10, "classification")


def synthetic_linear(n_samples: int, dim: int, noise: float, seed: int) -> Dataset:
    """Linear regression data: ``y = x @ w + b + noise * eps`` with x, w, eps ~ N(0, 1),
    b ~ N(0, 1); the best achievable MSE is ``noise**2``."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(dim)
    b = rng.standard_normal()
    x = rng.standard_normal((n_samples, dim))
    y = x @ w + b + noise * rng.standard_normal(n_samples)
    return Dataset(
        torch.as_tensor(x, dtype=torch.float32),
        torch.as_tensor(y, dtype=torch.float32),
        (dim,),
        1,
        "regression",
    )


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def synthetic_blobs(n_samples: int, dim: int, seed: int, classes: int = 10) -> Dataset:
    """Classification data of any size: ``classes`` overlapping Gaussian clusters in ``dim``
    dimensions (scikit-learn's ``make_blobs``, centers in [-10, 10], standard deviation 5),
    for more devices than the digits set has samples."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples, n_features=dim, centers=classes, cluster_std=5.0,
                      random_state=seed)
    return Dataset(torch.as_tensor(x / 10.0, dtype=torch.float32),
                   torch.as_tensor(y, dtype=torch.int64), (dim,), classes, "classification")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into an array."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: {len(raw) - header} data bytes, expected {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"MNIST file {stem}[.gz] not found in {folder}; download the four IDX files "
        "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte, optionally .gz) into that folder"
    )


def load_mnist_idx(path: str | Path, split: Literal["train", "test"] = "train") -> Dataset:
    """MNIST from the standard IDX files in folder ``path``; pixels scaled to [0, 1]."""
    folder = Path(path)
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(_find_idx(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{folder}: inconsistent MNIST shapes {images.shape}, {labels.shape}")
    _, height, width = images.shape
    x = torch.as_tensor(images.astype(np.float32) / 255.0).reshape(-1, 1, height, width)
    y = torch.as_tensor(labels.astype(np.int64))
    return Dataset(x, y, (1, height, width), 10, "classification")


def train_test_split(dataset: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Random split into (train, test); the test part has ``round(test_fraction * N)`` items."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    perm = np.random.default_rng(seed).permutation(len(dataset))
    n_test = round(test_fraction * len(dataset))
    return dataset.subset(perm[n_test:]), dataset.subset(perm[:n_test])


def _check_partition_args(n_items: int, n_devices: int, min_size: int) -> None:
    if n_devices < 1 or min_size < 1:
        raise ValueError("n_devices and min_size must be >= 1")
    if n_items < n_devices * min_size:
        raise ValueError(f"{n_items} items cannot give {n_devices} devices {min_size} each")


def partition_iid(
    n_items: int, n_devices: int, seed: int, size_skew: float = 0.5, min_size: int = 1
) -> list[np.ndarray]:
    """Shuffle ``range(n_items)`` and cut it into ``n_devices`` parts of unequal size.

    Each device gets ``min_size`` items plus a share of the rest proportional to a weight
    drawn from LogNormal(0, size_skew); ``size_skew=0`` gives (nearly) equal sizes. The parts
    cover every index exactly once.
    """
    _check_partition_args(n_items, n_devices, min_size)
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, size_skew, n_devices)
    spare = n_items - n_devices * min_size
    shares = spare * weights / weights.sum()
    extra = np.floor(shares).astype(np.int64)
    leftover = spare - int(extra.sum())
    extra[np.argsort(extra - shares, kind="stable")[:leftover]] += 1
    sizes = min_size + extra
    return np.split(rng.permutation(n_items), np.cumsum(sizes)[:-1])


def partition_dirichlet(
    labels: np.ndarray | torch.Tensor, n_devices: int, alpha: float, seed: int, min_size: int = 1
) -> list[np.ndarray]:
    """Label-skewed non-IID split: each class is spread over devices with Dir(alpha) weights.

    Small ``alpha`` gives each device few classes. Devices left with fewer than ``min_size``
    items take items from the currently largest device, so every device is non-empty.
    Returns sorted index arrays covering every index exactly once.
    """
    labels = np.asarray(labels)
    _check_partition_args(len(labels), n_devices, min_size)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(n_devices)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cuts = (np.cumsum(rng.dirichlet(np.full(n_devices, alpha))) * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, cuts[:-1]), strict=True):
            part.extend(chunk.tolist())
    for part in parts:
        while len(part) < min_size:
            donor = max(parts, key=len)
            part.append(donor.pop(int(rng.integers(len(donor)))))
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
