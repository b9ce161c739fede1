"""`blockfl chain up/deploy/down` against a real anvil, read back by a plain web3 client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from web3 import Web3

from blockfl.chain.evm import EvmLedger, rpc_web3
from blockfl.chain.node import STATE_INTERVAL, find_anvil, free_port, serves_here
from blockfl.keys import dev_key
from blockfl.signing import address_of
from tests.conftest import MINER_KEYS, MINERS, default_params
from tests.test_ledger_conformance import DEVICE_KEYS, block, honest_updates

pytestmark = pytest.mark.skipif(find_anvil() is None, reason="anvil binary not found")


def blockfl(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "blockfl.cli", *args], cwd=cwd, capture_output=True, text=True,
        timeout=120,
    )


def test_up_deploy_read_back_down(tmp_path):
    port = free_port()
    state = tmp_path / "state"
    up = blockfl("chain", "up", "--detach", "--port", str(port), "--state-dir", str(state),
                 cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    try:
        url = f"http://127.0.0.1:{port}"
        deploy = blockfl(
            "chain", "deploy", "--rpc-url", url, "--miners", "dev:1,dev:2",
            "--chain-block-rate", "0.5", "--chain-reward-per-sample", "7",
            "--out", str(tmp_path / "deployment.json"), cwd=tmp_path,
        )
        assert deploy.returncode == 0, deploy.stderr
        deployment = json.loads((tmp_path / "deployment.json").read_text())

        # any Ethereum client: plain web3 with the ABI and address from deployment.json
        w3 = Web3(Web3.HTTPProvider(deployment["rpc_url"]))
        assert w3.eth.chain_id == deployment["chain_id"] == 31337
        contract = w3.eth.contract(address=deployment["contract"], abi=deployment["abi"]["BlockFL"])
        params = contract.functions.parameters().call()
        assert params[1] == 7
        assert str(params[0]) == str(deployment["parameters"]["target"])
        assert deployment["miners"] == sorted(
            [address_of(dev_key(1)), address_of(dev_key(2))], key=lambda a: int(a, 16))
        assert contract.functions.isMiner(address_of(dev_key(1))).call()
        assert not contract.functions.isMiner(address_of(dev_key(3))).call()
        assert contract.functions.head().call()[0] == 0
        # the contract is its own reward token, an ERC-20
        token = w3.eth.contract(address=deployment["token"], abi=deployment["abi"]["BlockFL"])
        assert deployment["token"] == contract.functions.token().call() == deployment["contract"]
        assert token.functions.symbol().call() == "BFLR"
        assert token.functions.totalSupply().call() == 0
    finally:
        down = blockfl("chain", "down", "--state-dir", str(state), cwd=tmp_path)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not (state / "anvil.pid").exists()


def test_a_killed_node_keeps_its_chain_but_the_last_interval(tmp_path):
    """Plain `chain up --detach` keeps the chain in its state dir, saved every STATE_INTERVAL
    seconds: after a `kill -9` only the blocks of the last interval (and one save) are lost,
    and what survives is whole (blocks with their events, rewards)."""
    port, state = free_port(), tmp_path / "state"
    up = blockfl("chain", "up", "--detach", "--port", str(port), "--state-dir", str(state),
                 cwd=tmp_path)
    assert up.returncode == 0 and f"saved every {STATE_INTERVAL} s" in up.stdout, up.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        ledger = EvmLedger.create(rpc_web3(url), default_params(), MINERS)
        committed: dict[int, tuple[float, bytes]] = {}
        until = time.monotonic() + 3 * STATE_INTERVAL + 2
        while time.monotonic() < until:
            head = ledger.head()
            r = head.round + 1
            proposal = block(ledger, honest_updates(ledger, r, head.global_model_hash), r)
            receipt = ledger.commit_block(MINER_KEYS[0], proposal)
            committed[r] = (time.monotonic(), receipt.block_hash)
        pid = int((state / "anvil.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        while Path(f"/proc/{pid}").exists() and time.monotonic() < killed + 10:
            time.sleep(0.05)
        again = blockfl("chain", "up", "--detach", "--port", str(port), "--state-dir",
                        str(state), cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        back = EvmLedger(rpc_web3(url), ledger.contract.address)
        kept = back.head().round
        lost = {r: killed - t for r, (t, _) in committed.items() if r > kept}
        assert kept >= 1 and all(ago <= STATE_INTERVAL + 1.0 for ago in lost.values()), lost
        for r in range(1, kept + 1):
            record = back.get_block(r)
            assert record is not None and record.block_hash == committed[r][1]
        assert len(back.accepted_updates()) == len(DEVICE_KEYS) * kept
        assert back.balance_of(MINERS[0]) == kept * default_params().mining_reward
    finally:
        down = blockfl("chain", "down", "--state-dir", str(state), cwd=tmp_path)
    assert down.returncode == 0


def test_serves_here_names_a_server_by_its_bind_address_and_port():
    assert serves_here("http://127.0.0.1:8601", "127.0.0.1", 8601)
    assert serves_here("http://localhost:8601/", "127.0.0.1", 8601)
    assert serves_here("https://[::1]:8601", "::", 8601)
    assert serves_here("http://127.0.0.1:8601", "0.0.0.0", 8601)
    assert not serves_here("http://127.0.0.1:8602", "127.0.0.1", 8601)
    assert not serves_here("http://127.0.0.2:8601", "127.0.0.1", 8601)
    assert not serves_here("http://10.1.2.3:8601", "0.0.0.0", 8601)
    assert not serves_here("http://127.0.0.1:99999", "127.0.0.1", 8601)  # no port: no match
