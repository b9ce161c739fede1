"""The task API: a task written outside the package runs through `simulate` on the embedded EVM,
the built-in task is found by name, and a task that cannot be loaded or that returns something
unusable is one line naming the task and what is wrong, before anything is uploaded."""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from blockfl.cli import main
from blockfl.config import Config, TaskConfig
from blockfl.devices.device import Device
from blockfl.sim.runner import run_experiment
from blockfl.sim.setup import build_experiment
from blockfl.task import TaskError, evaluate, resolve
from blockfl.tensors import tensor_hash
from tests.conftest import key, small_config

USER_TASK = '''
"""A user's task: a small MLP on scikit-learn's wine data, trained with Adam in its own loop."""
import torch
import torch.nn.functional as F
from sklearn.datasets import load_wine
from torch import nn

from blockfl.task import Dataset, TrainResult


class Wine:
    name = "wine-adam"
    metrics = ("accuracy", "nll")

    def _model(self):
        return nn.Sequential(nn.Linear(13, 16), nn.ReLU(), nn.Linear(16, 3))

    def initial_state(self, seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return {k: v.clone() for k, v in self._model().state_dict().items()}

    def dataset(self, seed):
        x, y = load_wine(return_X_y=True)
        x = (x - x.mean(0)) / x.std(0)
        return Dataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y), (13,), 3,
                       "classification")

    def train(self, state, data, training, seed):
        model = self._model()
        model.load_state_dict(state)
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        order = torch.Generator().manual_seed(seed)
        for _ in range(training.epochs):
            for idx in torch.randperm(len(data), generator=order).split(training.batch_size):
                opt.zero_grad()
                loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
                loss.backward()
                opt.step()
        return TrainResult(len(data), weights=model.state_dict(), metrics={"loss": loss.item()})

    @torch.no_grad()
    def evaluate(self, state, data):
        model = self._model()
        model.load_state_dict(state)
        out = model(data.x)
        return {"accuracy": float((out.argmax(1) == data.y).float().mean()),
                "nll": float(F.cross_entropy(out, data.y))}


TASK = Wine()
'''

BAD_TASKS = '''
import torch
from blockfl.task import TrainResult
from user_task import Wine


class Returns(Wine):
    """`train` returns what `make(state)` gives."""

    def __init__(self, make):
        self.make = make

    def train(self, state, data, training, seed):
        return self.make(state, len(data))


def _delta(state, **change):
    return {k: torch.zeros_like(v) for k, v in state.items()} | change


SHAPE = Returns(lambda s, n: TrainResult(n, delta=_delta(s, **{"0.bias": torch.zeros(3)})))
DTYPE = Returns(lambda s, n: TrainResult(
    n, delta=_delta(s, **{"0.bias": torch.zeros(16, dtype=torch.float64)})))
NAN = Returns(lambda s, n: TrainResult(
    n, delta=_delta(s, **{"0.bias": torch.full((16,), float("nan"))})))
ZERO = Returns(lambda s, n: TrainResult(0, delta=_delta(s)))
NEGATIVE = Returns(lambda s, n: TrainResult(-5, delta=_delta(s)))
MISSING = Returns(lambda s, n: TrainResult(n, delta={"0.bias": torch.zeros(16)}))
NOT_A_RESULT = Returns(lambda s, n: (s, n))
BOTH = Returns(lambda s, n: TrainResult(n, delta=_delta(s), weights=s))


class NoTrain:
    name = "no-train"
    metrics = ()


INCOMPLETE = NoTrain()
'''


