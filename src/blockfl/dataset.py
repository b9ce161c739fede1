"""The samples a task trains and evaluates on: `Dataset` (re-exported by `blockfl.task`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Kind = Literal["classification", "regression"]


@dataclass(frozen=True)
class Dataset:
    """Samples ``x`` of shape (N, *input_shape), float32; targets ``y``: int64 class labels
    (classification) or float32 values (regression), shape (N,)."""

    x: torch.Tensor
    y: torch.Tensor
    input_shape: tuple[int, ...]
    n_outputs: int
    task: Kind  # what y holds: class labels or values

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, indices: np.ndarray | torch.Tensor) -> Dataset:
        """The samples at ``indices``, in that order."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        return Dataset(self.x[idx], self.y[idx], self.input_shape, self.n_outputs, self.task)
