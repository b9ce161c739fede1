"""The device process against faults: a chain node and miners that do not answer."""

from __future__ import annotations

import threading

import pytest

from blockfl.chain.evm import DEV_DEPLOYER_KEY, rpc_web3
from blockfl.chain.local import LocalLedger
from blockfl.chain.node import free_port
from blockfl.cli import main
from blockfl.client import MinerClient
from blockfl.devices import process as process_module
from blockfl.devices.device import Device
from blockfl.devices.process import DeviceProcess, GaveUp
from blockfl.events import EventLog, read_events
from blockfl.keys import derived_key
from blockfl.sim.setup import build_experiment
from tests.conftest import MINERS, default_params, small_config


class DeadLedger:  # a deployment whose node is down: every call fails like web3 does
    domain = None

    def head(self):
        return rpc_web3(f"http://127.0.0.1:{free_port()}", timeout=1).eth.block_number


def test_a_device_waits_out_a_dead_chain_node_and_miners(tmp_path):
    config = small_config(tmp_path, network={"devices": 1})
    experiment = build_experiment(config)
    device = Device(derived_key("lonely", 0), experiment.shards[0], experiment.task,
                    config.training, experiment.initial)

    stop = threading.Event()
    process = DeviceProcess(device, DeadLedger(), [MinerClient(f"http://127.0.0.1:{free_port()}")],
                            EventLog("d", tmp_path / "d.jsonl"), poll=0.01)
    worker = threading.Thread(target=process.run, args=(3, stop))
    worker.start()
    threading.Event().wait(0.5)
    stop.set()
    worker.join(timeout=10)
    assert not worker.is_alive()
    events = read_events(tmp_path / "d.jsonl")
    waits = [e["retry_in"] for e in events if e["event"] == "chain_unavailable"]
    assert len(waits) >= 3 and waits == sorted(waits) and waits[1] == 2 * waits[0]
    assert events[-1]["event"] == "finished"


def test_a_device_gives_up_after_its_time_with_a_clear_error(tmp_path, capsys):
    config = small_config(tmp_path, network={"devices": 1})
    experiment = build_experiment(config)
    device = Device(derived_key("lonely", 1), experiment.shards[0], experiment.task,
                    config.training, experiment.initial)

    process = DeviceProcess(device, DeadLedger(), [], EventLog("d", tmp_path / "d.jsonl"),
                            poll=0.01, give_up=0.3)
    with pytest.raises(GaveUp, match=r"gave up after 0.3 s: the chain node did not answer"):
        process.run(3)
    assert read_events(tmp_path / "d.jsonl")[-1]["event"] == "gave_up"

    assert main(["device", "--key", "dev:100", "--shard", "0", "--miners", "notaurl"]) == 2
    assert "a miner URL starts with http:// or https://, got 'notaurl'" in capsys.readouterr().err


def test_a_device_waiting_for_a_block_says_why_and_stops_at_its_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(process_module, "WAIT_LOG", 0.1)
    ledger = LocalLedger.create(":memory:", default_params(), MINERS, DEV_DEPLOYER_KEY)
    config = small_config(tmp_path, network={"devices": 1})
    experiment = build_experiment(config)
    device = Device(derived_key("patient", 0), experiment.shards[0], experiment.task,
                    config.training, experiment.initial)
    process = DeviceProcess(device, ledger, [], EventLog("d", tmp_path / "d.jsonl"), poll=0.02,
                            block_deadline=0.5)
    assert process.wait_for_block(1, ledger.head(), threading.Event()) is False
    events = read_events(tmp_path / "d.jsonl")
    waits = [e for e in events if e["event"] == "waiting"]
    assert len(waits) >= 2 and "no block of round 1 on chain yet (head at round 0)" in \
        waits[0]["reason"]
    assert events[-1]["event"] == "block_timeout" and events[-1]["round"] == 1
