"""`blockfl inspect` against a real anvil: two mined blocks read back through deployment.json."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from web3 import Web3

from blockfl.chain.blocks import BlockProposal, sort_updates
from blockfl.chain.deployment import describe
from blockfl.chain.evm import DEV_DEPLOYER_KEY, EvmLedger, fund, rpc_web3, send
from blockfl.cli.inspect import register, tokens
from blockfl.hashing import keccak, to_hex
from blockfl.signing import address_of
from blockfl.tensors import tensor_hash
from tests.conftest import GENESIS, MINER_KEYS, MINERS, default_params, key
from tests.test_ledger_conformance import mined, signed

DEVICE_KEYS = [key(f"inspect-device-{i}") for i in range(3)]
DEVICES = [address_of(k) for k in DEVICE_KEYS]
SAMPLES = {1: [120, 80, 200], 2: [50, 60, 70]}
BLOCK_MINER = {1: 0, 2: 1}  # round -> index into MINERS
PARAMS = default_params()


@dataclass
class Chain:
    """A deployment with committed rounds, its deployment.json and the rounds' model files."""

    ledger: EvmLedger
    deployment: Path
    models: dict[int, Path]
    model_hashes: dict[int, bytes]
    block_hashes: dict[int, bytes]


def save_model(path: Path, seed: int) -> bytes:
    """Write a small safetensors model; return its tensor hash."""
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3) * seed, "b": torch.ones(3)}
    save_file(state, str(path))
    return tensor_hash(state)


def deploy(url: str, tmp: Path, rounds: int) -> Chain:
    """Deploy on anvil, write deployment.json, commit `rounds` signed and mined blocks."""
    ledger = EvmLedger.create(rpc_web3(url), PARAMS, MINERS)
    chain = Chain(ledger, tmp / "deployment.json", {}, {}, {})
    describe(ledger, url, address_of(DEV_DEPLOYER_KEY)).write(chain.deployment)
    base = GENESIS
    for round_ in range(1, rounds + 1):
        chain.models[round_] = tmp / f"model-{round_}.safetensors"
        model = chain.model_hashes[round_] = save_model(chain.models[round_], round_)
        updates = [signed(ledger, k, n, round_, base)
                   for k, n in zip(DEVICE_KEYS, SAMPLES[round_], strict=True)]
        miner = BLOCK_MINER[round_]
        proposal = BlockProposal(ledger.head().block_hash, round_, model,
                                 tuple(sort_updates(updates)), MINERS[miner])
        receipt = ledger.commit_block(MINER_KEYS[miner], mined(ledger, proposal))
        chain.block_hashes[round_] = receipt.block_hash
        base = model
    return chain


@pytest.fixture(scope="module")
def chain(anvil_url, tmp_path_factory) -> Chain:
    return deploy(anvil_url, tmp_path_factory.mktemp("inspect"), rounds=2)


