"""Hostile clients against real miner and device processes on loopback (issue 13).

A module network (anvil, one `blockfl miner` process whose only peer is a hostile server)
takes every request that used to kill or lock a miner: JSON nested 100,000 deep at every entry
point, broken HTTP, slow heads and bodies, a client that leaves mid-body. After each the miner
process is alive and serving, and every refusal was JSON. A flood from one address does not
keep honest devices on another address out of the round.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from blockfl import hostile
from blockfl.chain.node import find_anvil, free_port
from blockfl.client import MinerClient, MinerUnavailable
from blockfl.devices.device import Device
from blockfl.events import read_events
from blockfl.keys import derived_key
from blockfl.launcher import LocalNetwork
from blockfl.signing import address_of
from blockfl.sim.setup import build_experiment
from blockfl.wire import RECORD_HEADER, TENSOR_MEDIA_TYPE
from tests.conftest import small_config

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.slow,
    pytest.mark.skipif(find_anvil() is None, reason="anvil binary not found (npm install)"),
]

DEEP = hostile.deep_json()
ATTACKER = hostile.ATTACKER


class DeepAnswers(BaseHTTPRequestHandler):
    """A hostile peer or miner: every answer is 200 with JSON nested 100,000 deep."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(DEEP)))
        self.end_headers()
        self.wfile.write(DEEP)

    do_GET = do_POST = _answer

    def log_message(self, *_: object) -> None:
        pass


def hostile_config(tmp_path, **server):
    return small_config(
        tmp_path,
        run={"rounds": 1, "out_dir": str(tmp_path)},
        network={"devices": 3, "miners": 1, "t_wait": 600.0, "answer_timeout": 5.0},
        chain={"block_rate": 2.0, "hash_rate": 20_000.0},
        verification={"max_payload_bytes": 400_000},  # the deep safetensors body is decoded
        server={"header_timeout": 2.0, "body_timeout": 2.0} | server,
    )


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """(network, URL of the hostile peer): miner 0's only peer answers deep JSON."""
    tmp = tmp_path_factory.mktemp("hostile")
    peer = ThreadingHTTPServer(("127.0.0.1", free_port()), DeepAnswers)
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    peer_url = f"http://127.0.0.1:{peer.server_address[1]}"
    network = LocalNetwork(hostile_config(tmp), tmp / "net").start(start_devices=False)
    try:
        role = network.miners[0]
        network.stop_role(role)
        role.args[role.args.index("--peers") + 1] = peer_url
        network.start_role(role)
        yield network, peer_url
    finally:
        network.stop()
        peer.shutdown()


def send(network: LocalNetwork, data: bytes, **kwargs) -> hostile.Reply:
    return asyncio.run(hostile.exchange("127.0.0.1", network.miners[0].port, data, **kwargs))


def assert_serving(network: LocalNetwork) -> None:
    """The miner process is alive and answers /health and /info."""
    assert network.miners[0].running
    url = network.miner_url(0)
    assert httpx.get(f"{url}/health", timeout=10).json() == {"ok": True}
    assert MinerClient(url, timeout=10).info()["round"] >= 1


def signed_headers(network: LocalNetwork) -> dict[str, str]:
    """Headers of an upload with a valid signature, so the miner reads and decodes the body."""
    ledger = network.ledger
    head = ledger.head()
    return hostile.upload_headers(derived_key("attacker", 0), ledger.domain, head.round + 1,
                                  head.global_model_hash)


def deep_header_requests(network: LocalNetwork) -> dict[str, tuple[bytes, int, str]]:
    """Deep JSON at each entry point: (request bytes, expected status, expected error)."""
    # a record header nested 2,000 deep still fits its 4,096 characters; 100,000 deep does not
    # fit in the 16 KiB request head and is refused by the HTTP layer
    nested = hostile.deep_json(2000).decode()
    out = {}
    for path in ("/updates", "/gossip"):
        headers = {"Content-Type": TENSOR_MEDIA_TYPE, RECORD_HEADER: nested}
        out[f"{path} record header"] = (hostile.request("POST", path, headers, b"\0" * 64),
                                        400, "malformed_record")
        huge = headers | {RECORD_HEADER: DEEP.decode()}
        out[f"{path} 100,000-deep record header"] = (hostile.request("POST", path, huge),
                                                     431, "header_too_large")
        out[f"{path} safetensors header"] = (
            hostile.request("POST", path, signed_headers(network), hostile.deep_safetensors()),
            400, "malformed_payload")
    out["/blocks announcement"] = (
        hostile.request("POST", "/blocks", {"Content-Type": "application/json"}, DEEP),
        400, "malformed_block")
    return out


def test_deep_json_at_every_entry_point_is_refused_and_the_miner_serves(net):
    network, _ = net
    for name, (data, status, error) in deep_header_requests(network).items():
        reply = send(network, data)
        assert (reply.status, reply.error) == (status, error), name
        assert_serving(network)


