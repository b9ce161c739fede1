"""`chain deploy` writes the genesis model beside deployment.json; miners start from that file
without running any task code, devices from it once their task's name and tensor spec match
the deployment's; a missing, corrupt or foreign genesis file is one line naming the file."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from blockfl.cli import main
from blockfl.cli.nodes import deployed
from blockfl.config import TaskConfig, load_config
from blockfl.genesis import genesis_file
from blockfl.protocol import SpecMismatch
from blockfl.sim.setup import build_experiment, task_genesis
from blockfl.tensors import encode, tensor_hash


def _deploy(capsys, tmp_path: Path, url: str) -> Path:
    out = tmp_path / "deployment.json"
    code = main(["chain", "deploy", "--rpc-url", url, "--out", str(out), "--config", "network"])
    err = capsys.readouterr().err
    assert code == 0 and str(genesis_file(out)) in err
    return out


def _args(path: Path, url: str) -> argparse.Namespace:
    return argparse.Namespace(deployment=path, rpc_url=url)


@pytest.fixture
def deployment(anvil_url, tmp_path, capsys) -> Path:
    return _deploy(capsys, tmp_path, anvil_url)


def test_deploy_writes_the_genesis_model_whose_hash_is_on_chain(deployment, anvil_url):
    config = load_config("network")
    genesis, state = task_genesis(config)
    written = genesis_file(deployment)
    assert written.name == "deployment.genesis.safetensors"
    assert written.read_bytes() == encode(state)
    node = deployed(config, _args(deployment, anvil_url))
    assert node.ledger.params().genesis_model_hash == tensor_hash(state) == genesis.model_hash
    assert tensor_hash(node.genesis) == genesis.model_hash
    assert node.spec.genesis == genesis


def test_a_miner_starts_from_the_file_and_runs_no_task_code(deployment, anvil_url):
    config = replace(load_config("network"), task=TaskConfig(module="no_such_module:TASK"))
    node = deployed(config, _args(deployment, anvil_url))  # never imports the task
    assert tensor_hash(node.genesis) == node.spec.genesis_model_hash


def test_a_device_starts_from_the_file_even_when_its_initialisation_differs(
        deployment, anvil_url):
    config = load_config("network")
    other_seed = replace(config, run=replace(config.run, seed=99))  # another initial model
    experiment = build_experiment(other_seed)
    assert experiment.genesis_hash != task_genesis(config)[0].model_hash
    node = deployed(other_seed, _args(deployment, anvil_url), experiment.genesis)
    assert tensor_hash(node.genesis) == task_genesis(config)[0].model_hash


def test_a_device_whose_task_is_not_the_deployments_refuses_naming_what_differs(
        deployment, anvil_url):
    config = load_config("network")
    logreg = replace(config, model=replace(config.model, name="logreg"))
    with pytest.raises(SpecMismatch) as info:
        deployed(logreg, _args(deployment, anvil_url), build_experiment(logreg).genesis)
    message = str(info.value)
    assert "task.name = 'builtin:digits/logreg' here, 'builtin:digits/mlp' deployed" in message
    assert "task.tensor_spec.features.1.weight = None here, [[64, 64], 'float32'] deployed" \
        in message
    assert "\n" not in message


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: p.unlink(), "no genesis model file"),
    (lambda p: p.write_bytes(b"junk"), "is not a safetensors model file"),
    (lambda p: p.write_bytes(encode({"w": torch.zeros(2)})), "belongs to another deployment"),
])
def test_a_bad_genesis_file_is_one_line_naming_it(deployment, anvil_url, capsys, damage,
                                                  message):
    damage(genesis_file(deployment))
    code = main(["device", "--key", "dev:9", "--miners", "http://127.0.0.1:9", "--shard", "0",
                 "--deployment", str(deployment), "--rpc-url", anvil_url, "--config", "network"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and str(genesis_file(deployment)) in err
    assert "\n" not in err
