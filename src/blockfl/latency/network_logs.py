"""Measured phases of a `blockfl network up` run, from its processes' JSON-line event logs.

Every process of a local network logs to `RUN_DIR/logs/{miner,device}N.jsonl` with wall-clock
timestamps of one machine, so phases are differences of logged times. For round r (from round 2
on: round 1 carries process start-up), with `c(r)` the winner's `committed` event:

    t_dn      c(r-1) -> the device's `model` event of round r-1: it notices the block on chain,
              downloads the model, checks its hash and recomputes the aggregate (T_dn + T_global)
    t_local   the local computation time the device signed (`compute_time_ms` of `uploaded`)
    t_up      the device's `model` of r-1 -> its miner's `update_accepted` (via /updates), minus
              t_local: signing, serialisation and the upload over loopback
    t_cross   `update_accepted` -> the winner's last `mining` event of round r: waiting for the
              block to fill (or T_wait) and the gossip of the other miners' updates
    t_bg      the winner's last `mining` event -> its `committed` event, less t_att
              (proof-of-work at the throttled hash rate, then the commit transaction)
    t_att     the `seconds` of the winner's `attestations` event of round r: asking the other
              miners, one after another, until q - 1 attested (0 with a quorum of 1)
    t_bp      `committed` -> each other miner's `adopted` of round r (announcement, full check)

and the upload's transfer alone, for runs whose links are emulated (`network up
--emulate-links`): `t_up_link` from the device's first byte (`sent_at` of `uploaded`) to the
miner's last byte of the body (`received_at` of `update_accepted`), and `up_bits`, the bits it
sent (safetensors payload and the signed record's header), both averaged over devices; and the
download's, `t_dn_link`, from the device's first request for the round's model to the last byte
of the block's updates it recomputes the model from (`fetch_started`, `fetched_at` of `model`),
and `dn_bits`, every HTTP byte it read meanwhile; and each gossiped copy between miners
(`GossipCopy`: the sender's `gossip_sent`, the receiver's `update_accepted` via gossip), the
exchange's transfer (`blockfl.latency.exchange`).

Per device, t_dn + t_local + t_up + t_cross + t_bg + t_att adds up exactly to the round,
c(r) - c(r-1): the phases cover it (`blockfl.round_phases` tabulates a network's rounds for
people; these phases are the latency model's terms). Propagation to the other miners runs beside the
devices' download (the winner serves the model before the block lands), so t_bp is not on the
round's path here.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockfl.events import role_logs
from blockfl.round_phases import attestation_event, forks_per_round

PHASES: tuple[str, ...] = ("t_dn", "t_local", "t_up", "t_cross", "t_bg", "t_att", "t_bp")
#: the transfers measured on their own on emulated links, and their sizes
LINK_KEYS: tuple[str, ...] = ("t_up_link", "up_bits", "t_dn_link", "dn_bits")


@dataclass(frozen=True)
class GossipCopy:
    """One update's copy gossiped from one miner to another (miner indices into the run's
    logs): the sender's first byte, the receiver's last byte of the body, and its size."""

    sender: int
    receiver: int
    sent_at: float
    received_at: float
    bytes: int


@dataclass(frozen=True)
class NetworkRound:
    """One round's measured phases (device phases averaged over devices) and the waiting
    rule's prediction of ``t_cross`` from the logged arrivals."""

    round: int
    duration: float
    phases: dict[str, float]
    modelled_cross: float
    updates: int
    forks: int
    attempts: int
    links: dict[str, float]
    #: from the winner's proof-of-work to the other miners' `adopted`: t_att, the commit and
    #: t_bp (a miner that finds its own proof-of-work meanwhile forks; t_bp alone with a
    #: quorum of 1, where no `attestations` event says when the proof-of-work was found)
    fork_window: float
    #: the round's gossip between miners, where both ends logged it (emulated links)
    gossip: tuple[GossipCopy, ...] = ()


