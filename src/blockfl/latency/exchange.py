"""The modelled time of a round's gossip exchange on emulated links.

Each update a miner accepts from a device is gossiped to each other miner: `N_M - 1` copies
leave through the sender's link, and each receiver's link takes the copies of every other
miner (the paper's `sum_{j != i} delta_m N_Mj / R_mj` is that ingress). Every link is a
work-conserving token bucket, so however TCP shares it among flows, the link is done with its
copies when a single queue of them, started at the logged send times, would be: a copy
reaching an idle link starts at once with a full bucket (`transfer_seconds`), one reaching a
busy link waits for the bytes ahead of it. The exchange ends when its slowest link is done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from blockfl.emulated_hosts import transfer_seconds
from blockfl.latency.network_logs import GossipCopy


def link_done(copies: Iterable[GossipCopy], rate_bps: float, goodput: float,
              burst_bytes: float) -> float:
    """When one link of `rate_bps` has carried `copies`, each offered at its `sent_at`."""
    done = float("-inf")
    for copy in sorted(copies, key=lambda c: c.sent_at):
        if copy.sent_at >= done:  # idle: the bucket is full again
            done = copy.sent_at + transfer_seconds(copy.bytes, rate_bps, goodput, burst_bytes)
        else:
            done += copy.bytes / goodput * 8 / rate_bps
    return done


def exchange_seconds(copies: Sequence[GossipCopy], egress_bps: Mapping[int, float],
                     ingress_bps: Mapping[int, float], goodput: float,
                     burst_bytes: float) -> float:
    """The modelled exchange of a round's `copies`, from the first copy's first byte to the
    slowest link's last: each sender's egress carries its copies, each receiver's ingress the
    copies sent to it (rates by miner index)."""
    start = min(c.sent_at for c in copies)
    links = [link_done([c for c in copies if c.sender == i], egress_bps[i], goodput,
                       burst_bytes) for i in {c.sender for c in copies}]
    links += [link_done([c for c in copies if c.receiver == i], ingress_bps[i], goodput,
                        burst_bytes) for i in {c.receiver for c in copies}]
    return max(links) - start


def measured_exchange(copies: Sequence[GossipCopy]) -> float:
    """The measured exchange: the first copy's first byte to the last copy's last."""
    return max(c.received_at for c in copies) - min(c.sent_at for c in copies)
