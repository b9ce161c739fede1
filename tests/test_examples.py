"""The tasks under examples/, which live outside the package, run through `simulate` on the
embedded EVM: a tabular task on per-device CSV files, FedProx with Adam on non-IID devices, and
a Flower NumPyClient unchanged (when flwr is installed), whose accuracy matches Flower's own
FedAvg over the same clients."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest

from blockfl.cli import main
from blockfl.config import TaskConfig, load_config
from blockfl.sim.runner import run_experiment
from blockfl.task import load_device_data, load_task

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HAS_FLOWER = importlib.util.find_spec("flwr") is not None


def _run(tmp_path: Path, config_file: Path, **task):
    config = load_config(config_file)
    config = replace(config, run=replace(config.run, out_dir=str(tmp_path), rounds=3),
                     chain=replace(config.chain, ledger="evm"))
    if task:
        config = replace(config, task=TaskConfig(**task))
    summary = run_experiment(config)
    assert summary.hashes_agree and summary.rewards_match
    return config, summary


@pytest.fixture
def in_repo(monkeypatch):
    """The examples' configs name their task files relative to the repository root."""
    monkeypatch.chdir(EXAMPLES.parent)


def test_tabular_task_on_per_device_csv_files(tmp_path, in_repo, capsys):
    config_file = EXAMPLES / "tabular_csv" / "config.toml"
    split = tmp_path / "split"
    assert main(["data", "split", "--config", str(config_file), "--out", str(split),
                 "--format", "csv", "--json"]) == 0
    files = json.loads(capsys.readouterr().out)
    assert len(files) == 6 and sum(f["samples"] for f in files) == 569
    config, summary = _run(tmp_path, config_file)
    task = load_task(config)
    for row, shard in zip(files, summary.simulation.experiment.shards, strict=False):
        own = load_device_data(task, Path(row["file"]))  # the device's own CSV file
        assert len(own) == len(shard) and own.y.tolist() == shard.y.tolist()
    assert summary.rounds[-1].metrics["accuracy"] > 0.9


def test_fedprox_with_adam_on_non_iid_devices(tmp_path, in_repo):
    config, summary = _run(tmp_path, EXAMPLES / "fedprox" / "config.toml")
    assert config.data.partition == "dirichlet"
    assert summary.simulation.experiment.task.name == "fedprox-digits"
    assert summary.rounds[-1].metrics["accuracy"] > 0.8


@pytest.mark.skipif(not HAS_FLOWER, reason="flwr not installed (pip install flwr==1.42.0)")
def test_a_flower_client_runs_unchanged_and_matches_flowers_fedavg(tmp_path, in_repo):
    from flwr.common import Context, RecordDict
    from flwr.server.strategy.aggregate import aggregate

    from examples.flower_client import client as app

    source = (EXAMPLES / "flower_client" / "client.py").read_text()
    assert "import blockfl" not in source and "from blockfl" not in source
    config, summary = _run(tmp_path, _flower_config(tmp_path), module="flower",
                           flower_client="examples.flower_client.client:client_fn")
    blockfl_accuracy = summary.rounds[-1].metrics["accuracy"]

    # Flower's FedAvg (its own `aggregate`) over the same clients, rounds and fit config
    n = config.network.devices
    clients = [app.client_fn(Context(0, i, {"partition-id": i, "num-partitions": n},
                                     RecordDict(), {})).numpy_client for i in range(n)]
    weights = [v.numpy() for v in summary.simulation.experiment.initial.values()]
    t = config.training
    for r in range(1, config.run.rounds + 1):
        fits = [c.fit(weights, {"epochs": t.epochs, "lr": t.lr, "batch_size": t.batch_size,
                                "seed": r}) for c in clients]
        weights = aggregate([(w, count) for w, count, _ in fits])
    results = [c.evaluate(weights, {}) for c in clients]
    flower_accuracy = (sum(count * m["accuracy"] for _, count, m in results)
                       / sum(count for _, count, _ in results))
    assert blockfl_accuracy > 0.85
    assert abs(blockfl_accuracy - flower_accuracy) <= 0.02


def _flower_config(tmp_path: Path) -> Path:
    path = tmp_path / "flower.toml"
    path.write_text("[network]\ndevices = 4\nminers = 2\n[training]\nepochs = 2\nlr = 0.3\n")
    return path


def test_without_flower_the_flag_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "flwr", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "flwr.common", None)
    code = main(["simulate", "--flower-client", "my_app.client:client_fn", "--ledger", "local",
                 "--rounds", "1", "--run-out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "needs Flower: pip install 'flwr==1.42.0'" in err and "\n" not in err