def is_network_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a `network up` run directory (it has per-process logs)."""
    return (run_dir / "logs").is_dir() and any((run_dir / "logs").glob("miner*.jsonl"))


def _address(events: list[dict[str, Any]]) -> str:
    return next((e["address"] for e in events if e["event"] == "started"), "")


def network_rounds(run_dir: Path, t_wait: float, n_devices: int) -> list[NetworkRound]:
    """The measured rounds 2..R of a network run (those whose previous block is logged)."""
    miners, devices = role_logs(run_dir / "logs", "miner"), role_logs(run_dir / "logs", "device")
    committed = {e["round"]: (i, e) for i, log in enumerate(miners)
                 for e in log if e["event"] == "committed"}
    forks = forks_per_round(miners)
    gossip = _gossip_copies(miners)
    accepted: dict[tuple[int, str], dict[str, Any]] = {}  # (round, device) -> upload accepted
    for log in miners:
        for e in log:
            if e["event"] == "update_accepted" and e.get("via") == "updates":
                accepted.setdefault((e["round"], e["device"]), e)
    out = []
    for r in sorted(committed):
        if r - 1 not in committed:
            continue
        winner, end = committed[r]
        start = committed[r - 1][1]["ts"]
        mining = max(e["ts"] for e in miners[winner]
                     if e["event"] == "mining" and e["round"] == r and e["ts"] <= end["ts"])
        arrivals = sorted({e["device"]: e["ts"] for e in miners[winner]
                           if e["event"] == "update_accepted" and e["round"] == r}.values())
        # the network's waiting rule: mine once the block is full, or T_wait after its first
        # update (restarting when a later update makes a larger candidate)
        close = arrivals[-1] if len(arrivals) >= n_devices else max(arrivals[0] + t_wait,
                                                                    arrivals[-1])
        per_device = []
        for log in devices:
            address = _address(log)
            models = [e for e in log if e["event"] == "model" and e["round"] == r - 1]
            upload = [e for e in log if e["event"] == "uploaded" and e["round"] == r]
            if not models or not upload or (r, address) not in accepted:
                continue
            held = models[0]["ts"]
            local = upload[0]["compute_time_ms"] / 1000
            received = accepted[(r, address)]
            arrival = received["ts"]
            per_device.append({"t_dn": held - start, "t_local": local,
                               "t_up": arrival - held - local, "t_cross": mining - arrival,
                               "modelled_cross": close - arrival,
                               **_upload_link(upload[-1], received), **_download_link(models[0])})
        adopted = [e["ts"] - end["ts"] for i, log in enumerate(miners) if i != winner
                   for e in log if e["event"] == "adopted" and e["round"] == r]
        if not per_device:
            continue
        phases = {k: statistics.fmean(d[k] for d in per_device)
                  for k in ("t_dn", "t_local", "t_up", "t_cross")}
        attested = attestation_event(miners[winner], r, mining, end["ts"])
        phases["t_att"] = attested["seconds"] if attested else 0.0
        phases["t_bg"] = end["ts"] - mining - phases["t_att"]
        phases["t_bp"] = statistics.fmean(adopted) if adopted else float("nan")
        # the proof-of-work was found when the winner began to ask for attestations
        found = attested["ts"] - attested["seconds"] if attested else end["ts"]
        window = end["ts"] - found + phases["t_bp"]
        links = {k: statistics.fmean(d[k] for d in per_device)
                 for k in LINK_KEYS if all(k in d for d in per_device)}
        out.append(NetworkRound(r, end["ts"] - start, phases,
                                statistics.fmean(d["modelled_cross"] for d in per_device),
                                int(end["updates"]), forks.get(r, 0), int(end["attempts"]),
                                links, window, gossip.get(r, ())))
    return out


def _gossip_copies(miners: list[list[dict[str, Any]]]) -> dict[int, tuple[GossipCopy, ...]]:
    """Per round, every gossiped copy both of whose ends are logged: the sender's
    `gossip_sent` (its peer's URL, `sent_at`, size) joined to the peer's `update_accepted`
    via gossip of that device and round (`received_at`); the peer known by the URL its
    `listening` event gives."""
    index = {e["url"]: i for i, log in enumerate(miners) for e in log
             if e["event"] == "listening"}
    received: dict[tuple[int, int, str], float] = {}  # (receiver, round, device): the first
    for i, log in enumerate(miners):
        for e in log:
            if e["event"] == "update_accepted" and e.get("via") == "gossip" \
                    and "received_at" in e:
                received.setdefault((i, e["round"], e["device"]), e["received_at"])
    copies: dict[tuple[int, int, int, str], GossipCopy] = {}
    for sender, log in enumerate(miners):
        for e in log:
            if e["event"] != "gossip_sent" or e["peer"] not in index:
                continue
            key = (index[e["peer"]], e["round"], e["device"])
            if key in received:
                copies.setdefault((sender, *key), GossipCopy(sender, key[0], e["sent_at"],
                                                             received[key], e["bytes"]))
    out: dict[int, list[GossipCopy]] = {}
    for (_, _, round_, _), copy in sorted(copies.items()):
        out.setdefault(round_, []).append(copy)
    return {r: tuple(c) for r, c in out.items()}


def _download_link(model: dict[str, Any]) -> dict[str, float]:
    """The download's transfer time and size (the model, and the block with its updates when
    the device recomputes it), where the device logged them."""
    if "fetch_started" not in model:
        return {}
    return {"t_dn_link": model["fetched_at"] - model["fetch_started"],
            "dn_bits": 8.0 * model["download_bytes"]}


def _upload_link(uploaded: dict[str, Any], accepted: dict[str, Any]) -> dict[str, float]:
    """The upload's transfer time and size, where both ends logged them."""
    if "sent_at" not in uploaded or "received_at" not in accepted:
        return {}
    return {"t_up_link": accepted["received_at"] - uploaded["sent_at"],
            "up_bits": 8.0 * uploaded["upload_bytes"]}
