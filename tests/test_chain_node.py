"""A network of processes whose chain node restarts: empty (the deployment is gone) or rolled
back. Real anvil, real `blockfl miner` / `blockfl device` processes through `LocalNetwork`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from blockfl.chain.deployment import Deployment
from blockfl.chain.node import find_anvil, free_port, start_anvil, stop_pid
from blockfl.checker import check_run
from blockfl.client import MinerClient
from blockfl.events import read_events
from blockfl.launcher import LocalNetwork, Role
from tests.conftest import small_config

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.slow,
    pytest.mark.skipif(find_anvil() is None, reason="anvil binary not found (npm install)"),
]


def network_config(tmp_path, rounds: int = 50, t_wait: float = 2.0, **chain):
    return small_config(
        tmp_path,
        run={"rounds": rounds, "out_dir": str(tmp_path)},
        training={"compute_time": "measured"},  # as in the README: a re-upload is a new update
        network={"devices": 3, "miners": 2, "t_wait": t_wait},
        chain={"block_rate": 2.0, "hash_rate": 20_000.0, **chain},
        verification={"max_payload_bytes": 100_000},
    )


@contextlib.contextmanager
def paused(roles: list[Role], settle: float = 0.5) -> Iterator[None]:
    """SIGSTOP the roles' processes (and let what they sent land) for the block; SIGCONT after."""
    groups = [r.process.pid for r in roles if r.process is not None]
    for group in groups:
        os.killpg(group, signal.SIGSTOP)
    try:
        time.sleep(settle)
        yield
    finally:
        for group in groups:
            os.killpg(group, signal.SIGCONT)


def output(network: LocalNetwork, role: str) -> str:
    return (network.run_dir / "logs" / f"{role}.out").read_text()


def test_a_node_back_without_the_deployment_is_a_named_condition(tmp_path):
    network = LocalNetwork(network_config(tmp_path), tmp_path / "net", give_up=4).start()
    try:
        network.wait_for_round(1, timeout=180)
        network.stop_node(kill=True)
        network.start_node(keep_state=False)  # a node that lost its state: no contract
        deadline = time.monotonic() + 120
        while any(d.running for d in network.devices) and time.monotonic() < deadline:
            time.sleep(0.5)
        for device in network.devices:
            assert device.process is not None and device.process.returncode == 2, output(
                network, device.name)
            last = read_events(device.log)[-1]
            assert last["event"] == "gave_up" and last["reason"] == "deployment_missing"
            out = output(network, device.name)
            assert "gave up after 4 s: the chain node lost the deployment" in out, out
            assert "has no contract at" in out and "Traceback" not in out, out
        time.sleep(3)  # the miners kept looking meanwhile: still one line each
        for i, miner in enumerate(network.miners):
            assert miner.running, miner.name
            health = httpx.get(f"{network.miner_url(i)}/health", timeout=10)
            assert health.status_code == 503 and health.json()["error"] == "deployment_missing"
            events = read_events(miner.log)
            assert sum(e["event"] == "deployment_missing" for e in events) == 1
            assert not [e for e in events if e["event"] in ("error", "internal_error")], events
            assert "Traceback" not in output(network, miner.name)
    finally:
        network.stop()


def test_a_rollback_during_a_live_network_is_followed(tmp_path):
    """anvil's evm_revert takes the chain back 10 rounds under running miners and devices: the
    network commits past the old head within two minutes, every acknowledged update is in a
    block of the final chain or named (its base rolled back), nobody is paid twice, and the
    logs say so."""
    rounds = 14
    network = LocalNetwork(network_config(tmp_path, rounds=rounds), tmp_path / "net").start()
    try:
        network.wait_for_round(1, timeout=240)
        rpc = network.ledger.w3.provider.make_request
        base = network.ledger.head().round
        snapshot = rpc("evm_snapshot", [])["result"]
        network.wait_for_round(base + 10, timeout=400)
        with paused(network.miners):  # no commit lands between reading the head and the revert
            old = network.ledger.blocks()
            assert rpc("evm_revert", [snapshot])["result"] is True
        assert network.ledger.head().round == base < len(old) < rounds
        network.wait_for_round(len(old) + 1, timeout=120)  # commits past the old head
        deadline = time.monotonic() + 300
        while any(d.running for d in network.devices) and time.monotonic() < deadline:
            time.sleep(0.5)
        for device in network.devices:
            assert device.process is not None and device.process.returncode == 0, (
                device.name, device.process and device.process.returncode,
                output(network, device.name)[-3000:])
        report = check_run(network.run_dir / "logs", network.ledger,
                           [MinerClient(network.miner_url(i)) for i in range(2)])
        assert report.ok, "\n".join(report.lines())
        assert report.head >= rounds and report.included > 0
        final = network.ledger.blocks()
        assert [b.block_hash for b in final[:base]] == [b.block_hash for b in old[:base]]
        for miner in network.miners:
            rollbacks = [e for e in read_events(miner.log) if e["event"] == "rollback"]
            # from the head this miner had seen (another's last commit may not have reached it)
            assert [e["to_round"] for e in rollbacks] == [base], rollbacks
            assert base < rollbacks[0]["from_round"] <= len(old), rollbacks
        followed = [e for d in network.devices for e in read_events(d.log)
                    if e["event"] == "rollback"]
        assert followed and all(base < e["base"] <= len(old) for e in followed), followed
    finally:
        network.stop()


