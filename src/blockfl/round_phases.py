"""Where the time of each round went in a process network, from its JSON event logs.

Every process of a local network writes events with wall-clock timestamps (`blockfl.events`);
they share one clock when they run on one machine. Per round (seconds):

    round_s     the block's `committed` time minus the previous block's (round 1: from the
                first device's `uploaded`)
    upload      the upload window: first to last `update_accepted` via /updates, over miners
    attest      the `seconds` of the winner's `attestations` event of the round: asking the
                other miners until the quorum attested (0 with a quorum of 1)
    pow         the winner's last `mining` event for the round to its `committed`, less
                `attest`: the proof-of-work plus the commit transaction
    propagate   `committed` to the last other miner's `adopted` of the round; `adopted` says
                how many other miners adopted it ("n/m")
    seen        `committed` to the first device's `block` event of the round (negative when a
                device saw it before the winner logged `committed`)
    dev_model   `committed` to each device's `model` event of the round (download, hash check,
                recomputation), the mean over devices
    train       a device's `model` of the previous round to its `uploaded` of this one, the
                mean over devices
    upd, forks  updates in the block and `fork` events (blocks refused as a second block)
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blockfl.events import role_logs

Events = list[dict[str, Any]]


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean, or None for no values."""
    return statistics.fmean(values) if values else None


def _first(events: Events, name: str, round_: int) -> float | None:
    times = [e["ts"] for e in events if e.get("event") == name and e.get("round") == round_]
    return min(times) if times else None


def attestation_event(events: Events, round_: int, start: float,
                      end: float) -> dict[str, Any] | None:
    """The last `attestations` event of `round_` logged between `start` and `end` (the
    winner's last `mining` and its `committed`), None when there is none (quorum 1)."""
    attesting = [e for e in events if e.get("event") == "attestations"
                 and e.get("round") == round_ and start <= e["ts"] <= end]
    return attesting[-1] if attesting else None


def attestation_seconds(events: Events, round_: int, start: float, end: float) -> float:
    """The `seconds` of `attestation_event`, 0 when there is none (quorum 1)."""
    event = attestation_event(events, round_, start, end)
    return event["seconds"] if event else 0.0


def forks_per_round(miner_events: Sequence[Events]) -> dict[int, int]:
    """`fork` events of the miners' logs (`role_logs(logs, "miner")`) per round."""
    out: dict[int, int] = {}
    for events in miner_events:
        for e in events:
            if e.get("event") == "fork" and isinstance(e.get("round"), int):
                out[e["round"]] = out.get(e["round"], 0) + 1
    return out


def round_table(logs: Path, rounds: int | None = None) -> list[dict[str, Any]]:
    """One row of phase times per round from the `minerN.jsonl`/`deviceN.jsonl` files in `logs`
    (rounds 1..`rounds`; default: up to the last round a miner committed)."""
    miner_events = role_logs(logs, "miner")
    device_events = role_logs(logs, "device")
    if rounds is None:
        rounds = max((e["round"] for events in miner_events for e in events
                      if e.get("event") == "committed" and isinstance(e.get("round"), int)),
                     default=0)
    forks = forks_per_round(miner_events)
    rows: list[dict[str, Any]] = []
    previous_commit: float | None = None
    for r in range(1, rounds + 1):
        row: dict[str, Any] = {"round": r}
        winner, committed = None, None
        for i, events in enumerate(miner_events):
            for e in events:
                if e.get("event") == "committed" and e.get("round") == r:
                    winner, committed, row["upd"] = i, e["ts"], e.get("updates")
        uploads = [e["ts"] for events in miner_events for e in events
                   if e.get("event") == "update_accepted" and e.get("round") == r
                   and e.get("via") == "updates"]
        row["upload"] = max(uploads) - min(uploads) if uploads else None
        row["forks"] = forks.get(r, 0)
        if committed is None or winner is None:
            rows.append(row)
            previous_commit = None
            continue
        if r == 1:
            starts = [t for ev in device_events if (t := _first(ev, "uploaded", 1)) is not None]
            previous_commit = min(starts) if starts else None
        row["round_s"] = committed - previous_commit if previous_commit is not None else None
        mining = [e["ts"] for e in miner_events[winner]
                  if e.get("event") == "mining" and e.get("round") == r and e["ts"] <= committed]
        if mining:
            row["attest"] = attestation_seconds(miner_events[winner], r, max(mining), committed)
            row["pow"] = committed - max(mining) - row["attest"]
        else:
            row["attest"] = row["pow"] = None
        adopted = [t for i, events in enumerate(miner_events) if i != winner
                   if (t := _first(events, "adopted", r)) is not None]
        row["propagate"] = max(adopted) - committed if adopted else None
        row["adopted"] = f"{len(adopted)}/{len(miner_events) - 1}"
        models = [t - committed for ev in device_events
                  if (t := _first(ev, "model", r)) is not None]
        row["dev_model"] = mean_or_none(models)
        seen = [t for ev in device_events if (t := _first(ev, "block", r)) is not None]
        row["seen"] = min(seen) - committed if seen else None
        trains = []
        for ev in device_events:
            uploaded = _first(ev, "uploaded", r)
            model = _first(ev, "model", r - 1) if r > 1 else None
            if uploaded is not None and model is not None:
                trains.append(uploaded - model)
        row["train"] = mean_or_none(trains)
        rows.append(row)
        previous_commit = committed
    return rows
