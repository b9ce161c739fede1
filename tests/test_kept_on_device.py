"""Tensors kept on the device (`Task.kept_on_device`): a BatchNorm model trains through
`simulate`, its integer counter never in the genesis spec, a global model or a sent update, while
each device's own counter counts its own batches; an unmarked integer tensor is one line."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from blockfl.cli import main
from blockfl.config import TaskConfig
from blockfl.devices import device as device_module
from blockfl.sim.runner import run_experiment
from blockfl.task import Dataset, TrainResult
from tests.conftest import small_config

COUNTER = "1.num_batches_tracked"


class BatchNormDigits:
    """An MLP with BatchNorm on the digits, trained with SGD in its own loop."""

    name = "bn-digits"
    metrics = ("accuracy",)
    kept_on_device = ("*.num_batches_tracked",)

    @staticmethod
    def _model() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))

    def initial_state(self, seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return {k: v.clone() for k, v in self._model().state_dict().items()}

    def dataset(self, seed):
        x, y = load_digits(return_X_y=True)
        return Dataset(torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y), (64,), 10,
                       "classification")

    def train(self, state, data, training, seed):
        model = self._model()
        model.load_state_dict(state)  # the global model and this device's counter: all of it
        opt = torch.optim.SGD(model.parameters(), lr=training.lr)
        order = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(training.epochs):
            for idx in torch.randperm(len(data), generator=order).split(training.batch_size):
                if len(idx) > 1:  # BatchNorm needs two samples
                    opt.zero_grad()
                    F.cross_entropy(model(data.x[idx]), data.y[idx]).backward()
                    opt.step()
        return TrainResult(len(data), weights=model.state_dict())

    @torch.no_grad()
    def evaluate(self, state, data):
        model = self._model()
        model.load_state_dict(state, strict=False)  # a global model has no device's counter
        model.eval()
        return {"accuracy": float((model(data.x).argmax(1) == data.y).float().mean())}


TASK = BatchNormDigits()


class Unmarked(BatchNormDigits):
    kept_on_device = ()


UNMARKED = Unmarked()


def _config(tmp_path, module: str):
    config = small_config(tmp_path, network={"devices": 4, "miners": 2},
                          training={"epochs": 1, "lr": 0.3, "batch_size": 16})
    return replace(config, task=TaskConfig(module=module))


@pytest.mark.parametrize("batched", [True, False])  # devices trained together or one by one
def test_a_batchnorm_model_trains_and_its_counter_stays_on_each_device(tmp_path, monkeypatch,
                                                                       batched):
    sent: list[set[str]] = []
    encode = device_module.encode
    monkeypatch.setattr(device_module, "encode",
                        lambda state: sent.append(set(state)) or encode(state))
    config = _config(tmp_path, "tests.test_kept_on_device:TASK")
    summary = run_experiment(replace(config, run=replace(config.run, batch_training=batched)))
    assert summary.hashes_agree and summary.rewards_match
    assert summary.rounds[-1].metrics["accuracy"] > 0.85
    simulation = summary.simulation
    federated = set(simulation.spec.genesis.tensors)
    assert COUNTER not in federated and "1.running_mean" in federated  # floats are federated
    assert len(sent) == 4 * 3 and all(names == federated for names in sent)
    for device in simulation.devices:
        assert set(device.global_state) == federated  # each committed global model
        batches = len(range(0, len(device.shard), 16))
        assert device.kept[COUNTER].dtype == torch.int64
        assert int(device.kept[COUNTER]) == 3 * batches  # its own batches, never averaged


def test_an_unmarked_integer_tensor_is_one_line(tmp_path, capsys):
    code = main(["simulate", "--task", "tests.test_kept_on_device:UNMARKED", "--ledger", "local",
                 "--rounds", "1", "--run-out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert (f"task 'bn-digits': initial_state tensor '{COUNTER}' is int64: only floating-point "
            "tensors are federated; name it in the task's kept_on_device") in err


@pytest.mark.parametrize("returned", ["weights", "delta"])
def test_the_counter_is_taken_back_from_weights_or_a_delta(returned):
    from blockfl.task import checked_update, split_state

    state, kept = split_state(TASK, TASK.initial_state(0))
    new = {k: v + 1 for k, v in (state | kept).items()}
    result = (TrainResult(5, weights=new) if returned == "weights" else
              TrainResult(5, delta={k: torch.ones_like(v) for k, v in new.items()}))
    local = checked_update(TASK, state, result, 0.1, kept=kept)
    assert set(local.delta) == set(state) and int(local.kept[COUNTER]) == 1


FLOWER_BN_CLIENT = '''
"""A Flower NumPyClient whose model has BatchNorm, written as Flower's quickstart writes one."""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from flwr.client import NumPyClient
from sklearn.datasets import load_digits
from torch import nn


def net():
    return nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))


def set_weights(model, parameters):
    params = zip(model.state_dict().keys(), parameters, strict=True)
    model.load_state_dict(OrderedDict({k: torch.tensor(v) for k, v in params}), strict=True)


class Client(NumPyClient):
    def __init__(self, pid, n):
        x, y = load_digits(return_X_y=True)
        self.x = torch.tensor(x[pid::n] / 16.0, dtype=torch.float32)
        self.y = torch.tensor(y[pid::n])
        self.model = net()

    def get_parameters(self, config):
        return [v.numpy() for v in self.model.state_dict().values()]

    def fit(self, parameters, config):
        set_weights(self.model, parameters)
        opt = torch.optim.SGD(self.model.parameters(), lr=config["lr"])
        self.model.train()
        for idx in torch.arange(len(self.y)).split(16):
            opt.zero_grad()
            F.cross_entropy(self.model(self.x[idx]), self.y[idx]).backward()
            opt.step()
        return self.get_parameters({}), len(self.y), {}

    def evaluate(self, parameters, config):
        set_weights(self.model, parameters)
        self.model.eval()
        with torch.no_grad():
            out = self.model(self.x)
        return (float(F.cross_entropy(out, self.y)), len(self.y),
                {"accuracy": float((out.argmax(1) == self.y).float().mean())})


def client_fn(context):
    c = context.node_config
    return Client(int(c["partition-id"]), int(c["num-partitions"])).to_client()
'''


def test_a_flower_client_with_batchnorm_keeps_its_counter_on_each_device(tmp_path, monkeypatch):
    pytest.importorskip("flwr")
    (tmp_path / "bn_client.py").write_text(FLOWER_BN_CLIENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = small_config(tmp_path, network={"devices": 3, "miners": 2}, training={"lr": 0.3})
    summary = run_experiment(replace(config, task=TaskConfig(
        module="flower", flower_client="bn_client:client_fn")))
    assert summary.hashes_agree and summary.rounds[-1].metrics["accuracy"] > 0.8
    devices = summary.simulation.devices
    counter = "param_006"  # the BatchNorm's num_batches_tracked (after weight, bias, mean, var)
    assert counter not in summary.simulation.spec.genesis.tensors
    assert [int(d.kept[counter]) for d in devices] == [3 * len(range(0, 599, 16))] * 3
