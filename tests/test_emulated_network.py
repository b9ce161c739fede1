"""A process network on emulated hosts (`blockfl network up --emulate-links`): every process in
its own namespace at its own address, links shaped to `[links]`, each phase measured against the
model. Skips, saying why, without root/CAP_NET_ADMIN or `ip`/`tc` (CI runs as root)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from blockfl.chain.node import find_anvil
from blockfl.emulated_hosts import HOSTS_FILE, EmulationError, check

try:
    check()
    WHY_NOT = ""
except EmulationError as exc:
    WHY_NOT = str(exc)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "ok"),
              pytest.mark.skipif(find_anvil() is None, reason="anvil not installed (npm ci)")]

#: the uplink and the downlink at 0.35 Mbit/s: a device's update (20 kB) takes 0.4 s, the model
#: and the block's three updates (80 kB, five requests) about 2 s, so the machine's scheduling
#: is small beside the links (at 0.7 Mbit/s a loaded CI machine once put the download 6% over)
SMALL = ["--miners", "2", "--devices", "3", "--links-w-up", "1e5", "--links-w-dn", "1e5",
         "--model-name", "mlp"]


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("bfl-")}


def _links() -> set[str]:
    listed = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in listed.splitlines()
            if line.split(":")[1].strip().startswith("bf")}


def test_an_emulated_network_commits_and_its_links_agree_with_the_model(tmp_path):
    before = (_namespaces(), _links())
    run = tmp_path / "net"
    result = subprocess.run(
        [sys.executable, "-m", "blockfl.cli", "network", "up", *SMALL, "--rounds", "4",
         "--links-w-m", "6e5", "--run-dir", str(run), "--json", "--emulate-links"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (_namespaces(), _links()) == before  # nothing left behind
    plan = json.loads((run / HOSTS_FILE).read_text())
    addresses = {name: h["address"] for name, h in plan["hosts"].items()}
    assert len(set(addresses.values())) == 6  # anvil, 2 miners, 3 devices: a host each
    deployment = json.loads((run / "deployment.json").read_text())
    assert deployment["rpc_url"] == f"http://{addresses['chain']}:8545"
    summary = json.loads(result.stdout)
    assert [b["round"] for b in summary["blocks"]] == [1, 2, 3, 4]
    assert all(r["agrees"] for r in summary["rewards"])

    compared = subprocess.run(
        [sys.executable, "-m", "blockfl.cli", "latency", "compare", str(run), "--json"],
        capture_output=True, text=True, timeout=300)
    phases = {p["term"]: p for p in json.loads(compared.stdout)["phases"]}
    link = phases["t_up_link"]
    assert link["kind"] == "link"
    assert link["agrees"], link  # within 5% of bits / (W_up log2(1 + SNR_up)), corrected
    assert link["measured"] > 0.3  # the shaped link, not loopback: 20 kB at 0.35 Mbit/s
    down = phases["t_dn_link"]  # the model and the block's updates, through the miner's link
    assert down["kind"] == "link" and down["agrees"], down  # and the device's downlink
    assert down["measured"] > 1.2  # 80 kB at 0.35 Mbit/s
    # miners' links at 2.1 Mbit/s: each update gossiped to the other miner (20 kB, 80 ms);
    # the exchange ends with its slowest link's queue of copies (latency.shared_links)
    exchange = phases["t_ex_link"]
    assert exchange["kind"] == "link" and exchange["agrees"], exchange
    assert exchange["measured"] > 0.07


def test_sigterm_removes_every_namespace_veth_and_bridge(tmp_path):
    before = (_namespaces(), _links())
    run = tmp_path / "net"
    process = subprocess.Popen(
        [sys.executable, "-m", "blockfl.cli", "network", "up", *SMALL, "--rounds", "50",
         "--run-dir", str(run), "--emulate-links"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / HOSTS_FILE).exists() or len(_namespaces() - before[0]) < 6:
            assert process.poll() is None, process.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the hosts were not made in 120 s"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert (_namespaces(), _links()) == before


def test_emulated_links_refuse_bad_rates_before_making_anything(tmp_path):
    before = (_namespaces(), _links())
    result = subprocess.run(
        [sys.executable, "-m", "blockfl.cli", "network", "up", *SMALL, "--rounds", "1",
         "--links-w-dn", "0", "--run-dir", str(tmp_path / "net"), "--emulate-links"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("blockfl: error: links.w_dn = 0")
    assert (_namespaces(), _links()) == before


@pytest.mark.parametrize("miners,partitioned", [
    (3, ["miner1"]),  # a miner: the other two keep the quorum
    (3, ["device1"]),  # a device: it misses rounds, nothing it had acknowledged is lost
    (4, ["miner0", "miner1"]),  # half the miners: no quorum (3 of 4) until they come back
], ids=["a-miner", "a-device", "half-the-miners"])
def test_a_partition_loses_nothing_and_the_checker_passes(tmp_path, miners, partitioned):
    before = (_namespaces(), _links())
    run = tmp_path / "net"
    schedule = [flag for name in partitioned for flag in ("--partition", f"{name}:2-4")]
    result = subprocess.run(
        [sys.executable, "-m", "blockfl.cli", "network", "up", "--miners", str(miners),
         "--devices", "3", "--links-w-up", "1e6", "--model-name", "logreg", "--rounds", "6",
         "--run-dir", str(run), "--json", "--emulate-links", *schedule],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]  # the run check passed too
    assert (_namespaces(), _links()) == before
    faults = [json.loads(line) for line in (run / "logs" / "faults.jsonl").read_text().splitlines()]
    changes = [(e["event"], e["role"]) for e in faults if "role" in e]
    assert sorted(changes) == sorted([("partitioned", n) for n in partitioned]
                                     + [("healed", n) for n in partitioned])
    summary = json.loads(result.stdout)
    assert [b["round"] for b in summary["blocks"]] == [1, 2, 3, 4, 5, 6]
    assert all(r["agrees"] for r in summary["rewards"])
    check = result.stderr.split("run check")[-1]  # the report `network up` printed
    assert "lost: 0" in check and "paid twice: 0" in check and "unresolved: 0" in check, check


@pytest.mark.parametrize("flags,message", [
    (["--partition", "miner7:2-4"], "--partition miner7: this network has miner0-miner1"),
    (["--partition", "device0:2-9"], "--partition at round 9: the run has 3 rounds"),
    (["--partition", "miner1:4-2"], "comes back at a later round"),
])
def test_a_partition_that_cannot_happen_is_refused_before_anything_is_made(tmp_path, flags,
                                                                          message):
    before = (_namespaces(), _links())
    result = subprocess.run(
        [sys.executable, "-m", "blockfl.cli", "network", "up", *SMALL, "--rounds", "3",
         "--run-dir", str(tmp_path / "net"), "--emulate-links", *flags],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1]
    assert (_namespaces(), _links()) == before
    assert not (tmp_path / "net").exists()


def test_tls_on_emulated_hosts_names_every_host_and_commits(tmp_path):
    """With `--tls` every client verifies the miners' certificate against its own host's
    address (no loopback to fall back on), so a run that commits shows the names are right."""
    from cryptography import x509

    run = tmp_path / "net"
    result = subprocess.run(
        [sys.executable, "-m", "blockfl.cli", "network", "up", *SMALL, "--rounds", "2",
         "--run-dir", str(run), "--json", "--emulate-links", "--tls"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert [b["round"] for b in summary["blocks"]] == [1, 2]
    assert all(r["agrees"] for r in summary["rewards"])
    plan = json.loads((run / HOSTS_FILE).read_text())
    addresses = {h["address"] for h in plan["hosts"].values()}
    certificate = x509.load_pem_x509_certificate((run / "tls" / "server.pem").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == addresses | {
        "127.0.0.1"}
    for name, host in plan["hosts"].items():  # each miner served HTTPS at its own address
        if name.startswith("miner"):
            events = [json.loads(line) for line in
                      (run / "logs" / f"{name}.jsonl").read_text().splitlines()]
            urls = [e["url"] for e in events if e["event"] == "listening"]
            assert urls and urls[0].startswith(f"https://{host['address']}:"), urls
