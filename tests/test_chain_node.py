"""A network of processes whose chain node restarts: empty (the deployment is gone) or rolled
back. Real anvil, real `blockfl miner` / `blockfl device` processes through `LocalNetwork`."""

from __future__ import annotations

import time

import httpx
import pytest

from blockfl.chain.node import find_anvil
from blockfl.checker import check_run
from blockfl.client import MinerClient
from blockfl.events import read_events
from blockfl.launcher import LocalNetwork
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
    """anvil's evm_revert takes the chain back 3 rounds under running miners and devices: the
    network commits past the old head, every acknowledged update is in a block of the final
    chain or named (its base rolled back), nobody is paid twice, and the logs say so."""
    rounds = 8
    network = LocalNetwork(network_config(tmp_path, rounds=rounds), tmp_path / "net").start()
    try:
        network.wait_for_round(1, timeout=240)
        rpc = network.ledger.w3.provider.make_request
        base = network.ledger.head().round
        snapshot = rpc("evm_snapshot", [])["result"]
        network.wait_for_round(base + 3, timeout=300)
        old = network.ledger.blocks()
        assert rpc("evm_revert", [snapshot])["result"] is True
        assert network.ledger.head().round == base < len(old) < rounds
        network.wait_for_round(len(old) + 1, timeout=120)  # commits past the old head
        deadline = time.monotonic() + 300
        while any(d.running for d in network.devices) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert all(d.process.returncode == 0 for d in network.devices)  # type: ignore[union-attr]
        report = check_run(network.run_dir / "logs", network.ledger,
                           [MinerClient(network.miner_url(i)) for i in range(2)])
        assert report.ok, "\n".join(report.lines())
        assert report.head >= rounds and report.included > 0
        final = network.ledger.blocks()
        assert [b.block_hash for b in final[:base]] == [b.block_hash for b in old[:base]]
        for miner in network.miners:
            rollbacks = [e for e in read_events(miner.log) if e["event"] == "rollback"]
            assert [(e["from_round"], e["to_round"]) for e in rollbacks] == [(len(old), base)]
        followed = [e for d in network.devices for e in read_events(d.log)
                    if e["event"] == "rollback"]
        assert followed and all(e["head"] == base for e in followed)
    finally:
        network.stop()