def test_deep_answers_of_a_peer_are_refused_and_the_miner_serves(net, tmp_path):
    network, peer_url = net
    config = network.config
    experiment = build_experiment(config)
    device = Device(derived_key("honest", 0), experiment.shards[0], experiment.task,
                    config.training, experiment.initial)
    miner = MinerClient(network.miner_url(0), timeout=10)
    assert miner.upload(device.train(1, network.ledger.domain).submission)["accepted"]
    # the miner gossips it to the hostile peer, whose deep answer it refuses
    deadline = time.monotonic() + 30
    failures: list[dict] = []
    while not failures and time.monotonic() < deadline:
        time.sleep(0.2)
        failures = [e for e in read_events(network.miners[0].log)
                    if e["event"] == "gossip_failed" and "too_deep" in e["error"]]
    assert failures, "the miner did not refuse its peer's deep answer"
    assert_serving(network)
    # the same client code, in this process (where web3 raised the recursion limit too)
    peer = MinerClient(peer_url, timeout=10)
    for ask in (peer.info, lambda: peer.block(1), lambda: peer.upload(
            device.train(1, network.ledger.domain).submission)):
        with pytest.raises(MinerUnavailable, match="too_deep"):
            ask()


def test_a_device_survives_a_miner_that_answers_deep_json(net, tmp_path):
    network, peer_url = net
    log = tmp_path / "device.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "blockfl.cli", "device", "--key", "dev:100", "--shard", "0",
         "--miners", peer_url, "--deployment", str(network.deployment_path),
         "--config", str(network.config_path), "--rpc-url", network.rpc_url, "--log", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        refused: list[dict] = []
        while not refused and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            events = read_events(log) if log.exists() else []
            refused = [e for e in events if e["event"] == "miner_down"]
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert refused and "too_deep" in refused[0]["error"]
    finally:
        process.kill()
        process.wait()


