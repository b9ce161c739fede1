"""A Flower client written the way Flower's PyTorch quickstart writes one (`Net`, `train`,
`test`, `load_data`, a `NumPyClient`, `client_fn`), on scikit-learn's digits instead of CIFAR-10
(no download). It does not import BlockFL: `blockfl simulate --flower-client
examples.flower_client.client:client_fn` runs it unchanged.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from flwr.client import NumPyClient
from flwr.common import Context
from sklearn.datasets import load_digits
from torch import nn


class Net(nn.Module):
    """A small MLP for 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def load_data(partition_id: int, num_partitions: int):
    """This partition's (train, test) split of the digits: an even, seeded split."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(42).permutation(len(y))
    part = np.array_split(order, num_partitions)[partition_id]
    cut = int(0.8 * len(part))
    to = lambda idx: (torch.tensor(x[idx] / 16.0, dtype=torch.float32), torch.tensor(y[idx]))  # noqa: E731
    return to(part[:cut]), to(part[cut:])


def get_weights(net: nn.Module) -> list[np.ndarray]:
    return [v.cpu().numpy() for _, v in net.state_dict().items()]


def set_weights(net: nn.Module, parameters: list[np.ndarray]) -> None:
    params = zip(net.state_dict().keys(), parameters, strict=True)
    net.load_state_dict(OrderedDict({k: torch.tensor(v) for k, v in params}), strict=True)


def train(net: nn.Module, data, epochs: int, lr: float, batch_size: int, seed: int) -> float:
    x, y = data
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=order).split(batch_size):
            opt.zero_grad()
            loss = F.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return loss.item()


def test(net: nn.Module, data) -> tuple[float, float]:
    x, y = data
    net.eval()
    with torch.no_grad():
        out = net(x)
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())


class FlowerClient(NumPyClient):
    def __init__(self, net: nn.Module, trainset, testset) -> None:
        self.net, self.trainset, self.testset = net, trainset, testset

    def get_parameters(self, config):
        return get_weights(self.net)

    def fit(self, parameters, config):
        set_weights(self.net, parameters)
        loss = train(self.net, self.trainset, int(config.get("epochs", 2)),
                     float(config.get("lr", 0.3)), int(config.get("batch_size", 16)),
                     int(config.get("seed", 0)))
        return get_weights(self.net), len(self.trainset[1]), {"train_loss": loss}

    def evaluate(self, parameters, config):
        set_weights(self.net, parameters)
        loss, accuracy = test(self.net, self.testset)
        return loss, len(self.testset[1]), {"accuracy": accuracy}


def client_fn(context: Context):
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    trainset, testset = load_data(partition_id, num_partitions)
    return FlowerClient(Net(), trainset, testset).to_client()
