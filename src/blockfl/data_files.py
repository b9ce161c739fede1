"""One device's own data, read from a file: `.npz` (arrays ``x`` and ``y``), `.csv` (a header
row; the label column named, every other column a feature), `.safetensors` (tensors ``x`` and
``y``), or a folder of images with one sub-folder per class (Pillow). And the other way round:
per-device files written from a data set (`blockfl data split`).

Every unreadable, empty or ill-shaped file is a `DataFileError`: one line naming the file.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from blockfl.dataset import Dataset, Kind

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
#: the formats `write_data_file` writes, by suffix
FORMATS = ("npz", "csv", "safetensors")


class DataFileError(ValueError):
    """A data file that cannot be a device's data (the message names the file)."""


def read_data_file(path: Path, label: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """The samples ``x`` (N, ...) and targets ``y`` (N,) of `path`; `label` names the label
    column of a CSV file. Class folders give labels 0..C-1 in the sorted order of their
    names."""
    path = Path(path)
    if path.is_dir():
        x, y = _images(path)
    elif not path.is_file():
        raise DataFileError(f"{path}: no such data file")
    else:
        readers = {".npz": _npz, ".csv": lambda p: _csv(p, label),
                   ".safetensors": _safetensors}
        reader = readers.get(path.suffix.lower())
        if reader is None:
            raise DataFileError(f"{path}: unknown data format {path.suffix!r}: .npz, .csv, "
                                ".safetensors or a folder of class folders of images")
        try:
            x, y = reader(path)
        except DataFileError:
            raise
        except Exception as exc:  # a corrupt file: whatever its reader raises
            raise DataFileError(f"{path}: cannot read it: {type(exc).__name__}: {exc}") from None
    if x.ndim < 1 or y.ndim != 1 or len(x) != len(y):
        raise DataFileError(f"{path}: x has shape {x.shape} and y {y.shape}: need x (N, ...) "
                            "and y (N,)")
    if len(y) == 0:
        raise DataFileError(f"{path}: holds no samples")
    return x, y


def as_dataset(path: Path, x: np.ndarray, y: np.ndarray, input_shape: Sequence[int],
               n_outputs: int, kind: Kind) -> Dataset:
    """The arrays of `path` as a task's `Dataset`: each sample reshaped to `input_shape` (a
    flat row of as many values fits), labels checked to be classes 0..n_outputs-1."""
    size = int(np.prod(input_shape))
    if int(np.prod(x.shape[1:])) != size:
        raise DataFileError(f"{path}: samples of shape {tuple(x.shape[1:])}, the task's "
                            f"inputs are {tuple(input_shape)} ({size} values)")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise DataFileError(f"{path}: x holds non-numeric, NaN or infinite values")
    features = torch.as_tensor(x.astype(np.float32).reshape(len(x), *input_shape))
    if kind == "classification":
        if not np.issubdtype(y.dtype, np.number) or np.any(y != np.round(y)):
            raise DataFileError(f"{path}: labels must be whole numbers")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= n_outputs:
            raise DataFileError(f"{path}: label {low if low < 0 else high} is out of range: the "
                                f"task has classes 0..{n_outputs - 1}")
        targets = torch.as_tensor(y.astype(np.int64))
    else:
        targets = torch.as_tensor(y.astype(np.float32))
    return Dataset(features, targets, tuple(input_shape), n_outputs, kind)


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("x", "y") if k not in data.files]
        if missing:
            raise DataFileError(f"{path}: no array {' or '.join(missing)} (it holds "
                                f"{sorted(data.files)}); need x and y")
        return data["x"], data["y"]


def _safetensors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from safetensors.numpy import load

    data = load(path.read_bytes())
    missing = [k for k in ("x", "y") if k not in data]
    if missing:
        raise DataFileError(f"{path}: no tensor {' or '.join(missing)} (it holds "
                            f"{sorted(data)}); need x and y")
    return data["x"], data["y"]


def _csv(path: Path, label: str) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataFileError(f"{path}: empty file")
    header, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if r]
    if label not in header:
        raise DataFileError(f"{path}: no label column {label!r} (columns: "
                            f"{', '.join(header[:8])}{', ...' if len(header) > 8 else ''})")
    column = header.index(label)
    try:
        values = np.array(body, dtype=np.float64) if body else np.zeros((0, len(header)))
    except ValueError as exc:
        raise DataFileError(f"{path}: not a table of numbers: {exc}") from None
    if values.ndim != 2 or values.shape[1] != len(header):
        raise DataFileError(f"{path}: rows of unequal length (the header has {len(header)} "
                            "columns)")
    return np.delete(values, column, axis=1), values[:, column]


def _images(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        from PIL import Image
    except ImportError:
        raise DataFileError(f"{folder}: a folder of images needs Pillow: pip install pillow") \
            from None
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataFileError(f"{folder}: no class folders (one sub-folder of images per class)")
    images, labels = [], []
    for index, sub in enumerate(classes):
        for file in sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(file) as image:
                    images.append(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)
            except OSError as exc:
                raise DataFileError(f"{file}: not an image: {exc}") from None
            labels.append(index)
    if len({i.shape for i in images}) > 1:
        raise DataFileError(f"{folder}: images of different sizes")
    if not images:
        return np.zeros((0, 1)), np.zeros(0)
    return np.stack(images)[:, None], np.asarray(labels, dtype=np.int64)


def write_data_file(path: Path, data: Dataset, label: str = "label") -> Path:
    """Write `data` to `path` in the format of its suffix (see `FORMATS`); CSV rows hold the
    flattened sample then the label column `label`."""
    x = data.x.reshape(len(data), -1).numpy()
    y = data.y.numpy()
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "npz":
        np.savez(path, x=data.x.numpy(), y=y)
    elif suffix == "safetensors":
        from safetensors.numpy import save_file

        save_file({"x": np.ascontiguousarray(data.x.numpy()), "y": y}, str(path))
    elif suffix == "csv":
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([*(f"x{i}" for i in range(x.shape[1])), label])
            for row, target in zip(x.tolist(), y.tolist(), strict=True):
                writer.writerow([*(repr(v) for v in row), target])
    else:
        raise ValueError(f"{path}: unknown format {suffix!r}: {', '.join(FORMATS)}")
    return path
