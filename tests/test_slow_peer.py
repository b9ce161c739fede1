"""A slow peer cannot hang a node (issue 18, item 7): a real server on loopback that drips one
byte at a time behind a 10 MB Content-Length (a per-read timeout never fires on it) delays a
client, a device's model download and a miner's start-up and sync by at most the answer
timeout, and a peer that timed out is asked after the others."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from blockfl.chain.blocks import Head
from blockfl.chain.deploy import chain_params
from blockfl.chain.evm import EvmLedger, embedded_web3
from blockfl.client import MinerClient, MinerUnavailable
from blockfl.devices.device import Device
from blockfl.devices.process import DeviceProcess
from blockfl.events import EventLog, read_events
from blockfl.hashing import to_hex
from blockfl.hostile import DrippingPeer
from blockfl.keys import derived_key
from blockfl.miners.api import create_app
from blockfl.miners.service import MinerService, MiningSettings
from blockfl.miners.verification import VerificationPolicy
from blockfl.signing import address_of
from blockfl.sim.setup import build_experiment
from blockfl.tensors import encode, tensor_hash
from tests.conftest import small_config

DEADLINE = 1.5  # the answer timeout of every client here
SLACK = 1.0  # what a loaded machine adds to it
DRIP = 0.2  # seconds between two bytes: far below the timeout, so no single read times out


@pytest.mark.parametrize("drip_head", [False, True], ids=["body", "head"])
def test_a_dripped_answer_ends_at_the_timeout_and_the_miner_becomes_suspect(drip_head):
    with DrippingPeer(every=DRIP, drip_head=drip_head, limit=30) as peer:
        client = MinerClient(peer.url, timeout=DEADLINE)
        started = time.monotonic()
        with pytest.raises(MinerUnavailable, match=r"no whole answer within 1\.5 s"):
            client.model(b"\1" * 32)
        assert time.monotonic() - started < DEADLINE + SLACK
        assert peer.requests == 1 and client.suspect


def test_an_upload_to_a_miner_that_reads_slowly_ends_at_the_timeout():
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def read_slowly() -> None:  # 4 MB/s: 8 s for the body, never idle long enough for a timeout
        conn, _ = listener.accept()
        with conn:
            while not stop.wait(0.25) and conn.recv(2**20):
                pass

    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    client = MinerClient(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=DEADLINE)
    started = time.monotonic()
    try:
        with pytest.raises(MinerUnavailable, match=r"no whole answer within 1\.5 s"):
            client._request("POST", "/blocks", content=b"\0" * 32 * 2**20)
        assert time.monotonic() - started < DEADLINE + SLACK
    finally:
        stop.set()
        reader.join(timeout=10)
        listener.close()


class ServesOneModel(BaseHTTPRequestHandler):
    """An honest miner as far as a download goes: it serves one model by its hash."""

    model: bytes = b""
    model_hash = ""

    def do_GET(self) -> None:
        found = self.path == f"/models/{self.model_hash}"
        body = self.model if found else b'{"error": "not_found"}'
        self.send_response(200 if found else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_a_device_download_is_delayed_by_at_most_the_timeout(tmp_path):
    config = small_config(tmp_path, network={"devices": 1})
    experiment = build_experiment(config)
    device = Device(derived_key("slow-peer-device", 0), experiment.shards[0], "logreg",
                    config.training, experiment.initial)
    model = {name: t + 1 for name, t in experiment.initial.items()}
    handler = type("Serves", (ServesOneModel,), {"model": encode(model),
                                                 "model_hash": to_hex(tensor_hash(model))})
    honest = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=honest.serve_forever, daemon=True).start()
    with DrippingPeer(every=DRIP, limit=30) as peer:
        miners = [MinerClient(peer.url, timeout=DEADLINE),
                  MinerClient(f"http://127.0.0.1:{honest.server_address[1]}", timeout=DEADLINE)]
        # seed 1 draws the dripping miner first
        process = DeviceProcess(device, None, miners, EventLog("d", tmp_path / "d.jsonl"), seed=1)
        try:
            started = time.monotonic()
            process.follow(Head(1, b"\2" * 32, tensor_hash(model)))
            took = time.monotonic() - started
        finally:
            honest.shutdown()
    assert device.global_hash == tensor_hash(model)
    assert took < DEADLINE + SLACK
    failed = [e for e in read_events(tmp_path / "d.jsonl") if e["event"] == "download_failed"]
    assert [e["miner"] for e in failed] == [peer.url]
    assert "no whole answer within 1.5 s" in failed[0]["error"]


def test_a_miner_starts_and_syncs_past_a_dripping_peer(tmp_path, monkeypatch):
    """Miner b joins after block 1 (its store lacks the head's model) with a dripping peer asked
    first: its start-up costs at most the timeout; its sync of block 2 asks the honest peer
    first (the dripping one timed out) and costs nothing of the kind."""
    import random

    config = small_config(tmp_path, network={"devices": 3, "miners": 2},
                          chain={"block_rate": 50.0, "hash_rate": 1000.0, "quorum": 1})
    experiment = build_experiment(config)
    keys = [derived_key("slow-peer-miner", i) for i in range(2)]
    ledger = EvmLedger.create(embedded_web3(), chain_params(config, experiment.genesis),
                              [address_of(k) for k in keys])
    policy = VerificationPolicy(max_payload_bytes=100_000)
    settings = MiningSettings(t_wait=60.0, block_size=3, hash_rate=0.0, check_grace=60.0)

    def miner(name: str, key: bytes, peers: list) -> MinerService:
        return MinerService(key, ledger, policy, settings, tmp_path / name, peers,
                            experiment.initial, EventLog(name, tmp_path / f"{name}.jsonl"))

    devices = [Device(derived_key("slow-peer-device", i), shard, experiment.task,
                      config.training, experiment.initial, seed=i)
               for i, shard in enumerate(experiment.shards)]
    a = miner("a", keys[0], [])

    def a_commits(round_: int) -> None:
        for d in devices:
            assert a.node.receive_upload(d.train(round_, ledger.domain).submission).accepted
        a.mine(threading.Event())
        assert ledger.head().round == round_

    a_commits(1)
    monkeypatch.setattr(random, "sample", lambda seq, k: list(seq))  # peers in the given order
    honest = MinerClient("http://a", http=TestClient(create_app(a, 100_000)))
    started = time.monotonic()  # the same start-up with the honest peer alone, side by side
    miner("c", keys[1], [honest]).close()
    alone = time.monotonic() - started
    with DrippingPeer(every=DRIP, limit=30) as peer:
        slow = MinerClient(peer.url, timeout=DEADLINE)
        started = time.monotonic()
        b = miner("b", keys[1], [slow, honest])
        assert time.monotonic() - started < alone + DEADLINE + SLACK
        assert peer.requests == 1 and slow.suspect
        assert b.node.head.global_model_hash == ledger.head().global_model_hash

        for d in devices:
            d.accept(ledger.head().global_model_hash, a.node.base_state)
        a_commits(2)
        started = time.monotonic()
        assert b.sync()
        assert time.monotonic() - started < DEADLINE
        assert b.node.round == 3
        assert peer.requests == 1  # asked once, at start-up
    a.close()
    b.close()


def test_messages_for_a_dripping_peer_wait_in_a_bounded_queue():
    from blockfl.hashing import keccak
    from blockfl.miners.peers import MAX_BACKLOG, HttpPeer
    from blockfl.signing import Domain, SignedUpdate, UpdateRecord, sign_update
    from blockfl.wire import UpdateSubmission

    key = derived_key("slow-peer-gossip", 0)
    record = UpdateRecord(address_of(key), 1, b"\0" * 32, keccak(b"delta"), 1, 1)
    signed = SignedUpdate(record, sign_update(key, record, Domain(1, "0x" + "11" * 20)))
    events: list[tuple[str, dict]] = []
    with DrippingPeer(every=DRIP, limit=30) as dripping:
        peer = HttpPeer(MinerClient(dripping.url, timeout=DEADLINE),
                        lambda event, **kw: events.append((event, kw)))  # type: ignore[arg-type]
        for _ in range(MAX_BACKLOG + 50):
            peer.receive_gossip(UpdateSubmission(signed, b"\0"))
        assert peer._waiting == MAX_BACKLOG
        peer.close()
    dropped = [kw for event, kw in events if event == "gossip_dropped"]
    assert dropped == [{"peer": dripping.url, "backlog": MAX_BACKLOG, "count": 1}]


def test_miners_that_failed_lately_are_asked_last_for_a_while():
    from blockfl.client import SUSPECT_FOR, healthy_first

    a, b, c = (MinerClient(f"http://127.0.0.{i}:1") for i in (1, 2, 3))
    b.failed_at = time.monotonic()
    assert healthy_first([b, a, c]) == [a, c, b]
    b.failed_at = time.monotonic() - SUSPECT_FOR - 1  # long ago: in its turn again
    assert healthy_first([b, a, c]) == [b, a, c]
