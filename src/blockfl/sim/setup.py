"""Assemble an experiment from its configuration: data, shards, the initial model, devices."""

from __future__ import annotations

from dataclasses import dataclass

from blockfl.config import Config
from blockfl.devices.behaviours import attackers, behaviour
from blockfl.devices.data import Dataset, partition_dirichlet, partition_iid, train_test_split
from blockfl.devices.device import Device, device_seed
from blockfl.keys import derived_key
from blockfl.task import Task, checked_initial_state, load_task
from blockfl.tensors import StateDict, tensor_hash


@dataclass(frozen=True)
class Experiment:
    """The task, the data of every device, the held-out test set and the genesis model."""

    task: Task
    shards: list[Dataset]
    test: Dataset
    initial: StateDict

    @property
    def genesis_hash(self) -> bytes:
        """Hash of the initial global model (the contract's genesis model hash)."""
        return tensor_hash(self.initial)


def split_dataset(config: Config, dataset: Dataset) -> tuple[list[Dataset], Dataset]:
    """A test set and one shard per device (`[data]` test_fraction, partition)."""
    seed = config.run.seed
    train, test = train_test_split(dataset, config.data.test_fraction, seed)
    n = config.network.devices
    if config.data.partition == "iid":
        parts = partition_iid(len(train), n, seed, size_skew=config.data.size_skew)
    elif config.data.partition == "dirichlet":
        if train.task != "classification":
            raise ValueError("a Dirichlet partition needs class labels")
        parts = partition_dirichlet(train.y.numpy(), n, config.data.alpha, seed)
    else:
        raise ValueError(f"unknown partition {config.data.partition!r}: iid or dirichlet")
    return [train.subset(p) for p in parts], test


def build_experiment(config: Config) -> Experiment:
    """The config's task, its data split into a test set and one shard per device, and the
    initial model."""
    task = load_task(config)
    seed = config.run.seed
    shards, test = split_dataset(config, task.dataset(seed))
    return Experiment(task, shards, test, checked_initial_state(task, seed))


def test_data(config: Config) -> tuple[Task, Dataset]:
    """The config's task and its test split (what evaluators measure global models on)."""
    experiment = build_experiment(config)
    return experiment.task, experiment.test


def genesis_model_hash(config: Config) -> bytes:
    """The genesis model hash of a configuration (deterministic from the seed)."""
    return build_experiment(config).genesis_hash


def build_devices(config: Config, experiment: Experiment) -> list[Device]:
    """One device per shard, with its derived key, seed and behaviour (honest, or the attack
    of `[attack] attackers`), holding the genesis model."""
    seed, attack, n = config.run.seed, config.attack, config.network.devices
    chosen = set(attackers(n, attack.attackers, seed))
    return [
        Device(derived_key("device", i, seed), shard, experiment.task, config.training,
               experiment.initial, seed=device_seed(seed, i),
               behaviour=behaviour(attack.behaviour, attack, n, device_seed(seed, i))
               if i in chosen else None)
        for i, shard in enumerate(experiment.shards)
    ]