def test_a_deep_deployment_file_is_refused_with_a_message(net, tmp_path):
    network, _ = net
    deep_file = tmp_path / "deployment.json"
    deep_file.write_bytes(DEEP)
    result = subprocess.run(
        [sys.executable, "-m", "blockfl.cli", "miner", "--key", "dev:1", "--deployment",
         str(deep_file), "--config", str(network.config_path), "--port", str(free_port())],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "is not a deployment file: too_deep" in result.stderr


def test_the_http_layer_refuses_in_json(net):
    network, _ = net
    head = hostile.request("POST", "/updates", {"Content-Type": TENSOR_MEDIA_TYPE})
    cases = {
        "bad Content-Length": (hostile.request("POST", "/blocks", {}, b"{}",
                                               content_length="12abc"), 400, "bad_http_request"),
        "oversized head": (hostile.request("GET", "/health", {"X-Big": "a" * 20_000}),
                           431, "header_too_large"),
        "not HTTP": (b"\x16\x03\x01 hello\r\n\r\n", 400, "bad_http_request"),
        "1 GB body": (hostile.request("POST", "/blocks", {}, content_length=str(10**9)),
                      413, "payload_too_large"),
    }
    for name, (data, status, error) in cases.items():
        reply = send(network, data)
        assert (reply.status, reply.error) == (status, error), name
    # a head that never ends, and a body that stops half way, are cut off
    slow_head = send(network, head, pause_after=len(head) // 2, timeout=10)
    assert (slow_head.status, slow_head.error) == (408, "header_timeout")
    upload = hostile.request("POST", "/updates", signed_headers(network), b"\0" * 50_000)
    slow_body = send(network, upload, pause_after=len(upload) - 25_000, timeout=10)
    assert (slow_body.status, slow_body.error) == (408, "body_timeout")
    assert_serving(network)


def test_a_client_leaving_mid_body_is_one_event(net):
    network, _ = net
    before = len(read_events(network.miners[0].log))
    asyncio.run(hostile.disconnect_mid_body("127.0.0.1", network.miners[0].port, "/updates",
                                            signed_headers(network), b"\0" * 50_000))
    time.sleep(1.0)
    events = [e["event"] for e in read_events(network.miners[0].log)[before:]]
    assert events.count("client_disconnected") == 1, events
    assert_serving(network)
    output = (network.run_dir / "logs" / "miner0.out").read_text()
    assert "Traceback" not in output, output[-3000:]


def test_one_address_cannot_take_every_connection(net):
    network, _ = net
    port = network.miners[0].port

    tally, probe = asyncio.run(hostile.held_while_probed("127.0.0.1", port, 300, "/health",
                                                         timeout=20))
    assert probe.status == 200
    # the first 32 connections waited for their head until the timeout, the rest were refused
    assert tally.replies == {"408 header_timeout": 32, "503 too_many_connections": 268}
    assert_serving(network)


def test_the_attack_script_leaves_the_miner_serving_and_honest_updates_landing(net):
    network, _ = net
    script = Path(__file__).parents[1] / "scripts" / "attack_miner.py"
    result = subprocess.run(
        [sys.executable, str(script), "--miner", network.miner_url(0), "--deployment",
         str(network.deployment_path), "--config", str(network.config_path),
         "--rpc-url", network.rpc_url],
        capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    rows = [[cell.strip() for cell in line.split(" | ")]
            for line in result.stdout.splitlines() if " | " in line][1:]
    assert len(rows) == 18
    assert all(row[3] == "yes" and row[4].startswith("yes") for row in rows), result.stdout
    flood, slow_peer = rows[-5:-3]  # issue 18: refused, and the chain committed after each
    forged = rows[-3:]  # issue 18: refused before any signature, the chain still committing
    assert [row[1] for row in forged] == ["403"] * 3, result.stdout
    assert [row[2] for row in forged] == ["committer_not_miner", "bad_request_signature",
                                          "bad_request_signature"]
    assert all(re.search(r"chain \+[2-9]\d* rounds", row[4]) for row in forged), result.stdout
    # refused unread: unsigned by a registered committer (403), or larger than a block (413)
    assert re.search("bad_request_signature|payload_too_large", flood[2]), flood
    assert re.search(r"chain \+[1-9]\d* rounds", flood[4])
    assert "no whole answer within 5 s" in slow_peer[2]
    assert re.search(r"chain \+[1-9]\d* rounds", slow_peer[4])
    assert "zero crashes" in result.stdout
    assert_serving(network)


def test_honest_devices_land_their_updates_while_one_address_floods(tmp_path):
    config = hostile_config(tmp_path, header_timeout=5.0, body_timeout=5.0)
    network = LocalNetwork(config, tmp_path / "net").start(start_devices=False)
    stop = threading.Event()
    tallies: list[hostile.Tally] = []
    try:
        port = network.miners[0].port
        body = b"\0" * 20_000
        attack = threading.Thread(target=lambda: tallies.append(asyncio.run(hostile.flood(
            "127.0.0.1", port, signed_headers(network), body, seconds=240, stop=stop))))
        attack.start()
        time.sleep(2.0)  # the flood is on before the devices start
        for role in network.devices:  # honest devices connect from 127.0.0.1
            network.start_role(role)
        network.wait_for_round(1, timeout=240)
        assert httpx.get(f"{network.miner_url(0)}/health", timeout=10).json() == {"ok": True}
        stop.set()
        attack.join(timeout=120)
        assert not attack.is_alive()
        devices = {role.name for role in network.devices}
        paid = {u.device for u in network.ledger.accepted_updates(1)}
        assert len(paid) == len(devices) == 3  # every honest update is in the first block
        flood = tallies[0].replies
        assert flood["503 too_many_connections"] > 1000  # the flood was on, and refused
        assert all(label.split()[0].isdigit() for label in flood), flood  # JSON answers only
        assert not any("not_json" in label for label in flood), flood
    finally:
        stop.set()
        network.stop()


def rss_mib(pid: int) -> float:
    """The resident memory of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for process {pid}")


def test_an_attestation_flood_leaves_memory_and_the_round_rate_alone(tmp_path):
    """A wave of 64 concurrent 8 MiB attestation requests from two addresses every 3 s for
    15 s (before the gate and the block-size limit on `/attestations`, one wave took +1.8 GiB
    and cut the round rate by 8)."""
    config = small_config(tmp_path, run={"rounds": 10_000, "out_dir": str(tmp_path)},
                          network={"devices": 3, "miners": 3, "t_wait": 1.0},
                          chain={"block_rate": 2.0, "hash_rate": 20_000.0})
    network = LocalNetwork(config, tmp_path / "net").start()
    try:
        network.wait_for_round(3, timeout=240)
        pid, ledger = network.miners[0].process.pid, network.ledger
        head = ledger.head()
        body = hostile.flood_body(derived_key("attacker", 0),
                                  address_of(derived_key("attacker", 1)), ledger.domain,
                                  head.round + 1, head.global_model_hash)
        assert len(body) > 7.9 * 2**20
        baseline = max(rss_mib(pid) for _ in range(10) if not time.sleep(0.1))

        def rate(seconds: float, during: Callable[[], object] = lambda: time.sleep(0.5)
                 ) -> float:
            first, started = ledger.head().round, time.monotonic()
            while time.monotonic() - started < seconds:
                during()
            return (ledger.head().round - first) / (time.monotonic() - started)

        before = rate(15)
        peak, tallies, stop = [baseline], [], threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                peak.append(rss_mib(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        def wave() -> None:  # 64 at once, one wave starting every 3 s
            started = time.monotonic()
            tallies.append(asyncio.run(hostile.attestation_flood(
                "127.0.0.1", network.miners[0].port, body, count=64, timeout=60)))
            time.sleep(max(0.0, started + 3.0 - time.monotonic()))

        flooded = rate(15, wave)
        stop.set()
        sampler.join(timeout=10)
        normal = (before + rate(15)) / 2  # the windows either side: the machine's load drifts
    finally:
        network.stop()
    replies = sum((t.replies for t in tallies), Counter())
    assert replies["413 payload_too_large"] >= 64, replies  # refused, before being read
    refused = {"413 payload_too_large", "503 too_many_connections", "BrokenPipeError",
               "ConnectionResetError"}  # the last two: the miner closed while they sent
    assert set(replies) <= refused, replies
    assert max(peak) - baseline < 200, (baseline, max(peak))
    assert flooded >= 0.5 * normal, (before, normal, flooded)
