"""Every transfer of a `network up` run on emulated links, from both ends' logs.

Four kinds, each with its first byte at the sender and its last at the receiver, its size
and the two hosts (`miner<i>`, `device<j>`: the names of `hosts.json` and of the logs):

    upload    the device's `uploaded` (`sent_at`, `upload_bytes`: payload and record header)
              to its miner's `update_accepted` via /updates (`received_at`)
    download  the device's `model` event of round r - 1: from its first request to the last
              byte of the block's updates it recomputes the model from (`fetch_started`,
              `fetched_at`, `download_bytes`: every HTTP byte read), from the miner it names;
              counted in round r, whose phase `t_dn` it is
    gossip    a miner's `gossip_sent` of a device's update to a peer (`sent_at`, `bytes`) to
              the peer's `update_accepted` via gossip of that device and round (`received_at`)
    announce  the winner's `announce_sent` of its block to a peer (`sent_at`, `bytes`: the
              block's JSON, its updates' records without their tensors) to the peer's
              `block_announced` of that round (`received_at`)

Hosts are known by the URL each miner's `listening` event gives. A transfer one end of which
did not log (a process of an older version, a copy that failed) is left out; a copy received
twice counts its first receipt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockfl.events import role_logs
from blockfl.latency.network_logs import process_address


@dataclass(frozen=True)
class Transfer:
    """One transfer: its kind, the round whose phase it is, the hosts, first byte, last
    byte and payload size."""

    kind: str  # upload | download | gossip | announce
    round: int
    source: str
    target: str
    start: float
    end: float
    bytes: int


def run_transfers(run_dir: Path) -> list[Transfer]:
    """The run's transfers, in the order of their first bytes."""
    miners = role_logs(run_dir / "logs", "miner")
    devices = role_logs(run_dir / "logs", "device")
    host = {e["url"]: f"miner{i}" for i, log in enumerate(miners) for e in log
            if e["event"] == "listening"}
    received: dict[tuple[str, str, int, str], float] = {}  # (via, miner, round, device): first
    for i, log in enumerate(miners):
        for e in log:
            if e["event"] == "update_accepted" and "received_at" in e:
                received.setdefault((e.get("via", ""), f"miner{i}", e["round"], e["device"]),
                                    e["received_at"])
    announced = {(f"miner{i}", e["round"]): e["received_at"] for i, log in enumerate(miners)
                 for e in reversed(log) if e["event"] == "block_announced"}  # the first
    found: dict[tuple[Any, ...], Transfer] = {}
    for j, log in enumerate(devices):
        device, address = f"device{j}", process_address(log)
        for e in log:
            miner = host.get(e.get("miner", ""))
            if miner is None:
                continue
            if e["event"] == "uploaded" and "sent_at" in e:
                end = received.get(("updates", miner, e["round"], address))
                if end is not None:
                    found[("upload", device, e["round"])] = Transfer(
                        "upload", e["round"], device, miner, e["sent_at"], end, e["upload_bytes"])
            elif e["event"] == "model" and "fetch_started" in e:
                found.setdefault(("download", device, e["round"]), Transfer(
                    "download", e["round"] + 1, miner, device, e["fetch_started"],
                    e["fetched_at"], e["download_bytes"]))
    for i, log in enumerate(miners):
        for e in log:
            peer = host.get(e.get("peer", ""))
            if peer is None:
                continue
            if e["event"] == "gossip_sent":
                end = received.get(("gossip", peer, e["round"], e["device"]))
                if end is not None:
                    found.setdefault(("gossip", i, peer, e["round"], e["device"]), Transfer(
                        "gossip", e["round"], f"miner{i}", peer, e["sent_at"], end, e["bytes"]))
            elif e["event"] == "announce_sent" and (peer, e["round"]) in announced:
                found.setdefault(("announce", i, peer, e["round"]), Transfer(
                    "announce", e["round"], f"miner{i}", peer, e["sent_at"],
                    announced[(peer, e["round"])], e["bytes"]))
    return sorted(found.values(), key=lambda t: (t.start, t.kind, t.source, t.target))
