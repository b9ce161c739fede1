"""A tabular task read from per-device CSV files: scikit-learn's breast-cancer data (30
features, 2 classes), a logistic-regression model, plain SGD.

`dataset` is the whole table (for `simulate` and `blockfl data split`); `load_data` reads one
device's CSV file (a header row, the label in column `label`), standardised with the same
fixed statistics every device uses.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer
from torch import nn

from blockfl.task import Dataset, TrainResult, read_data

FEATURES, CLASSES = 30, 2


def _table() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    return x, y


class BreastCancer:
    name = "breast-cancer-csv"
    metrics = ("accuracy", "loss")

    def __init__(self) -> None:
        x, _ = _table()
        self.mean, self.std = x.mean(0), x.std(0)  # fixed: part of the task, not of a device

    def _model(self) -> nn.Module:
        return nn.Linear(FEATURES, CLASSES)

    def initial_state(self, seed: int) -> dict[str, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return {k: v.clone() for k, v in self._model().state_dict().items()}

    def dataset(self, seed: int) -> Dataset:
        """The raw table: devices standardise what they read (`load_data`, `train`)."""
        x, y = _table()
        return Dataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y), (FEATURES,),
                       CLASSES, "classification")

    def load_data(self, path) -> Dataset:
        return read_data(path, (FEATURES,), CLASSES, "classification")

    def _inputs(self, data: Dataset) -> torch.Tensor:
        return (data.x - torch.tensor(self.mean, dtype=torch.float32)) / torch.tensor(
            self.std, dtype=torch.float32)

    def train(self, state, data, training, seed) -> TrainResult:
        model = self._model()
        model.load_state_dict(state)
        opt = torch.optim.SGD(model.parameters(), lr=training.lr)
        x, order = self._inputs(data), torch.Generator().manual_seed(seed)
        for _ in range(training.epochs):
            for idx in torch.randperm(len(data), generator=order).split(training.batch_size):
                opt.zero_grad()
                loss = F.cross_entropy(model(x[idx]), data.y[idx])
                loss.backward()
                opt.step()
        return TrainResult(len(data), weights=model.state_dict(), metrics={"loss": loss.item()})

    @torch.no_grad()
    def evaluate(self, state, data) -> dict[str, float]:
        model = self._model()
        model.load_state_dict(state)
        out = model(self._inputs(data))
        return {"accuracy": float((out.argmax(1) == data.y).float().mean()),
                "loss": float(F.cross_entropy(out, data.y))}


TASK = BreastCancer()
