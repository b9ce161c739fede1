"""Modelled transfer times on emulated links, where transfers share them.

On an emulated network every host has one link with a rate each way (`hosts.json`), and a
transfer crosses two: its sender's egress and its receiver's ingress. Several transfers cross
a link at once: devices downloading from one miner share its egress, uploads and other
miners' gossip share a miner's ingress, and a miner's `N_M - 1` gossiped copies of each update
share its egress (where the paper's exchange term sends one). TCP shares a token-bucket link
about fairly, so the model gives the transfers in progress the max-min fair rates of their
links (progressive filling: the most contended link's transfers get its equal share, and so on
with what is left), from each transfer's logged first byte until its bytes are through. Bytes
travel as frames (`goodput`), and a transfer whose slower link is idle when it starts passes
its first `burst_bytes` at once (that link's full bucket), as `emulated_hosts.transfer_seconds`
has it for one transfer alone, which this reduces to.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from blockfl.latency.transfers import Transfer


def links_of(transfer: Transfer) -> tuple[str, str]:
    """The two links a transfer crosses: its sender's egress, its receiver's ingress."""
    return f"{transfer.source}:out", f"{transfer.target}:in"


def fair_rates(active: Sequence[int], links: Sequence[tuple[str, str]],
               capacity: Mapping[str, float]) -> dict[int, float]:
    """Max-min fair rates of the `active` transfers (indices into `links`)."""
    left = dict(capacity)
    rates: dict[int, float] = {}
    open_ = set(active)
    while open_:
        users: dict[str, list[int]] = {}
        for i in sorted(open_):
            for link in links[i]:
                users.setdefault(link, []).append(i)
        link = min(sorted(users), key=lambda k: left[k] / len(users[k]))
        share = left[link] / len(users[link])
        for i in users[link]:
            rates[i] = share
            open_.discard(i)
            for other in links[i]:
                left[other] -= share
    return rates


def modelled_ends(transfers: Sequence[Transfer], capacity: Mapping[str, float],
                  goodput: float, burst_bytes: float) -> list[float]:
    """When each transfer's last byte arrives, all of them sharing the links of `capacity`
    (bits/s by `links_of` name) from their logged first bytes."""
    links = [links_of(t) for t in transfers]
    order = deque(sorted(range(len(transfers)), key=lambda i: transfers[i].start))
    left: dict[int, float] = {}  # bits still to send, of the transfers in progress
    ends = [0.0] * len(transfers)
    now = transfers[order[0]].start if order else 0.0
    while order or left:
        if not left:
            now = max(now, transfers[order[0]].start)
        while order and transfers[order[0]].start <= now:
            i = order.popleft()
            busy = {link for k in left for link in links[k]}
            slowest = min(capacity[link] for link in links[i])
            bucket = {link for link in links[i] if capacity[link] == slowest}
            head = burst_bytes if busy.isdisjoint(bucket) else 0.0
            left[i] = max(transfers[i].bytes / goodput - head, 0.0) * 8
        rates = fair_rates(list(left), links, capacity)
        step = min(left[i] / rates[i] for i in left)
        if order and transfers[order[0]].start - now < step:
            step, finishing = transfers[order[0]].start - now, []
        else:
            finishing = [i for i in left if left[i] <= rates[i] * step * (1 + 1e-9)]
        now += step
        for i in left:
            left[i] -= rates[i] * step
        for i in finishing:
            del left[i]
            ends[i] = now
    return ends
