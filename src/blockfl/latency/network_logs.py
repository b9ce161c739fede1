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
    t_bg      the winner's last `mining` event -> its nonce (`found_at` of `committed`): the
              proof-of-work at the throttled hash rate
    t_commit  the nonce -> its `committed` event, less t_att: the commit transaction (older
              logs without `found_at`: 0, and t_bg holds it)
    t_att     the `seconds` of the winner's `attestations` event of round r: asking the other
              miners, one after another, until q - 1 attested (0 with a quorum of 1)
    t_bp      `committed` -> each other miner's `adopted` of round r (announcement, full check)

and, for runs whose links are emulated, each transfer on its own (`blockfl.latency.transfers`).

Per device, t_dn + t_local + t_up + t_cross + t_bg + t_commit + t_att adds up exactly to the
round,
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

PHASES: tuple[str, ...] = ("t_dn", "t_local", "t_up", "t_cross", "t_bg", "t_commit", "t_att",
                           "t_bp")


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
    #: the rivals' hashing after the winner's nonce, in seconds at the configured hash rate:
    #: summed over the other miners, the nonces each tried from the winner's proof-of-work
    #: (`found_at` of its `committed`) until it saw the new head and stopped (`head_moved`,
    #: its `hashed`) or found a nonce of its own (`fork`, its `attempts`), over the hash rate.
    #: A rival's forks are a Poisson process in its hashes, so the round's expected forks are
    #: lambda x exposure. Counted in hashes, not seconds: a rival that starts mining after the
    #: winner's nonce, reads the chain (hashing waits for the read) or sends its own block
    #: hashes for part of the time only. Logs without those events: N_M - 1 times the
    #: winner's t_att, commit and t_bp (the announcement's window)
    fork_exposure: float
    #: per miner, when its race for the round began (its last `mining` event before it
    #: stopped), seconds before the winner's nonce (negative: after it); None where the
    #: miner did not race or the logs lack the events. Miners close their candidates at
    #: different times, so the race is not the paper's simultaneous start
    race_starts: tuple[float | None, ...] = ()
    #: per rival that saw the head without forking, hash-seconds from the winner's nonce
    #: until it stopped, plus whatever of that time it had not yet started: how long a rival
    #: hashing at the nonce stays exposed
    notice_delays: tuple[float, ...] = ()


def is_network_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a `network up` run directory (it has per-process logs)."""
    return (run_dir / "logs").is_dir() and any((run_dir / "logs").glob("miner*.jsonl"))


def process_address(events: list[dict[str, Any]]) -> str:
    """The address a process's log says it started with (its `started` event)."""
    return next((e["address"] for e in events if e["event"] == "started"), "")


def network_rounds(run_dir: Path, t_wait: float, n_devices: int,
                   hash_rate: float) -> list[NetworkRound]:
    """The measured rounds 2..R of a network run (those whose previous block is logged), its
    miners hashing at `hash_rate` nonces a second (`[chain] hash_rate`)."""
    miners, devices = role_logs(run_dir / "logs", "miner"), role_logs(run_dir / "logs", "device")
    committed = {e["round"]: (i, e) for i, log in enumerate(miners)
                 for e in log if e["event"] == "committed"}
    forks = forks_per_round(miners)
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
            address = process_address(log)
            models = [e for e in log if e["event"] == "model" and e["round"] == r - 1]
            upload = [e for e in log if e["event"] == "uploaded" and e["round"] == r]
            if not models or not upload or (r, address) not in accepted:
                continue
            held = models[0]["ts"]
            local = upload[0]["compute_time_ms"] / 1000
            arrival = accepted[(r, address)]["ts"]
            per_device.append({"t_dn": held - start, "t_local": local,
                               "t_up": arrival - held - local, "t_cross": mining - arrival,
                               "modelled_cross": close - arrival})
        adopted = [e["ts"] - end["ts"] for i, log in enumerate(miners) if i != winner
                   for e in log if e["event"] == "adopted" and e["round"] == r]
        if not per_device:
            continue
        phases = {k: statistics.fmean(d[k] for d in per_device)
                  for k in ("t_dn", "t_local", "t_up", "t_cross")}
        attested = attestation_event(miners[winner], r, mining, end["ts"])
        phases["t_att"] = attested["seconds"] if attested else 0.0
        found = end.get("found_at", end["ts"] - phases["t_att"])
        phases["t_bg"] = found - mining
        phases["t_commit"] = end["ts"] - found - phases["t_att"]
        phases["t_bp"] = statistics.fmean(adopted) if adopted else float("nan")
        out.append(NetworkRound(r, end["ts"] - start, phases,
                                statistics.fmean(d["modelled_cross"] for d in per_device),
                                int(end["updates"]), forks.get(r, 0), int(end["attempts"]),
                                *_race(miners, winner, end, attested, phases, hash_rate)))
    return out


def _race(miners: list[list[dict[str, Any]]], winner: int, end: dict[str, Any],
          attested: dict[str, Any] | None, phases: dict[str, float], hash_rate: float
          ) -> tuple[float, tuple[float | None, ...], tuple[float, ...]]:
    """The round's `fork_exposure`, `race_starts` and `notice_delays` (see `NetworkRound`).
    A rival's nonces before the winner's are read off its schedule: it hashes at
    `hash_rate` from its last `mining` event, so those after are its count less `hash_rate`
    x the time from there to the winner's nonce (a count logged without `hashed`: its
    schedule up to the event)."""
    r = end["round"]
    if "found_at" not in end:  # the proof-of-work was found when the winner asked for attestations
        found = attested["ts"] - attested["seconds"] if attested else end["ts"]
        return (len(miners) - 1) * (end["ts"] - found + phases["t_bp"]), (), ()
    found = end["found_at"]
    nonces, starts, delays = 0.0, [], []
    for i, log in enumerate(miners):
        if i == winner:
            starts.append(phases["t_bg"])
            continue
        stops = [e for e in log if e.get("round") == r and e["event"] in ("head_moved", "fork")
                 and e["ts"] >= found]
        stop = min(stops, key=lambda e: e["ts"]) if stops else None
        started = None if stop is None else max(
            (e["ts"] for e in log if e["event"] == "mining" and e.get("round") == r
             and e["ts"] <= stop["ts"]), default=None)
        if stop is None or started is None:
            starts.append(None)
            continue
        starts.append(found - started)
        hashed = stop.get("hashed", stop.get("attempts", hash_rate * (stop["ts"] - started)))
        after = max(0.0, hashed - hash_rate * max(0.0, found - started))
        nonces += after
        if stop["event"] == "head_moved":
            delays.append(after / hash_rate + max(0.0, started - found))
    return nonces / hash_rate, tuple(starts), tuple(delays)
