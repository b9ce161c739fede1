"""The built-in tasks: the `[data]` set, the `[model]` of `blockfl.models` and the `[training]`
algorithm, as one `blockfl.task.Task` (named ``builtin``).

Devices training the linear/ReLU models with SGD run stacked (`train_many`, the fast path of
`simulate`), with the bits each device gets alone. With `[privacy] mode = "dp_sgd"` every
device trains alone with Opacus's DP-SGD (`blockfl.devices.training_dp`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from blockfl.config import Config, DataConfig, PrivacyConfig, TrainingConfig
from blockfl.devices.data import (
    Dataset,
    load_digits,
    load_mnist_idx,
    synthetic_blobs,
    synthetic_linear,
)
from blockfl.devices.training import LocalUpdate, evaluate, train_svrg_linear
from blockfl.devices.training_batched import train_local, train_many
from blockfl.devices.training_dp import train_dp_sgd
from blockfl.models import MODELS, initial_state, model_spec
from blockfl.task import TrainingJob, TrainResult, read_data
from blockfl.tensors import StateDict


def _mnist(data: DataConfig, seed: int) -> Dataset:
    if not data.mnist_path:
        raise ValueError("dataset mnist needs data.mnist_path (a folder of IDX files)")
    return load_mnist_idx(data.mnist_path)


#: the data sets by `data.dataset`, each made from the [data] section and the run's seed
DATASETS: dict[str, Callable[[DataConfig, int], Dataset]] = {
    "digits": lambda data, seed: load_digits(),
    "synthetic": lambda data, seed: synthetic_linear(
        data.synthetic_samples, data.synthetic_dim, data.synthetic_noise, seed),
    "blobs": lambda data, seed: synthetic_blobs(data.synthetic_samples, data.synthetic_dim,
                                                seed),
    "mnist": _mnist,
}


@dataclass(frozen=True)
class Algorithm:
    """A local training algorithm: one device, and (optionally) many stacked."""

    one: Callable[[str, StateDict, Dataset, TrainingConfig, int], LocalUpdate]
    many: Callable[[str, StateDict, Sequence[TrainingJob], TrainingConfig],
                   list[LocalUpdate]] | None = None


def _sgd(model: str, state: StateDict, data: Dataset, training: TrainingConfig,
         seed: int) -> LocalUpdate:
    return train_local(model, state, data, training, seed)


def _sgd_many(model: str, state: StateDict, jobs: Sequence[TrainingJob],
              training: TrainingConfig) -> list[LocalUpdate]:
    return train_many(model, state, jobs, training, task=jobs[0].data.task)


def _svrg(model: str, state: StateDict, data: Dataset, training: TrainingConfig,
          seed: int) -> LocalUpdate:
    if model != "linreg":
        raise ValueError(f"training algorithm svrg trains model linreg, not {model!r}")
    return train_svrg_linear(state, data.x, data.y, training, seed=seed)


#: the training algorithms by `training.algorithm`
ALGORITHMS = {"sgd": Algorithm(_sgd, _sgd_many), "svrg": Algorithm(_svrg)}


def _dp_sgd(privacy: PrivacyConfig) -> Algorithm:
    """SGD with Opacus's DP-SGD of `privacy`, device by device."""
    return Algorithm(lambda model, state, data, training, seed:
                     train_dp_sgd(model, state, data, training, privacy, seed))


def _known(kind: str, name: str, known: dict) -> None:
    if name not in known:
        raise ValueError(f"unknown {kind} {name!r}: {', '.join(known)}")


class BuiltinTask:
    """The task of a config's `[data]`, `[model]` and `[training]` sections (and `[privacy]`'s
    DP-SGD: `dp_sgd` says the task trains with it)."""

    dp_sgd = True

    def __init__(self, config: Config) -> None:
        _known("dataset", config.data.dataset, DATASETS)
        _known("model", config.model.name, MODELS)
        _known("training algorithm", config.training.algorithm, ALGORITHMS)
        self.config = config
        self.model = config.model.name
        self.algorithm = ALGORITHMS[config.training.algorithm]
        if config.privacy.mode == "dp_sgd":
            if config.training.algorithm != "sgd":
                raise ValueError("privacy.mode = \"dp_sgd\" trains with training.algorithm = "
                                 f"\"sgd\", not {config.training.algorithm!r}")
            self.algorithm = _dp_sgd(config.privacy)
        self.name = f"builtin:{config.data.dataset}/{self.model}"

    @cached_property
    def _data(self) -> Dataset:
        data = DATASETS[self.config.data.dataset](self.config.data, self.config.run.seed)
        if data.task == "regression" and self.model != "linreg":
            raise ValueError("the synthetic regression task uses model linreg")
        return data

    @property
    def metrics(self) -> tuple[str, ...]:
        """accuracy and loss (classification), or mse (regression)."""
        return ("accuracy", "loss") if self._data.task == "classification" else ("mse",)

    def load_data(self, path: Path) -> Dataset:
        """A device's own data file, shaped like the configured data set's samples."""
        like = self._data
        return read_data(path, like.input_shape, like.n_outputs, like.task,
                         self.config.data.label)

    def dataset(self, seed: int) -> Dataset:
        """The configured data set (synthetic ones drawn with the run's seed)."""
        return self._data

    def initial_state(self, seed: int) -> StateDict:
        """Seeded torch initialisation of the model for the data set's inputs and classes."""
        data = self._data
        return initial_state(self.model, data.input_shape, data.n_outputs, seed)

    def train(self, state: StateDict, data: Dataset, training: TrainingConfig,
              seed: int) -> TrainResult:
        """The configured algorithm on one device."""
        return _result(self.algorithm.one(self.model, state, data, training, seed))

    def train_many(self, state: StateDict, jobs: Sequence[TrainingJob],
                   training: TrainingConfig) -> list[TrainResult]:
        """Many devices at once (stacked SGD), else one by one: the same bits either way."""
        if self.algorithm.many is None:
            return [self.train(state, j.data, training, j.seed) for j in jobs]
        return [_result(u) for u in self.algorithm.many(self.model, state, jobs, training)]

    @cached_property
    def _spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return model_spec(self.initial_state(0))

    def evaluate(self, state: StateDict, data: Dataset) -> dict[str, float]:
        """Accuracy and mean cross-entropy, or the MSE."""
        spec = model_spec(state)
        if spec != self._spec:
            differ = sorted(k for k in spec.keys() | self._spec.keys()
                            if spec.get(k) != self._spec.get(k))
            raise ValueError(f"the model does not fit model {self.model!r} on inputs of shape "
                             f"{data.input_shape}: its tensors {differ} differ")
        return evaluate(self.model, state, data.x, data.y, data.task)


def _result(update: LocalUpdate) -> TrainResult:
    return TrainResult(update.n_samples, delta=update.delta, metrics={"loss": update.final_loss})
