"""A real local network on loopback: anvil, miner and device processes, faults injected.

Each test starts anvil and `blockfl miner` / `blockfl device` processes through `LocalNetwork`,
then kills, restarts and abuses them, and checks what the chain says at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import httpx
import pytest

from blockfl.chain.node import find_anvil, free_port, port_in_use, start_anvil, stop_pid
from blockfl.client import MinerClient
from blockfl.devices.device import Device, device_seed
from blockfl.devices.process import DeviceProcess
from blockfl.events import EventLog, read_events
from blockfl.launcher import LocalNetwork
from blockfl.signing import SignedUpdate, address_of, sign_update
from blockfl.sim.setup import build_experiment
from blockfl.wire import RECORD_HEADER, TENSOR_MEDIA_TYPE, record_header
from tests.conftest import small_config

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.slow,
    pytest.mark.skipif(find_anvil() is None, reason="anvil binary not found (npm install)"),
]


def network_config(tmp_path, devices: int, miners: int, rounds: int, t_wait: float):
    return small_config(
        tmp_path,
        run={"rounds": rounds, "out_dir": str(tmp_path)},
        network={"devices": devices, "miners": miners, "t_wait": t_wait},
        training={"compute_time": "measured"},
        chain={"block_rate": 2.0, "hash_rate": 20_000.0},
        verification={"max_payload_bytes": 100_000},
    )


def assert_balances_match_blocks(network: LocalNetwork) -> None:
    """Every device holds exactly its accepted samples' reward, every miner its blocks'."""
    ledger = network.ledger
    params = ledger.params()
    head = ledger.head().round
    earned: dict[str, int] = {}
    for update in ledger.accepted_updates():
        reward = update.samples * params.reward_per_sample
        earned[update.device] = earned.get(update.device, 0) + reward
    for r in range(1, head + 1):
        block = ledger.get_block(r)
        assert block is not None
        earned[block.miner] = earned.get(block.miner, 0) + params.mining_reward
    for j in range(len(network.devices)):
        address = address_of(network.device_key(j))
        assert ledger.balance_of(address) == earned.get(address, 0), f"device {j}"
    for i in range(len(network.miners)):
        address = address_of(network.miner_key(i))
        assert ledger.balance_of(address) == earned.get(address, 0), f"miner {i}"


def test_network_keeps_committing_through_faults(tmp_path):
    config = network_config(tmp_path, devices=4, miners=3, rounds=3, t_wait=4.0)
    network = LocalNetwork(config, tmp_path / "net").start(start_devices=False)
    try:
        # abuse a live miner over HTTP: each gets a clear JSON error, nothing is accepted
        url = network.miner_url(0)
        experiment = build_experiment(config)
        outsider = Device(network.device_key(50), experiment.shards[0], experiment.task,
                          config.training, experiment.initial)
        good = outsider.train(1, network.ledger.domain).submission
        forged = SignedUpdate(good.signed.record,
                              sign_update(network.device_key(1), good.signed.record,
                                          network.ledger.domain))
        headers = {"Content-Type": TENSOR_MEDIA_TYPE, RECORD_HEADER: record_header(good.signed)}
        abuse = {
            "malformed body": (dict(content=b"not safetensors", headers=headers), 400),
            "oversized upload": (dict(content=b"\0" * 200_000, headers=headers), 413),
            "wrong content type": (dict(content=good.payload,
                                        headers=headers | {"Content-Type": "text/plain"}), 415),
            "forged record": (dict(content=good.payload, headers=headers | {
                RECORD_HEADER: record_header(forged)}), 400),
            "garbage record": (dict(content=good.payload,
                                    headers=headers | {RECORD_HEADER: "[1,2"}), 400),
        }
        for name, (request, status) in abuse.items():
            response = httpx.post(f"{url}/updates", timeout=10, **request)
            assert response.status_code == status, (name, response.text)
            assert response.json()["error"], name
        block = httpx.post(f"{url}/blocks", content=b"{]", timeout=10)
        assert block.json()["error"] == "malformed_block"
        assert MinerClient(url).info()["pending"] == []

        for role in network.devices:
            network.start_role(role)
        network.wait_for_round(1, timeout=180)

        # a miner that stays down and a device that disconnects
        network.stop_role(network.miners[2], kill=True)
        network.stop_role(network.devices[3], kill=True)
        network.wait_for_round(3, timeout=240)

        assert httpx.get(f"{url}/health", timeout=10).json() == {"ok": True}
        head = network.ledger.head()
        for i in (0, 1):
            info = MinerClient(network.miner_url(i)).info()
            assert info["head"]["round"] >= 3
        # every live miner and device holds the model the chain names
        for i in (0, 1):
            model = MinerClient(network.miner_url(i)).model(head.global_model_hash)
            assert model is not None
        assert_balances_match_blocks(network)
    finally:
        network.stop()
    devices_done = [read_events(tmp_path / "net" / "logs" / f"device{j}.jsonl") for j in range(3)]
    for events in devices_done:
        assert any(e["event"] == "finished" for e in events)
        assert all(e["event"] != "model_mismatch" for e in events)


def test_killed_miner_loses_no_acknowledged_update(tmp_path, capsys):
    # the block is full only with all 3 devices, and T_wait is long: the round stays open
    config = network_config(tmp_path, devices=3, miners=2, rounds=1, t_wait=600.0)
    network = LocalNetwork(config, tmp_path / "net").start(start_devices=False)
    try:
        experiment = build_experiment(config)
        domain = network.ledger.domain
        devices = [
            Device(network.device_key(j), shard, experiment.task, config.training,
                   experiment.initial, seed=device_seed(config.run.seed, j))
            for j, shard in enumerate(experiment.shards)
        ]
        miner0, miner1 = (MinerClient(network.miner_url(i), timeout=10) for i in (0, 1))
        first = devices[0].train(1, domain).submission
        assert miner0.upload(first)["accepted"]
        network.stop_role(network.miners[0], kill=True)  # SIGKILL right after the ack

        # a device whose miner is down retries the other one
        log = EventLog("device1", tmp_path / "device1.jsonl")
        process = DeviceProcess(devices[1], network.ledger, [miner0, miner1], log, seed=1)
        process.upload(devices[1].train(1, domain).submission)  # seed 1 draws miner0 first
        events = [(e["event"], e.get("miner")) for e in read_events(tmp_path / "device1.jsonl")]
        assert events == [("miner_down", miner0.url), ("uploaded", miner1.url)]

        network.start_role(network.miners[0])
        assert devices[0].address in miner0.info()["pending"]  # restored from its journal
        assert miner0.upload(devices[2].train(1, domain).submission)["accepted"]
        network.wait_for_round(1, timeout=120)

        paid = {u.device for u in network.ledger.accepted_updates(1)}
        assert paid == {d.address for d in devices}
        assert_balances_match_blocks(network)

        # a device that restarts resumes from the chain: it fetches and checks the head model
        fresh = Device(network.device_key(0), experiment.shards[0], experiment.task,
                       config.training, experiment.initial)
        resumed = DeviceProcess(fresh, network.ledger, [miner0, miner1],
                                EventLog("fresh", tmp_path / "fresh.jsonl"), recompute=True)
        resumed.follow(network.ledger.head())
        assert fresh.global_hash == network.ledger.head().global_model_hash
        model_events = [e for e in read_events(tmp_path / "fresh.jsonl") if e["event"] == "model"]
        assert model_events[-1]["recomputed"] is True
        resumed.run(rounds=1, stop=threading.Event())  # nothing left to do: returns at once

        # a key that is not a registered miner is refused before the service starts
        from blockfl.cli import main

        code = main(["miner", "--key", "dev:50", "--deployment", str(network.deployment_path),
                     "--config", str(network.config_path), "--port", "1"])
        assert code == 2
        assert "is not a registered miner" in capsys.readouterr().err
    finally:
        network.stop()


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports on 127.0.0.2."""
    while True:
        first = free_port()
        if first + count <= 65535 and not any(port_in_use(p, "127.0.0.2")
                                              for p in range(first, first + count)):
            return first


