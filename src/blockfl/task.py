"""What a network learns: the `Task` interface, finding a task by name, and the checks and the
one evaluator that every caller (simulator, launcher, explorer, `model evaluate`, malfunction)
goes through.

A task is any object with the attributes of `Task`. The consensus path (miners, the contract,
verification, aggregation) never runs task code; devices train with it and evaluators measure
with it. See docs/tasks.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from blockfl.dataset import Dataset, Kind
from blockfl.tensors import StateDict, dtype_name

if TYPE_CHECKING:
    from blockfl.config import Config, TrainingConfig
    from blockfl.devices.training import LocalUpdate

#: the entry-point group installed packages register tasks in: `name = "pkg.module:TASK"`
ENTRY_POINT_GROUP = "blockfl.tasks"
#: the tasks this package ships, by name
BUILTIN_TASKS = {"builtin": "blockfl.devices.builtin_task:BuiltinTask",
                 "flower": "blockfl.flower:flower_task"}
#: what a task must have (and `dataset` or `partitions`)
REQUIRED = ("name", "metrics", "initial_state", "train", "evaluate")


class TaskError(ValueError):
    """A task that cannot be loaded, or that returned something unusable (one line)."""


@dataclass(frozen=True)
class TrainResult:
    """One device's local training: the new weights or the delta (new - base) of the
    floating-point tensors, the number of samples trained on, and metrics (e.g. ``loss``)."""

    n_samples: int
    delta: StateDict | None = None
    weights: StateDict | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingJob:
    """One device's training in a batch (`Task.train_many`): its data, its round's seed and
    the tensors it keeps on the device (`Task.kept_on_device`)."""

    data: Dataset
    seed: int
    kept: StateDict = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """A model, its data and its training. Optional: ``load_data(path)`` (a device's own data
    file), ``train_many`` (several devices at once, with the bits each gets alone),
    ``partitions(seed)`` (the devices' shards and the test set, for a task whose data is
    already split: then ``dataset`` is not needed), and ``kept_on_device`` (name patterns,
    `fnmatch`-style, of tensors each device keeps: never averaged, sent or in the genesis
    model; ``("*.num_batches_tracked",)`` for BatchNorm's counters). Every other tensor of
    ``initial_state`` is federated and must be floating point."""

    name: str
    metrics: tuple[str, ...]  # the names `evaluate` returns, in order

    def initial_state(self, seed: int) -> StateDict:
        """The genesis model's tensors (deterministic for `seed`)."""
        ...

    def dataset(self, seed: int) -> Dataset:
        """The whole data set a simulation splits into a test set and one shard per device."""
        ...

    def train(self, state: StateDict, data: Dataset, training: TrainingConfig,
              seed: int) -> TrainResult:
        """Train from the global model `state` on `data` (your own loop, optimizer, loss);
        `training` holds the config's epochs, lr and batch size, `seed` this round's seed."""
        ...

    def evaluate(self, state: StateDict, data: Dataset) -> dict[str, float]:
        """The metrics (named in `metrics`) of model `state` on `data`."""
        ...


def read_data(path: Path, input_shape: Sequence[int], n_outputs: int, kind: Kind,
              label: str = "label") -> Dataset:
    """One device's data file as a `Dataset` of the given sample shape and classes (`.npz`,
    `.csv` with the label column `label`, `.safetensors`, or a folder of class folders of
    images; see `blockfl.data_files`); a bad file is one line naming it."""
    from blockfl.data_files import as_dataset, read_data_file

    x, y = read_data_file(Path(path), label)
    return as_dataset(Path(path), x, y, input_shape, n_outputs, kind)


def load_device_data(task: Task, path: Path) -> Dataset:
    """A device's own data, read by its task's `load_data(path)`."""
    loader = getattr(task, "load_data", None)
    if loader is None:
        raise TaskError(f"task {task.name!r} has no load_data(path): it cannot read a device's "
                        "own data file (see docs/tasks.md)")
    data = loader(Path(path))
    if not isinstance(data, Dataset) or len(data) == 0:
        raise TaskError(f"task {task.name!r}: load_data({str(path)!r}) gave no samples")
    return data


def load_task(config: Config) -> Task:
    """The task of `config.task.module` (see `resolve`)."""
    return resolve(config.task.module, config)


def resolve(spec: str, config: Config) -> Task:
    """The task named `spec`: a built-in or registered name, `pkg.module:ATTR`, or
    `path/to/file.py:ATTR`. An attribute that is a class or a function makes the task: it is
    called with the config when it takes an argument, else with none."""
    target = BUILTIN_TASKS.get(spec) or _registered(spec) or spec
    obj = resolve_attribute(target, spec)
    attr = target.rpartition(":")[2]
    if isinstance(obj, type) or (callable(obj) and not _looks_like_task(obj)):
        obj = _made(spec, attr, obj, config)
    missing = [a for a in REQUIRED if not hasattr(obj, a)]
    if not (hasattr(obj, "dataset") or hasattr(obj, "partitions")):
        missing.append("dataset (or partitions)")
    if missing:
        raise TaskError(f"task {spec!r}: {attr} lacks {', '.join(missing)} (see docs/tasks.md)")
    return obj


def resolve_attribute(target: str, spec: str | None = None) -> Any:
    """The object `pkg.module:ATTR` or `path/to/file.py:ATTR` names; errors name `spec`
    (default: `target`)."""
    spec = spec or target
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise TaskError(f"task {spec!r}: name a registered task or give module:ATTR "
                        "(e.g. my_pkg.task:TASK or path/to/task.py:TASK)")
    module = _import(spec, module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise TaskError(f"task {spec!r}: {module_name} has no attribute {attr!r}") from None


def _made(spec: str, attr: str, factory: Any, config: Config) -> Any:
    """`factory(config)`, or `factory()` when it takes no argument."""
    try:
        takes = len(inspect.signature(factory).parameters) > 0
    except (TypeError, ValueError):  # no signature to read (a builtin): try with the config
        takes = True
    call = f"{attr}(config)" if takes else f"{attr}()"
    try:
        return factory(config) if takes else factory()
    except Exception as exc:  # the user's constructor: any error it raises
        raise TaskError(f"task {spec!r}: {call} failed: {type(exc).__name__}: {exc}") from None


def _looks_like_task(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in REQUIRED)


def _registered(name: str) -> str | None:
    found = [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    return found[0] if found else None


def _import(spec: str, module_name: str) -> Any:
    """Import a module by dotted name (from the working directory too, as uvicorn does), or a
    `.py` file by path."""
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise TaskError(f"task {spec!r}: no file {path}")
            name = f"blockfl_task_{path.stem}"
            loader = importlib.util.spec_from_file_location(name, path)
            if loader is None or loader.loader is None:
                raise TaskError(f"task {spec!r}: cannot import {path}")
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            loader.loader.exec_module(module)
            return module
        return importlib.import_module(module_name)
    except TaskError:
        raise
    except Exception as exc:  # the user's module: any error it raises on import
        raise TaskError(f"task {spec!r}: importing {module_name} failed: "
                        f"{type(exc).__name__}: {exc}") from None


def split_state(task: Task, state: StateDict) -> tuple[StateDict, StateDict]:
    """`initial_state`'s tensors as (federated, kept on the device): the names matching the
    task's `kept_on_device` patterns are kept; every other tensor must be floating point."""
    patterns = tuple(getattr(task, "kept_on_device", ()))
    if not isinstance(state, dict) or not state:
        raise TaskError(f"task {task.name!r}: initial_state returned {type(state).__name__}, "
                        "not a non-empty dict of tensors")
    federated, kept = {}, {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TaskError(f"task {task.name!r}: initial_state tensor {name!r} is a "
                            f"{type(value).__name__}, not a torch tensor")
        if any(fnmatchcase(name, p) for p in patterns):
            kept[name] = value
        elif not value.is_floating_point():
            raise TaskError(f"task {task.name!r}: initial_state tensor {name!r} is "
                            f"{dtype_name(value.dtype)}: only floating-point tensors are "
                            "federated; name it in the task's kept_on_device to keep it on "
                            "each device")
        else:
            federated[name] = value
    return federated, kept


def checked_initial_state(task: Task, seed: int) -> StateDict:
    """The task's genesis model: its federated tensors (`split_state`), refused unless there
    are some and their values are finite."""
    state, _ = split_state(task, task.initial_state(seed))
    if not state:
        raise TaskError(f"task {task.name!r}: initial_state has no federated tensor (every "
                        "one matches kept_on_device)")
    for name, value in state.items():
        if not bool(torch.isfinite(value).all()):
            raise TaskError(f"task {task.name!r}: initial_state tensor {name!r} is not finite")
    return state


def initial_kept(task: Task, seed: int) -> StateDict:
    """The tensors a device keeps (`kept_on_device`), as `initial_state(seed)` gives them;
    nothing, without calling it, for a task that keeps none."""
    if not getattr(task, "kept_on_device", ()):
        return {}
    return split_state(task, task.initial_state(seed))[1]


def local_update(task: Task, state: StateDict, data: Dataset, training: TrainingConfig,
                 seed: int, kept: StateDict | None = None) -> LocalUpdate:
    """Train one device through its task from the global model `state` and the device's
    `kept` tensors; the result checked (see `checked_update`)."""
    start = time.perf_counter()
    result = task.train(state | kept if kept else state, data, training, seed)
    return checked_update(task, state, result, time.perf_counter() - start, kept=kept)


def local_updates(task: Task, state: StateDict, jobs: Sequence[TrainingJob],
                  training: TrainingConfig) -> list[LocalUpdate]:
    """Train several devices from one global model: through the task's `train_many` (a fast
    path) when it has one, else one by one; in the order of `jobs`."""
    many = getattr(task, "train_many", None)
    if many is None:
        return [local_update(task, state, j.data, training, j.seed, j.kept) for j in jobs]
    start = time.perf_counter()
    results = many(state, jobs, training)
    seconds = (time.perf_counter() - start) / max(len(jobs), 1)
    if len(results) != len(jobs):
        raise TaskError(f"task {task.name!r}: train_many returned {len(results)} results for "
                        f"{len(jobs)} devices")
    updates = [checked_update(task, state, r, seconds, check_finite=False, kept=j.kept)
               for r, j in zip(results, jobs, strict=True)]
    if updates:  # shapes checked: the values of every device at once
        _check_finite(f"task {task.name!r}: train", [u.delta for u in updates])
    return updates


def _check_finite(where: str, states: Sequence[StateDict]) -> None:
    """Refuse NaN or infinite values in any of `states` (same names and shapes): one
    `isfinite` per tensor name over all of them stacked."""
    for name in states[0]:
        if not bool(torch.isfinite(torch.stack([s[name] for s in states])).all()):
            raise TaskError(f"{where}: {name!r} holds NaN or infinite values")


def checked_update(task: Task, state: StateDict, result: TrainResult, seconds: float,
                   check_finite: bool = True, kept: StateDict | None = None) -> LocalUpdate:
    """The delta of a task's `TrainResult`, refused (one line naming the task) unless it has
    exactly the global model's tensors (and, optionally, the device's `kept` ones), shapes
    and dtypes, finite values (unless the caller checks them, `check_finite=False`) and a
    positive sample count. The kept tensors' new values stay in the `LocalUpdate`'s `kept`."""
    from blockfl.devices.training import LocalUpdate

    where = f"task {task.name!r}: train"
    if not isinstance(result, TrainResult):
        raise TaskError(f"{where} returned {type(result).__name__}, not a TrainResult")
    if (result.delta is None) == (result.weights is None):
        raise TaskError(f"{where} must return exactly one of delta and weights")
    n = result.n_samples
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise TaskError(f"{where} returned the sample count {n!r}: a positive int is needed")
    given = result.delta if result.delta is not None else result.weights
    assert given is not None
    kept = kept or {}
    missing, extra = sorted(set(state) - set(given)), sorted(set(given) - set(state) - set(kept))
    if missing or extra:
        raise TaskError(f"{where} returned other tensors than the model's "
                        f"(missing {missing}, unexpected {extra})")
    for name, base in (state | {k: v for k, v in kept.items() if k in given}).items():
        value = given[name]
        if not isinstance(value, torch.Tensor):
            raise TaskError(f"{where}: {name!r} is a {type(value).__name__}, not a tensor")
        if value.shape != base.shape or value.dtype != base.dtype:
            raise TaskError(f"{where}: {name!r} is {tuple(value.shape)} {dtype_name(value.dtype)}"
                            f", the model's is {tuple(base.shape)} {dtype_name(base.dtype)}")
    if check_finite:
        _check_finite(where, [given])
    delta = result.delta if result.delta is not None else {
        k: (given[k] - v).detach() for k, v in state.items()}
    loss = float(result.metrics.get("loss", math.nan))
    new_kept = {k: (v if result.weights is not None else v + kept[k]).detach()
                for k, v in given.items() if k in kept}
    return LocalUpdate({k: delta[k] for k in state}, n, seconds, loss, kept | new_kept)


def evaluate(task: Task, state: StateDict, data: Dataset) -> dict[str, float]:
    """The one evaluator: the task's metrics of model `state` on `data`, in the order the task
    declares, each a float; a model the task cannot evaluate is one line naming the task."""
    try:
        metrics = task.evaluate(state, data)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise TaskError(f"task {task.name!r} cannot evaluate this model: {exc}") from None
    names = tuple(task.metrics)
    if not isinstance(metrics, dict) or set(metrics) != set(names):
        got = sorted(metrics) if isinstance(metrics, dict) else type(metrics).__name__
        raise TaskError(f"task {task.name!r}: evaluate returned {got}, it declares "
                        f"{list(names)}")
    return {k: float(metrics[k]) for k in names}
