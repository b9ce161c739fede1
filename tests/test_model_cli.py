"""`blockfl model export|evaluate|predict` on a real anvil chain, and the model in plain PyTorch.

The chain records a genesis model and, for round 1, a model trained on the digits training
data; the run directory holds the miners' content-addressed model stores as `network up` leaves
them. The exported file must hash to the chain's value, score as a trained model does, and load
into a plain `torch.nn.Module` (the README's snippet) with the same predictions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from blockfl.chain.blocks import BlockProposal, sort_updates
from blockfl.chain.deployment import describe
from blockfl.chain.evm import DEV_DEPLOYER_KEY, EvmLedger, rpc_web3
from blockfl.cli import main
from blockfl.config import TrainingConfig, load_config
from blockfl.devices.training_batched import train_local
from blockfl.hashing import to_hex
from blockfl.signing import address_of
from blockfl.sim.setup import build_experiment
from blockfl.store import ModelStore
from blockfl.tensors import encode, tensor_hash
from tests.conftest import MINER_KEYS, MINERS, default_params, key
from tests.test_ledger_conformance import mined, signed


@dataclass
class Run:
    """A deployment with one committed round and a run directory of miner model stores."""

    run_dir: Path
    ledger: EvmLedger
    genesis: bytes
    trained: bytes


class Net(torch.nn.Module):
    """The packaged network config's MLP written in plain PyTorch (as in the README)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU())
        self.out = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


@pytest.fixture(scope="module")
def run(anvil_url, tmp_path_factory) -> Run:
    config = load_config("network")
    experiment = build_experiment(config)
    train = experiment.shards[0]
    for shard in experiment.shards[1:]:
        train = type(train)(torch.cat([train.x, shard.x]), torch.cat([train.y, shard.y]),
                            train.input_shape, train.n_outputs, train.task)
    update = train_local(config.model.name, experiment.initial, train,
                         TrainingConfig(epochs=5, lr=0.3, batch_size=32), 0)
    trained = {k: experiment.initial[k] + update.delta[k] for k in experiment.initial}

    run_dir = tmp_path_factory.mktemp("model") / "net"
    ledger = EvmLedger.create(rpc_web3(anvil_url),
                              default_params(genesis_model_hash=experiment.genesis_hash), MINERS)
    describe(ledger, anvil_url, address_of(DEV_DEPLOYER_KEY)).write(
        (run_dir.mkdir(parents=True) or run_dir) / "deployment.json")
    model_hash = tensor_hash(trained)
    proposal = BlockProposal(
        ledger.head().block_hash, 1, model_hash,
        tuple(sort_updates([signed(ledger, key("model-device"), 100, 1,
                                   experiment.genesis_hash)])), MINERS[0])
    ledger.commit_block(MINER_KEYS[0], mined(ledger, proposal))
    for i in range(2):
        store = ModelStore(run_dir / f"miner{i}" / "models")
        store.put(experiment.initial)
        store.put(trained)
    return Run(run_dir, ledger, experiment.genesis_hash, model_hash)


def blockfl(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_export_checks_against_the_chain_then_evaluate_and_predict(run, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    code, text, _ = blockfl(capsys, "model", "export", "1", "--run-dir", str(run.run_dir),
                            "--out", str(out))
    assert code == 0 and to_hex(run.trained) in text
    assert tensor_hash(load_file(out)) == run.trained
    genesis = tmp_path / "genesis.safetensors"
    assert blockfl(capsys, "model", "export", "0", "--run-dir", str(run.run_dir),
                   "--out", str(genesis))[0] == 0

    scores = {}
    for name, path in (("trained", out), ("genesis", genesis)):
        code, text, _ = blockfl(capsys, "model", "evaluate", str(path), "--json")
        assert code == 0
        scores[name] = json.loads(text)
    assert scores["trained"]["accuracy"] > 0.85 > 0.3 > scores["genesis"]["accuracy"]
    assert scores["trained"]["loss"] < scores["genesis"]["loss"]

    test = build_experiment(load_config("network")).test
    samples = tmp_path / "digits.npy"
    np.save(samples, test.x[:20].numpy().reshape(20, 64))  # flattened rows work too
    code, text, _ = blockfl(capsys, "model", "predict", str(out), "--input", str(samples),
                            "--json", "--out", str(tmp_path / "outputs.npy"))
    assert code == 0
    predicted = [row["class"] for row in json.loads(text)]
    assert sum(p == int(y) for p, y in zip(predicted, test.y[:20], strict=True)) >= 16

    plain = Net()  # the README's plain PyTorch: no blockfl import needed to use the model
    plain.load_state_dict(load_file(out))
    assert plain(test.x[:20]).argmax(1).tolist() == predicted
    assert np.allclose(np.load(tmp_path / "outputs.npy"), plain(test.x[:20]).detach().numpy(),
                       atol=1e-6)


def test_export_refuses_copies_that_differ_from_the_chain(run, tmp_path, capsys):
    tampered = run.run_dir / "miner0" / "models" / f"{to_hex(run.trained)}.safetensors"
    original = tampered.read_bytes()
    state = load_file(tampered)
    try:
        tampered.write_bytes(encode({k: v * 2 for k, v in state.items()}))
        out = tmp_path / "model.safetensors"
        code, text, _ = blockfl(capsys, "model", "export", "1", "--run-dir", str(run.run_dir),
                                "--out", str(out))
        assert code == 0 and "miner1" in text  # the honest copy
        assert tensor_hash(load_file(out)) == run.trained

        (run.run_dir / "miner1" / "models" / tampered.name).write_bytes(tampered.read_bytes())
        code, _, err = blockfl(capsys, "model", "export", "1", "--run-dir", str(run.run_dir),
                               "--out", str(tmp_path / "other.safetensors"))
        assert code == 2 and "does not hash to the chain's value" in err
        assert not (tmp_path / "other.safetensors").exists()
    finally:
        for i in range(2):
            (run.run_dir / f"miner{i}" / "models" / tampered.name).write_bytes(original)


@pytest.mark.parametrize(("argv", "message"), [
    (["export", "5", "--out", "x.safetensors"], "no block committed for round 5"),
    (["export", "1", "--out", "x.safetensors", "--miners", "http://127.0.0.1:9"],
     "127.0.0.1:9"),
])
def test_export_errors_are_one_line(run, tmp_path, capsys, argv, message):
    code, _, err = blockfl(capsys, "model", *argv,
                           "--deployment", str(run.run_dir / "deployment.json"))
    assert code == 2 and message in err and "Traceback" not in err


def test_predict_and_evaluate_errors_are_one_line(tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    model.write_bytes(encode({"w": torch.zeros(3)}))
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros(7))
    code, _, err = blockfl(capsys, "model", "evaluate", str(model))
    assert code == 2 and "does not fit model 'mlp'" in err
    code, _, err = blockfl(capsys, "model", "predict", str(model), "--input", str(bad))
    assert code == 2 and "not a whole number of samples" in err
    code, _, err = blockfl(capsys, "model", "predict", str(model), "--input",
                           str(tmp_path / "none.npy"))
    assert code == 2 and "cannot read" in err