@pytest.fixture
def user_dir(tmp_path, monkeypatch) -> Path:
    """A folder outside the package holding the user's task files (importable by name)."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "user_task.py").write_text(USER_TASK)
    (folder / "bad_tasks.py").write_text(textwrap.dedent(BAD_TASKS))
    (folder / "broken.py").write_text("import torch\nraise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(folder))
    return folder


def _config(tmp_path: Path, module: str, **sections) -> Config:
    config = small_config(tmp_path, network={"devices": 4, "miners": 2}, **sections)
    return replace(config, task=TaskConfig(module=module))


def test_a_task_from_a_file_outside_the_package_runs_through_simulate_on_the_evm(
        tmp_path, user_dir):
    config = _config(tmp_path, f"{user_dir / 'user_task.py'}:TASK",
                     training={"epochs": 2, "batch_size": 8, "compute_time": "modelled"})
    summary = run_experiment(config)
    assert summary.hashes_agree and summary.rewards_match
    metrics = [r.metrics for r in summary.rounds]
    assert list(metrics[-1]) == ["accuracy", "nll"]  # the names the task declares
    assert metrics[-1]["accuracy"] > 0.85
    experiment = summary.simulation.experiment
    assert experiment.task.name == "wine-adam"
    assert sum(len(s) for s in experiment.shards) + len(experiment.test) == 178
    # each block paid every device for exactly its own shard's samples
    assert [r.samples for r in summary.rounds] == [sum(len(s) for s in experiment.shards)] * 3
    # the same seed gives the same blocks
    again = run_experiment(replace(config, run=replace(config.run, name="again")))
    assert [r.block_hash for r in again.rounds] == [r.block_hash for r in summary.rounds]


def test_a_task_is_named_by_module_or_by_file(tmp_path, user_dir):
    by_module = build_experiment(_config(tmp_path, "user_task:TASK"))
    by_file = build_experiment(_config(tmp_path, f"{user_dir / 'user_task.py'}:Wine"))
    assert by_module.genesis_hash == by_file.genesis_hash  # a class is called with the config
    builtin = build_experiment(_config(tmp_path, "builtin"))
    assert builtin.task.name == "builtin:digits/logreg"
    assert builtin.task.metrics == ("accuracy", "loss")


@pytest.mark.parametrize(("module", "message"), [
    ("user_task", "give module:ATTR"),
    ("no_such_module:TASK", "importing no_such_module failed: ModuleNotFoundError"),
    ("broken:TASK", "importing broken failed: RuntimeError: no GPU here"),
    ("missing.py:TASK", "no file missing.py"),
    ("user_task:NOPE", "user_task has no attribute 'NOPE'"),
    ("bad_tasks:INCOMPLETE", "INCOMPLETE lacks initial_state, train, evaluate, dataset"),
])
def test_a_task_that_cannot_be_loaded_is_one_line(tmp_path, user_dir, capsys, module, message):
    with pytest.raises(TaskError, match=message):
        build_experiment(_config(tmp_path, module))
    code = main(["simulate", "--task", module, "--ledger", "local", "--rounds", "1",
                 "--run-out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"task {module!r}" in err and message in err
    assert "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize(("attr", "message"), [
    ("SHAPE", "'0.bias' is (3,) float32, the model's is (16,) float32"),
    ("DTYPE", "'0.bias' is (16,) float64, the model's is (16,) float32"),
    ("NAN", "'0.bias' holds NaN or infinite values"),
    ("ZERO", "the sample count 0: a positive int is needed"),
    ("NEGATIVE", "the sample count -5"),
    ("MISSING", "other tensors than the model's (missing ['0.weight', '2.bias', '2.weight']"),
    ("NOT_A_RESULT", "returned tuple, not a TrainResult"),
    ("BOTH", "exactly one of delta and weights"),
])
def test_a_task_returning_something_unusable_is_refused_before_upload(
        tmp_path, user_dir, capsys, attr, message):
    config = _config(tmp_path, f"bad_tasks:{attr}")
    experiment = build_experiment(config)
    device = Device(key("d"), experiment.shards[0], experiment.task, config.training,
                    experiment.initial)
    with pytest.raises(TaskError, match=f"task 'wine-adam': train.*{message}".replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        device.train(1, None)  # refused before the update is hashed, signed or encoded
    code = main(["simulate", "--task", f"bad_tasks:{attr}", "--ledger", "local",
                 "--rounds", "1", "--run-out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "task 'wine-adam': train" in err and message in err


def test_the_evaluator_checks_the_declared_metric_names(tmp_path, user_dir):
    task = resolve("user_task:TASK", Config())
    data = task.dataset(0)
    state = task.initial_state(0)
    assert list(evaluate(task, state, data)) == ["accuracy", "nll"]
    task.metrics = ("accuracy",)
    with pytest.raises(TaskError, match=r"evaluate returned \['accuracy', 'nll'\], it declares "
                                        r"\['accuracy'\]"):
        evaluate(task, state, data)
    builtin = resolve("builtin", Config())
    with pytest.raises(TaskError, match="does not fit model 'mlp'"):
        evaluate(builtin, state, builtin.dataset(0))
    assert tensor_hash(state) == tensor_hash(task.initial_state(0))
    assert not torch.equal(state["0.weight"], task.initial_state(1)["0.weight"])


def test_the_scaffold_writes_a_task_and_a_config_that_run_as_they_are(tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["new", "task", "my-task"]) == 0
    assert "blockfl simulate --config my-task/config.toml" in capsys.readouterr().out
    code = main(["simulate", "--config", "my-task/config.toml", "--rounds", "2",
                 "--ledger", "local", "--run-out-dir", str(tmp_path / "runs"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["rounds"][-1]["metrics"]["accuracy"] > 0.8
    assert main(["new", "task", "my-task"]) == 2
    assert "my-task exists already" in capsys.readouterr().err
