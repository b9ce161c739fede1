"""A network of processes whose chain node restarts: empty (the deployment is gone) or rolled
back. Real anvil, real `blockfl miner` / `blockfl device` processes through `LocalNetwork`."""

from __future__ import annotations

import time

import httpx
import pytest

from blockfl.chain.node import find_anvil
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
