"""A Flower client as a BlockFL task, unchanged: `--flower-client my_app.client:client_fn` (a
`NumPyClient`) or `--flower-client my_app.client_app:app` (a `ClientApp` of the message API).

Each device is one Flower node, with the `node_config` Flower's simulation gives
(`partition-id`, `num-partitions`), so each client loads its own partition as it does under
Flower. A `NumPyClient`'s `get_parameters` gives the genesis model, its `fit` the device's update
(the returned arrays and example count become the signed update) and its `evaluate` the
metrics: `loss` and the metrics it returns. A `ClientApp` gets `train` and `evaluate` messages
as Flower's message-API FedAvg sends them (`arrays` and `config`) and replies with `arrays` and
`metrics` (`num-examples` the sample count); its genesis model is `[task] flower_model`'s state,
as a Flower ServerApp builds it. Metrics are averaged over every partition weighted by its
example count, as Flower's federated evaluation does. A device's data, for the core, is its
partition id; the client reads the data itself. `flwr` is an optional extra.
"""

from __future__ import annotations

import itertools
import time
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


def flower_task(config: Config) -> FlowerTask | FlowerAppTask:
    """The task of `[task] flower_client`: a `client_fn` or a `ClientApp`, for a network of
    `network.devices` partitions."""
    try:
        from flwr.clientapp import ClientApp
    except ImportError:
        raise TaskError(f"--flower-client needs Flower: {INSTALL}") from None
    spec = config.task.flower_client
    if not spec:
        raise TaskError("task flower needs task.flower_client (--flower-client "
                        "my_app.client:client_fn)")
    found = resolve_attribute(spec)
    if isinstance(found, ClientApp):
        return FlowerAppTask(config, spec, found)
    return FlowerTask(config, spec, found)