def inspect(capsys, chain: Chain, *argv: str) -> tuple[int, str, str]:
    """Run `blockfl inspect ARGV --deployment ...` through a parser built by `register`."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["inspect", *argv, "--deployment", str(chain.deployment)])
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_tokens_are_exact():
    assert tokens(10**18) == "1"
    assert tokens(5 * 10**17) == "0.5"
    assert tokens(1234 * 10**18 + 1) == "1,234.000000000000000001"
    assert tokens(0) == "0"


def test_blocks(chain, capsys):
    code, out, _ = inspect(capsys, chain, "blocks", "--json")
    assert code == 0
    found = json.loads(out)
    assert [b["round"] for b in found] == [1, 2]
    for b in found:
        round_ = b["round"]
        assert b["miner"] == MINERS[BLOCK_MINER[round_]]
        assert b["global_model_hash"] == to_hex(chain.model_hashes[round_])
        assert b["block_hash"] == to_hex(chain.block_hashes[round_])
        assert b["num_updates"] == 3
        assert b["total_samples"] == sum(SAMPLES[round_])
        assert datetime.fromisoformat(b["time"]).timestamp() == b["timestamp"]
    assert found[1]["prev_hash"] == found[0]["block_hash"]

    code, out, _ = inspect(capsys, chain, "blocks", "--from", "2", "--json")
    assert [b["round"] for b in json.loads(out)] == [2]
    code, out, _ = inspect(capsys, chain, "blocks", "--to", "1")
    assert code == 0 and MINERS[0] in out and MINERS[1] not in out


def test_updates(chain, capsys):
    code, out, _ = inspect(capsys, chain, "updates", "1", "--json")
    assert code == 0
    found = json.loads(out)
    by_device = {u["device"]: u for u in found}
    assert [u["device"] for u in found] == sorted(DEVICES, key=lambda a: int(a, 16))
    for k, device, samples in zip(DEVICE_KEYS, DEVICES, SAMPLES[1], strict=True):
        assert by_device[device]["samples"] == samples
        assert by_device[device]["reward"] == str(samples * PARAMS.reward_per_sample)
        assert by_device[device]["update_hash"] == to_hex(keccak(k + bytes([1])))
    code, out, _ = inspect(capsys, chain, "updates", "2")
    assert code == 0 and tokens(SAMPLES[2][0] * PARAMS.reward_per_sample) in out
    code, out, err = inspect(capsys, chain, "updates", "3", "--json")
    assert code == 1 and out == ""
    assert "no block committed for round 3 (the head is round 2)" in err


def test_rewards_agree_with_events_and_a_plain_client(chain, capsys):
    code, out, _ = inspect(capsys, chain, "rewards", "--json")
    assert code == 0
    report = json.loads(out)
    rows = {r["address"]: r for r in report["rows"]}
    expected = {d: sum(SAMPLES[r][i] for r in SAMPLES) * PARAMS.reward_per_sample
                for i, d in enumerate(DEVICES)}
    expected |= {MINERS[m]: PARAMS.mining_reward for m in BLOCK_MINER.values()}
    assert set(rows) == set(expected)

    deployment = json.loads(chain.deployment.read_text())
    w3 = Web3(Web3.HTTPProvider(deployment["rpc_url"]))
    token = w3.eth.contract(address=deployment["token"], abi=deployment["abi"]["BlockFL"])
    for address, amount in expected.items():
        row = rows[address]
        assert row["balance"] == row["event_total"] == str(amount)
        assert row["agrees"] is True
        assert token.functions.balanceOf(address).call() == amount
        assert row["role"] == ("device" if address in DEVICES else "miner")
    assert report["total"] == {"balance": str(sum(expected.values())),
                               "event_total": str(sum(expected.values()))}
    assert report["agrees"] is True

    code, out, _ = inspect(capsys, chain, "rewards")
    assert code == 0 and "total" in out and tokens(sum(expected.values())) in out


def test_rewards_flag_transferred_tokens(anvil_url, tmp_path, capsys):
    chain = deploy(anvil_url, tmp_path, rounds=1)
    fund(chain.ledger.w3, [DEVICES[0]])
    transfer = chain.ledger.contract.functions.transfer(DEVICES[1], 7)
    send(chain.ledger.w3, DEVICE_KEYS[0], transfer, {})
    code, out, _ = inspect(capsys, chain, "rewards", "--json")
    assert code == 1
    report = json.loads(out)
    disagreeing = {r["address"] for r in report["rows"] if not r["agrees"]}
    assert disagreeing == {DEVICES[0], DEVICES[1]} and report["agrees"] is False
    code, out, _ = inspect(capsys, chain, "rewards")
    assert code == 1 and "NO" in out


def test_model(chain, capsys, tmp_path):
    for round_ in (1, 2):
        code, out, _ = inspect(capsys, chain, "model", str(round_), "--file",
                            str(chain.models[round_]), "--json")
        assert code == 0
        check = json.loads(out)
        assert check["matches"] is True
        assert check["file_hash"] == check["chain_hash"] == to_hex(chain.model_hashes[round_])

    code, out, _ = inspect(capsys, chain, "model", "1", "--file", str(chain.models[2]))
    assert code == 1 and "MISMATCH" in out and to_hex(chain.model_hashes[1]) in out

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    for round_, path in (("1", garbage), ("1", tmp_path / "missing"), ("9", chain.models[1])):
        code, _, err = inspect(capsys, chain, "model", round_, "--file", str(path))
        assert code == 2 and "cannot check" in err, (round_, path)
