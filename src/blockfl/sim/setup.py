"""Assemble an experiment from its configuration: data, shards, the initial model, devices."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blockfl.config import Config
from blockfl.devices.behaviours import attackers, behaviour
from blockfl.devices.data import Dataset, partition_dirichlet, partition_iid, train_test_split
from blockfl.devices.device import Device, device_seed
from blockfl.keys import derived_key
from blockfl.protocol import Genesis
from blockfl.task import Task, TaskError, checked_initial_state, load_device_data, load_task
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

    @property
    def genesis(self) -> Genesis:
        """The task's name, the genesis model hash and tensor spec (for the protocol spec)."""
        return Genesis.of(self.task.name, self.initial)


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
    shards, test = task_data(config, task)
    return Experiment(task, shards, test, checked_initial_state(task, seed))


def task_data(config: Config, task: Task) -> tuple[list[Dataset], Dataset]:
    """The devices' shards and the test set: the task's own `partitions`, else its data set
    split as the config says (`split_dataset`)."""
    seed = config.run.seed
    own = getattr(task, "partitions", None)
    if own is not None:
        shards, test = own(seed)
        if len(shards) != config.network.devices:
            raise TaskError(f"task {task.name!r}: partitions gave {len(shards)} shards for "
                            f"{config.network.devices} devices")
        return shards, test
    return split_dataset(config, task.dataset(seed))


def test_data(config: Config, path: Path | None = None) -> tuple[Task, Dataset]:
    """The config's task and what evaluators measure global models on: the data file `path`
    (read by the task), else the config's test split."""
    if path is not None:
        task = load_task(config)
        return task, load_device_data(task, path)
    experiment = build_experiment(config)
    return experiment.task, experiment.test


def task_genesis(config: Config) -> tuple[Genesis, StateDict]:
    """The genesis of the config's task and its initial model (deterministic from the seed),
    without loading or splitting any data the initialisation does not need."""
    return genesis_of(load_task(config), config.run.seed)


def genesis_of(task: Task, seed: int) -> tuple[Genesis, StateDict]:
    """The genesis of `task` and its initial model for `seed`."""
    state = checked_initial_state(task, seed)
    return Genesis.of(task.name, state), state


def build_devices(config: Config, experiment: Experiment) -> list[Device]:
    """One device per shard, with its derived key, seed and behaviour (honest, or the attack
    of `[attack] attackers`), holding the genesis model."""
    seed, attack, n = config.run.seed, config.attack, config.network.devices
    chosen = set(attackers(n, attack.attackers, seed))
    return [
        Device(derived_key("device", i, seed), shard, experiment.task, config.training,
               experiment.initial, seed=device_seed(seed, i),
               behaviour=behaviour(attack.behaviour, attack, n, device_seed(seed, i))
               if i in chosen else None, privacy=config.privacy.for_training(config.training))
        for i, shard in enumerate(experiment.shards)
    ]