def test_network_up_command(tmp_path):
    # bound to another loopback address on given ports: the TLS certificate must name it
    first = free_ports(3)
    result = subprocess.run(
        [sys.executable, "-m", "blockfl.cli", "network", "up", "--miners", "2", "--devices", "2",
         "--rounds", "1", "--run-dir", str(tmp_path / "net"), "--json", "--tls",
         "--host", "127.0.0.2", "--port", str(first),
         "--model-name", "logreg", "--network-t-wait", "5"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for i in range(2):
        assert f"miner {i}: https://127.0.0.2:{first + 1 + i}" in result.stderr
    deployment = json.loads((tmp_path / "net" / "deployment.json").read_text())
    assert deployment["rpc_url"] == f"http://127.0.0.2:{first}"
    summary = json.loads(result.stdout)
    assert [b["round"] for b in summary["blocks"]] == [1]
    assert all(r["agrees"] for r in summary["rewards"])
    assert [m["round"] for m in summary["models"]] == [1]
    assert summary["models"][0]["accuracy"] > 0.2  # 10 classes: one round beats chance
    assert (tmp_path / "net" / "tls" / "ca.pem").exists()

    # the chain outlives the run: its state file brings it back for `inspect`
    state = tmp_path / "net" / "anvil-state.json"
    assert state.exists()
    port = free_port()
    node = start_anvil(port, state=state)
    try:
        inspected = subprocess.run(
            [sys.executable, "-m", "blockfl.cli", "inspect", "blocks", "--json", "--deployment",
             str(tmp_path / "net" / "deployment.json"), "--rpc-url", f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        stop_pid(node.pid)
    assert inspected.returncode == 0, inspected.stderr[-2000:]
    assert [b["block_hash"] for b in json.loads(inspected.stdout)] == [
        b["block_hash"] for b in summary["blocks"]]
