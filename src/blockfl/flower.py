"""A Flower `NumPyClient` as a BlockFL task, unchanged: `--flower-client my_app.client:client_fn`.

`client_fn(context)` is called once per device with the `node_config` Flower's simulation gives
(`partition-id`, `num-partitions`), so each client loads its own partition as it does under
Flower. The client's `get_parameters` gives the genesis model, its `fit` the device's update
(the returned arrays and example count become the signed update) and its `evaluate` the
metrics: `loss` and the metrics it returns, averaged over every partition weighted by its
example count, as Flower's federated evaluation does. A device's data, for the core, is its
partition id; the client reads the data itself. `flwr` is an optional extra.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from blockfl.config import Config, TrainingConfig
from blockfl.task import Dataset, TaskError, TrainResult, resolve_attribute
from blockfl.tensors import StateDict

INSTALL = "pip install 'flwr==1.42.0' (after torch, pinned), or pip install -e '.[flower]'"


def _names(count: int) -> list[str]:
    return [f"param_{i:03d}" for i in range(count)]


def _partitions(ids: list[int]) -> Dataset:
    return Dataset(torch.tensor(ids, dtype=torch.float32).unsqueeze(1),
                   torch.zeros(len(ids), dtype=torch.int64), (1,), 1, "classification")


class FlowerTask:
    """The task of `[task] flower_client`, for a network of `network.devices` partitions."""

    def __init__(self, config: Config) -> None:
        try:
            from flwr.common import Context, RecordDict
        except ImportError:
            raise TaskError(f"--flower-client needs Flower: {INSTALL}") from None
        spec = config.task.flower_client
        if not spec:
            raise TaskError("task flower needs task.flower_client (--flower-client "
                            "my_app.client:client_fn)")
        self.name = f"flower:{spec}"
        self.client_fn = resolve_attribute(spec)
        self.count = config.network.devices
        self._context = lambda pid: Context(
            run_id=0, node_id=pid, node_config={"partition-id": pid,
                                                "num-partitions": self.count},
            state=RecordDict(), run_config={})
        self._clients: dict[int, Any] = {}
        self._metrics: tuple[str, ...] | None = None

    def _client(self, pid: int) -> Any:
        if pid not in self._clients:
            made = self.client_fn(self._context(pid))
            self._clients[pid] = getattr(made, "numpy_client", made)  # Client or NumPyClient
        return self._clients[pid]

    def initial_state(self, seed: int) -> StateDict:
        """Partition 0's client's `get_parameters` (torch and NumPy seeded with `seed`)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            state = np.random.get_state()
            np.random.seed(seed % 2**32)
            try:
                arrays = self.client_fn(self._context(0))
                arrays = getattr(arrays, "numpy_client", arrays).get_parameters({})
            finally:
                np.random.set_state(state)
        return self._state(arrays, "get_parameters")

    def _state(self, arrays: list[np.ndarray], where: str) -> StateDict:
        if not isinstance(arrays, list | tuple):
            raise TaskError(f"task {self.name!r}: {where} returned {type(arrays).__name__}, not "
                            "a list of NumPy arrays")
        return {k: torch.from_numpy(np.array(a, copy=True))
                for k, a in zip(_names(len(arrays)), arrays, strict=True)}

    def partitions(self, seed: int) -> tuple[list[Dataset], Dataset]:
        """Device j's data is partition j; the test set is every partition (federated
        evaluation)."""
        return ([_partitions([j]) for j in range(self.count)],
                _partitions(list(range(self.count))))

    def train(self, state: StateDict, data: Dataset, training: TrainingConfig,
              seed: int) -> TrainResult:
        """The client's `fit` on the global model; the config it gets holds the round's seed
        and `[training]` epochs, lr and batch size."""
        pid = int(data.x[0, 0])
        fit_config = {"seed": seed, "epochs": training.epochs, "lr": training.lr,
                      "batch_size": training.batch_size}
        arrays, n, metrics = self._client(pid).fit(self._arrays(state), fit_config)
        floats = {k: float(v) for k, v in (metrics or {}).items()
                  if isinstance(v, int | float) and not isinstance(v, bool)}
        return TrainResult(n, weights=self._state(arrays, "fit"), metrics=floats)

    @staticmethod
    def _arrays(state: StateDict) -> list[np.ndarray]:
        return [state[k].numpy() for k in _names(len(state))]

    def _evaluate(self, state: StateDict, pid: int) -> tuple[int, dict[str, float]]:
        loss, n, metrics = self._client(pid).evaluate(self._arrays(state), {})
        values = {"loss": float(loss)} | {k: float(v) for k, v in (metrics or {}).items()
                                         if isinstance(v, int | float)}
        return int(n), values

    @property
    def metrics(self) -> tuple[str, ...]:
        """`loss` and the names partition 0's `evaluate` returns on the genesis model."""
        if self._metrics is None:
            self._metrics = tuple(self._evaluate(self.initial_state(0), 0)[1])
        return self._metrics

    def evaluate(self, state: StateDict, data: Dataset) -> dict[str, float]:
        """Each partition's `evaluate`, averaged weighted by its example count."""
        results = [self._evaluate(state, int(p)) for p in data.x[:, 0].tolist()]
        total = sum(n for n, _ in results) or 1
        names = results[0][1]
        return {k: sum(n * m[k] for n, m in results) / total for k in names}
