"""Assemble an experiment from its configuration: data, shards, the initial model, devices."""

from __future__ import annotations

from dataclasses import dataclass

from blockfl.config import Config
from blockfl.devices.behaviours import attackers, behaviour
from blockfl.devices.data import (
    Dataset,
    load_digits,
    load_mnist_idx,
    partition_dirichlet,
    partition_iid,
    synthetic_blobs,
    synthetic_linear,
    train_test_split,
)
from blockfl.devices.device import Device, device_seed
from blockfl.keys import derived_key
from blockfl.models import initial_state
from blockfl.tensors import StateDict, tensor_hash


@dataclass(frozen=True)
class Experiment:
    """The data of every device, the held-out test set and the genesis model."""

    shards: list[Dataset]
    test: Dataset
    initial: StateDict

    @property
    def genesis_hash(self) -> bytes:
        """Hash of the initial global model (the contract's genesis model hash)."""
        return tensor_hash(self.initial)


def load_dataset(config: Config) -> Dataset:
    """The configured data set."""
    data = config.data
    if data.dataset == "digits":
        return load_digits()
    if data.dataset == "synthetic":
        return synthetic_linear(
            data.synthetic_samples, data.synthetic_dim, data.synthetic_noise, config.run.seed
        )
    if data.dataset == "blobs":
        return synthetic_blobs(data.synthetic_samples, data.synthetic_dim, config.run.seed)
    if data.dataset == "mnist":
        if not data.mnist_path:
            raise ValueError("dataset mnist needs data.mnist_path (a folder of IDX files)")
        return load_mnist_idx(data.mnist_path)
    raise ValueError(f"unknown dataset {data.dataset!r}: digits, synthetic, blobs or mnist")


def build_experiment(config: Config) -> Experiment:
    """Split the data into a test set and one shard per device; build the initial model."""
    dataset = load_dataset(config)
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
    model = config.model.name
    if train.task == "regression" and model != "linreg":
        raise ValueError("the synthetic regression task uses model linreg")
    initial = initial_state(model, train.input_shape, train.n_outputs, seed)
    return Experiment([train.subset(p) for p in parts], test, initial)


def genesis_model_hash(config: Config) -> bytes:
    """The genesis model hash of a configuration (deterministic from the seed)."""
    return build_experiment(config).genesis_hash


def build_devices(config: Config, experiment: Experiment) -> list[Device]:
    """One device per shard, with its derived key, seed and behaviour (honest, or the attack
    of `[attack] attackers`), holding the genesis model."""
    seed, attack, n = config.run.seed, config.attack, config.network.devices
    chosen = set(attackers(n, attack.attackers, seed))
    return [
        Device(derived_key("device", i, seed), shard, config.model.name, config.training,
               experiment.initial, seed=device_seed(seed, i),
               behaviour=behaviour(attack.behaviour, attack, n, device_seed(seed, i))
               if i in chosen else None, privacy=config.privacy)
        for i, shard in enumerate(experiment.shards)
    ]