def test_network_up_with_a_fault_schedule_passes_its_check(tmp_path):
    """One command reproduces the faults (a miner and a device killed and restarted, the node
    killed and restarted from its state, a rollback of 2 rounds) and checks the run after; the
    checker fails a run whose logs acknowledge an update no block holds."""
    run_dir = tmp_path / "net"
    result = subprocess.run(
        [sys.executable, "-m", "blockfl.cli", "network", "up", "--miners", "3", "--devices", "3",
         "--rounds", "8", "--run-dir", str(run_dir), "--model-name", "logreg",
         "--network-t-wait", "3", "--kill", "miner1:1", "--kill", "device2:2", "--down", "3",
         "--restart-node", "2", "--rollback", "6:2"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "valid: yes" in result.stdout and "lost: 0" in result.stdout, result.stdout[-3000:]
    injected = [e["event"] for e in read_events(run_dir / "logs" / "faults.jsonl")]
    assert sorted(injected) == sorted(["killed", "killed", "restarted", "restarted",
                                       "node_restarted", "snapshot", "rolled_back"])
    rolled = next(e for e in read_events(run_dir / "logs" / "faults.jsonl")
                  if e["event"] == "rolled_back")
    assert rolled["reverted"] and rolled["round"] - rolled["to_round"] >= 2

    # the chain outlives the run: check it again, then with an acknowledged update made up
    port = free_port()
    node = start_anvil(port, state=run_dir / "anvil-state.json")
    try:
        ledger = Deployment.read(run_dir / "deployment.json").ledger(f"http://127.0.0.1:{port}")
        assert check_run(run_dir / "logs", ledger).ok
        forged = {"role": "device 0x" + "ab" * 20, "event": "uploaded", "round": 2,
                  "update_hash": "0x" + "cd" * 32, "miner": "http://127.0.0.1:1"}
        with (run_dir / "logs" / "device0.jsonl").open("a") as log:
            log.write(json.dumps(forged) + "\n")
        report = check_run(run_dir / "logs", ledger)
        assert not report.ok and [v.invariant for v in report.violations] == ["lost"]
        assert "valid: NO" in report.lines()
    finally:
        stop_pid(node.pid)


def test_every_call_to_a_node_that_went_away_is_chain_unavailable():
    """A miner commits through calls that are neither views nor `send` (the block gas limit,
    the block's event logs): with the node gone they raised `requests`' ConnectionError,
    which the miner's loop logged as an `error` instead of the named condition."""
    from blockfl.chain.errors import ChainUnavailable
    from blockfl.chain.evm import EvmLedger, commit_gas_limit, rpc_web3
    from tests.conftest import default_params

    port = free_port()
    node = start_anvil(port)
    ledger = EvmLedger.create(rpc_web3(f"http://127.0.0.1:{port}"), default_params(),
                              ["0x" + "11" * 20])
    stop_pid(node.pid)
    for call in (lambda: commit_gas_limit(ledger.w3, 3), lambda: ledger.get_block(1),
                 ledger.head, lambda: ledger.balance_of("0x" + "22" * 20)):
        with pytest.raises(ChainUnavailable, match="does not answer"):
            call()


def test_a_block_rolled_back_between_its_reads_is_absent_not_an_error():
    """`get_block` reads the block, then its event, then the EVM block of the event (for its
    time): a rollback before the last read made a device die with `BlockNotFound` (seen in
    `network up --rollback`); the block is absent then, as after the first two reads."""
    from blockfl.chain.evm import EvmLedger, rpc_web3
    from tests.conftest import MINERS, default_params
    from tests.test_chain_keeper import commit_rounds

    port = free_port()
    node = start_anvil(port, state_interval=None)
    try:
        ledger = EvmLedger.create(rpc_web3(f"http://127.0.0.1:{port}"), default_params(), MINERS)
        snapshot = ledger.w3.provider.make_request("evm_snapshot", [])["result"]
        commit_rounds(ledger, 1)
        assert ledger.get_block(1) is not None
        read_time = ledger.w3.eth.get_block

        def rolled_back_first(number, *args):
            assert ledger.w3.provider.make_request("evm_revert", [snapshot])["result"] is True
            return read_time(number, *args)

        ledger.w3.eth.get_block = rolled_back_first  # the node reverts right before the read
        assert ledger.get_block(1) is None
    finally:
        node.terminate()
        node.wait(timeout=15)