def _seeded(seed: int, make: Any) -> Any:
    """`make()` with torch and NumPy seeded with `seed`, their states restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = np.random.get_state()
        np.random.seed(seed % 2**32)
        try:
            return make()
        finally:
            np.random.set_state(state)


def _floats(metrics: Any) -> dict[str, float]:
    return {k: float(v) for k, v in dict(metrics or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


class _FlowerNodes:
    """What both adapters share: device j is Flower node j, holding partition j; tensors that
    are not floating point (BatchNorm's counters) are kept on each device; and a model's
    metrics are every partition's, averaged weighted by its example count."""

    def __init__(self, config: Config, spec: str) -> None:
        from flwr.app import Context, RecordDict

        self.name = f"flower:{spec}"
        self.count = config.network.devices
        self._context = lambda pid: Context(
            run_id=0, node_id=pid, node_config={"partition-id": pid,
                                                "num-partitions": self.count},
            state=RecordDict(), run_config={})
        self._metrics: tuple[str, ...] | None = None
        self._genesis_kept: StateDict | None = None

    def initial_state(self, seed: int) -> StateDict:
        raise NotImplementedError

    def _evaluate(self, state: StateDict, pid: int) -> tuple[int, dict[str, float]]:
        raise NotImplementedError

    def partitions(self, seed: int) -> tuple[list[Dataset], Dataset]:
        """Device j's data is partition j; the test set is every partition (federated
        evaluation)."""
        return ([_partitions([j]) for j in range(self.count)],
                _partitions(list(range(self.count))))

    @staticmethod
    def _fit_config(training: TrainingConfig, seed: int) -> dict[str, Any]:
        """What `fit` or `train` gets as its config: the round's seed and `[training]`."""
        return {"seed": seed, "epochs": training.epochs, "lr": training.lr,
                "batch_size": training.batch_size}

    @property
    def kept_on_device(self) -> tuple[str, ...]:
        """The names of the genesis model's tensors that are not floating point: a Flower
        client cannot mark them, and averaging a counter means nothing."""
        return tuple(self._kept())

    def _kept(self) -> StateDict:
        if self._genesis_kept is None:
            self._genesis_kept = {k: v for k, v in self.initial_state(0).items()
                                  if not v.is_floating_point()}
        return self._genesis_kept

    @property
    def metrics(self) -> tuple[str, ...]:
        """The names partition 0's evaluation gives on the genesis model."""
        if self._metrics is None:
            self._metrics = tuple(self._evaluate(self.initial_state(0), 0)[1])
        return self._metrics

    def evaluate(self, state: StateDict, data: Dataset) -> dict[str, float]:
        """Each partition's evaluation, averaged weighted by its example count; a global
        model holds no device's kept tensors, so the client gets the genesis model's."""
        state = self._kept() | state
        results = [self._evaluate(state, int(p)) for p in data.x[:, 0].tolist()]
        total = sum(n for n, _ in results) or 1
        names = results[0][1]
        return {k: sum(n * m[k] for n, m in results) / total for k in names}


class FlowerTask(_FlowerNodes):
    """A `NumPyClient`'s `client_fn` as a task."""

    def __init__(self, config: Config, spec: str, client_fn: Any) -> None:
        super().__init__(config, spec)
        self.client_fn = client_fn
        self._clients: dict[int, Any] = {}

    def _client(self, pid: int) -> Any:
        if pid not in self._clients:
            made = self.client_fn(self._context(pid))
            self._clients[pid] = getattr(made, "numpy_client", made)  # Client or NumPyClient
        return self._clients[pid]

    def initial_state(self, seed: int) -> StateDict:
        """Partition 0's client's `get_parameters` (torch and NumPy seeded with `seed`)."""
        def parameters() -> Any:
            made = self.client_fn(self._context(0))
            return getattr(made, "numpy_client", made).get_parameters({})

        return self._state(_seeded(seed, parameters), "get_parameters")

    def _state(self, arrays: list[np.ndarray], where: str) -> StateDict:
        if not isinstance(arrays, list | tuple):
            raise TaskError(f"task {self.name!r}: {where} returned {type(arrays).__name__}, not "
                            "a list of NumPy arrays")
        return {k: torch.from_numpy(np.array(a, copy=True))
                for k, a in zip(_names(len(arrays)), arrays, strict=True)}

    def train(self, state: StateDict, data: Dataset, training: TrainingConfig,
              seed: int) -> TrainResult:
        """The client's `fit` on the global model, with `_fit_config`."""
        pid = int(data.x[0, 0])
        arrays, n, metrics = self._client(pid).fit(self._arrays(state),
                                                   self._fit_config(training, seed))
        return TrainResult(n, weights=self._state(arrays, "fit"), metrics=_floats(metrics))

    @staticmethod
    def _arrays(state: StateDict) -> list[np.ndarray]:
        return [state[k].numpy() for k in _names(len(state))]

    def _evaluate(self, state: StateDict, pid: int) -> tuple[int, dict[str, float]]:
        loss, n, metrics = self._client(pid).evaluate(self._arrays(state), {})
        return int(n), {"loss": float(loss)} | _floats(metrics)


class FlowerAppTask(_FlowerNodes):
    """A `ClientApp` (message API) as a task: `train` and `evaluate` messages to node j."""

    def __init__(self, config: Config, spec: str, app: Any) -> None:
        super().__init__(config, spec)
        if not config.task.flower_model:
            raise TaskError(f"task {self.name!r}: a ClientApp needs the model its ServerApp "
                            "starts from: task.flower_model (--task-flower-model "
                            "my_app.task:Net)")
        self.app = app
        self.make_model = resolve_attribute(config.task.flower_model)
        self._contexts: dict[int, Any] = {}  # a node's context (its state) lasts the run
        self._ids = itertools.count()

    def initial_state(self, seed: int) -> StateDict:
        """`[task] flower_model`'s state dict (torch and NumPy seeded with `seed`)."""
        made = _seeded(seed, self.make_model)
        state = made.state_dict() if isinstance(made, torch.nn.Module) else made
        if not isinstance(state, dict):
            raise TaskError(f"task {self.name!r}: flower_model gave {type(made).__name__}, not "
                            "an nn.Module or a state dict")
        return {k: v.detach().clone() for k, v in state.items()}

    def _send(self, pid: int, kind: str, state: StateDict, config: dict[str, Any]) -> Any:
        """Node `pid`'s reply content to a `kind` message holding `arrays` and `config`."""
        from flwr.app import DEFAULT_TTL, ArrayRecord, ConfigRecord, Message, Metadata, RecordDict

        metadata = Metadata(run_id=0, message_id=f"{kind}-{next(self._ids)}", src_node_id=0,
                            dst_node_id=pid, reply_to_message_id="", group_id="",
                            created_at=time.time(), ttl=DEFAULT_TTL, message_type=kind)
        content = RecordDict({"arrays": ArrayRecord(dict(state)),
                              "config": ConfigRecord(config)})
        context = self._contexts.setdefault(pid, self._context(pid))
        try:
            reply = self.app(Message(content, metadata=metadata), context)
        except Exception as exc:  # the user's handler: any error it raises
            raise TaskError(f"task {self.name!r}: the ClientApp's {kind} failed: "
                            f"{type(exc).__name__}: {exc}") from None
        if reply.has_error():
            raise TaskError(f"task {self.name!r}: the ClientApp's {kind} replied with an error: "
                            f"{reply.error.reason}")
        metrics = _floats(reply.content.metric_records.get("metrics"))
        n = metrics.pop("num-examples", 0)
        if n != int(n) or n <= 0:
            raise TaskError(f"task {self.name!r}: the ClientApp's {kind} reply needs a positive "
                            f"whole num-examples in its metrics, got {n!r}")
        return reply.content, int(n), metrics

    def train(self, state: StateDict, data: Dataset, training: TrainingConfig,
              seed: int) -> TrainResult:
        """A `train` message with the global model and `_fit_config`; the reply's arrays and
        `num-examples` are the update."""
        content, n, metrics = self._send(int(data.x[0, 0]), "train", state,
                                         self._fit_config(training, seed))
        arrays = content.array_records.get("arrays")
        if arrays is None:
            raise TaskError(f"task {self.name!r}: the ClientApp's train reply has no arrays")
        return TrainResult(n, weights=arrays.to_torch_state_dict(), metrics=metrics)

    def _evaluate(self, state: StateDict, pid: int) -> tuple[int, dict[str, float]]:
        _, n, metrics = self._send(pid, "evaluate", state, {})
        return n, metrics
