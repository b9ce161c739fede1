"""A training loop the built-ins lack: FedProx (Li et al., 2020) with Adam on the digits.

Each device minimises its loss plus the proximal term (mu / 2) * ||w - w_global||^2, which
keeps its model near the global one on non-IID data; the optimizer is Adam, created afresh
each round. The model is a small MLP with dropout (train and eval modes differ).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from blockfl.task import Dataset, TrainResult, read_data

MU = 0.01  # the proximal coefficient


class FedProxDigits:
    name = "fedprox-digits"
    metrics = ("accuracy", "loss")

    def _model(self) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1),
                             nn.Linear(64, 10))

    def initial_state(self, seed: int) -> dict[str, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return {k: v.clone() for k, v in self._model().state_dict().items()}

    def dataset(self, seed: int) -> Dataset:
        x, y = load_digits(return_X_y=True)
        return Dataset(torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8),
                       torch.tensor(y), (1, 8, 8), 10, "classification")

    def load_data(self, path) -> Dataset:
        return read_data(path, (1, 8, 8), 10, "classification")

    def train(self, state, data, training, seed) -> TrainResult:
        model = self._model()
        model.load_state_dict(state)
        anchor = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        order = torch.Generator().manual_seed(seed)
        model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # dropout masks: reproducible for the round's seed
            for _ in range(training.epochs):
                for idx in torch.randperm(len(data), generator=order).split(training.batch_size):
                    opt.zero_grad()
                    loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
                    prox = sum(((p - a) ** 2).sum()
                               for p, a in zip(model.parameters(), anchor, strict=True))
                    (loss + MU / 2 * prox).backward()
                    opt.step()
        return TrainResult(len(data), weights=model.state_dict(), metrics={"loss": loss.item()})

    @torch.no_grad()
    def evaluate(self, state, data) -> dict[str, float]:
        model = self._model()
        model.load_state_dict(state)
        model.eval()
        out = model(data.x)
        return {"accuracy": float((out.argmax(1) == data.y).float().mean()),
                "loss": float(F.cross_entropy(out, data.y))}


TASK = FedProxDigits()
