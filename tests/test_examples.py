"""The tasks under examples/, which live outside the package, run through `simulate` on the
embedded EVM: a tabular task on per-device CSV files, FedProx with Adam on non-IID devices, and
a Flower NumPyClient unchanged (when flwr is installed), whose accuracy matches that of Flower's
own simulation of the same client."""

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
def test_a_flower_client_runs_unchanged_and_matches_flowers_own_simulation(tmp_path, in_repo):
    source = (EXAMPLES / "flower_client" / "client.py").read_text()
    assert "import blockfl" not in source and "from blockfl" not in source
    config, summary = _run(tmp_path, _flower_config(tmp_path), module="flower",
                           flower_client="examples.flower_client.client:client_fn")
    blockfl_accuracy = summary.rounds[-1].metrics["accuracy"]
    flower_accuracy = _flowers_simulation(config, summary.simulation.experiment.initial)
    assert blockfl_accuracy > 0.85
    assert abs(blockfl_accuracy - flower_accuracy) <= 0.02


@pytest.mark.skipif(not HAS_FLOWER, reason="flwr not installed (pip install flwr==1.42.0)")
def test_the_same_client_as_a_clientapp_trains_to_the_same_model(tmp_path, in_repo):
    source = (EXAMPLES / "flower_client" / "client_app.py").read_text()
    assert "import blockfl" not in source and "from blockfl" not in source
    runs = [_run(tmp_path / kind, _flower_config(tmp_path), module="flower", **task)[1]
            for kind, task in [
                ("numpy", {"flower_client": "examples.flower_client.client:client_fn"}),
                ("app", {"flower_client": "examples.flower_client.client_app:app",
                         "flower_model": "examples.flower_client.client:Net"})]]
    numpy_client, app = (s.rounds[-1].metrics for s in runs)
    assert list(app) == ["eval_loss", "eval_acc"]  # the names its evaluate replies with
    assert app["eval_acc"] == numpy_client["accuracy"] and numpy_client["accuracy"] > 0.85
    assert [r.samples for r in runs[1].rounds] == [r.samples for r in runs[0].rounds]


def test_a_clientapp_without_its_model_is_one_line(tmp_path, in_repo, capsys):
    pytest.importorskip("flwr")
    code = main(["simulate", "--flower-client", "examples.flower_client.client_app:app",
                 "--ledger", "local", "--rounds", "1", "--run-out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "a ClientApp needs the model its ServerApp starts from: task.flower_model" in err


def _flowers_simulation(config, initial) -> float:
    """Flower's own simulation engine (`run_simulation`, Ray backend, a Ray instance of its own)
    running the same client as a `ClientApp` with FedAvg: every partition in every round, the
    same genesis model, rounds and fit config. The accuracy of its federated evaluation after
    the last round."""
    from flwr.client import ClientApp
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from examples.flower_client.client import client_fn

    n, t, fits, accuracy = config.network.devices, config.training, [], []

    def evaluated(results):
        accuracy.append(sum(k * m["accuracy"] for k, m in results) / sum(k for k, _ in results))
        return {"accuracy": accuracy[-1]}

    def server_fn(context):
        strategy = FedAvg(
            fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=n, min_evaluate_clients=n,
            min_available_clients=n, accept_failures=False,
            initial_parameters=ndarrays_to_parameters([v.numpy() for v in initial.values()]),
            on_fit_config_fn=lambda r: {"epochs": t.epochs, "lr": t.lr,
                                        "batch_size": t.batch_size, "seed": r},
            fit_metrics_aggregation_fn=lambda results: fits.append(len(results)) or {},
            evaluate_metrics_aggregation_fn=evaluated)
        return ServerAppComponents(strategy=strategy,
                                   config=ServerConfig(num_rounds=config.run.rounds))

    run_simulation(ServerApp(server_fn=server_fn), ClientApp(client_fn=client_fn),
                   num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"address": "local"}})  # never another's Ray
    assert fits == [n] * config.run.rounds and len(accuracy) == config.run.rounds
    return accuracy[-1]


def _flower_config(tmp_path: Path) -> Path:
    path = tmp_path / "flower.toml"
    path.write_text("[network]\ndevices = 4\nminers = 2\n[training]\nepochs = 2\nlr = 0.3\n")
    return path


def test_without_flower_the_flag_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import sys

    for name in ["flwr", *(m for m in sys.modules if m.startswith("flwr."))]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    code = main(["simulate", "--flower-client", "my_app.client:client_fn", "--ledger", "local",
                 "--rounds", "1", "--run-out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "needs Flower: pip install 'flwr==1.42.0'" in err and "\n" not in err
