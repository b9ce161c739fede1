"""`blockfl new task NAME`: a commented task module and a config that runs as it is, the way
`flwr new` starts a Flower app."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

TASK_TEMPLATE = '''"""{name}: a BlockFL task (see docs/tasks.md): edit the model, data and loop.

Run it:  blockfl simulate --config {folder}/config.toml
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from blockfl.task import Dataset, TrainResult, read_data

INPUT_SHAPE, CLASSES = (64,), 10


class {cls}:
    name = "{name}"  # in the protocol spec: every device of a deployment runs this task
    metrics = ("accuracy", "loss")  # the names `evaluate` returns
    # tensors each device keeps, never sent: BatchNorm's integer counters, if you add one
    kept_on_device = ("*.num_batches_tracked",)

    def _model(self) -> nn.Module:
        """Any torch.nn.Module: its floating-point tensors are the federated model (those
        `kept_on_device` names aside)."""
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, CLASSES))

    def initial_state(self, seed: int) -> dict[str, torch.Tensor]:
        """The genesis model (`chain deploy` writes it beside deployment.json)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return {{k: v.clone() for k, v in self._model().state_dict().items()}}

    def dataset(self, seed: int) -> Dataset:
        """The whole data set: `simulate` and `blockfl data split` split it across devices."""
        x, y = load_digits(return_X_y=True)
        return Dataset(torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y),
                       INPUT_SHAPE, CLASSES, "classification")

    def load_data(self, path) -> Dataset:
        """One device's own file (`blockfl device --data PATH`): .npz, .csv, .safetensors."""
        return read_data(path, INPUT_SHAPE, CLASSES, "classification")

    def train(self, state, data: Dataset, training, seed: int) -> TrainResult:
        """Your loop, optimizer and loss, from the global model `state`; `training` is the
        config's [training] section, `seed` this device's seed for the round."""
        model = self._model()
        model.load_state_dict(state)
        opt = torch.optim.SGD(model.parameters(), lr=training.lr)
        order = torch.Generator().manual_seed(seed)
        for _ in range(training.epochs):
            for idx in torch.randperm(len(data), generator=order).split(training.batch_size):
                opt.zero_grad()
                loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
                loss.backward()
                opt.step()
        # the new weights (or delta=...) and the samples trained on: what the device signs
        return TrainResult(len(data), weights=model.state_dict(), metrics={{"loss": loss.item()}})

    @torch.no_grad()
    def evaluate(self, state, data: Dataset) -> dict[str, float]:
        """The metrics of model `state` on `data` (the test split, or --test-data PATH)."""
        model = self._model()
        model.load_state_dict(state)
        out = model(data.x)
        return {{"accuracy": float((out.argmax(1) == data.y).float().mean()),
                "loss": float(F.cross_entropy(out, data.y))}}


TASK = {cls}()
'''

CONFIG_TEMPLATE = '''# {name}: run from {parent}: blockfl simulate --config {folder}/config.toml
[task]
module = "{folder}/task.py:TASK"

[run]
rounds = 5

[network]
devices = 5
miners = 2

[training]
epochs = 2
lr = 0.3
batch_size = 16

[chain]
ledger = "evm"  # the embedded EVM; "local" for large runs
'''


def register(commands: argparse._SubParsersAction) -> None:
    """Add `new` and its subcommand `task`."""
    new = commands.add_parser("new", help="start a task from a template")
    sub = new.add_subparsers(dest="new_command", required=True)
    task = sub.add_parser("task", help="write NAME/task.py and NAME/config.toml")
    task.add_argument("name", help="the task's name and folder, e.g. my_task")
    task.add_argument("--dir", type=Path, default=Path("."),
                      help="where the folder goes (default: the working directory)")
    task.set_defaults(func=new_task)


def new_task(args: argparse.Namespace) -> int:
    """Write the task module and its config; refuse to overwrite."""
    name = args.name
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
        raise ValueError(f"task name {name!r}: use letters, digits, - and _ (a folder name)")
    folder = args.dir / name
    if folder.exists():
        raise ValueError(f"{folder} exists already: choose another name or --dir")
    folder.mkdir(parents=True)
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name) if part) + "Task"
    (folder / "task.py").write_text(TASK_TEMPLATE.format(name=name, cls=cls, folder=folder))
    (folder / "config.toml").write_text(
        CONFIG_TEMPLATE.format(name=name, folder=folder, parent=args.dir))
    print(f"wrote {folder / 'task.py'} and {folder / 'config.toml'}\n"
          f"run it: blockfl simulate --config {folder / 'config.toml'}")
    return 0
