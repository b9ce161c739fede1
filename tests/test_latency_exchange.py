"""The gossip exchange's model on emulated links: each link a work-conserving queue of the
copies it carries, the slowest link ending the exchange; and the copies joined from the logs."""

from __future__ import annotations

import pytest

from blockfl.emulated_hosts import BURST_BYTES, TCP_GOODPUT, transfer_seconds
from blockfl.latency.exchange import exchange_seconds, link_done, measured_exchange
from blockfl.latency.network_logs import GossipCopy, _gossip_copies

RATE = 1e6  # bits/s
COPY = 20_000  # bytes


def _seconds(n_bytes: float) -> float:
    """A busy link's time for `n_bytes` of payload (no bucket left)."""
    return n_bytes / TCP_GOODPUT * 8 / RATE


def test_an_idle_link_starts_each_copy_with_a_full_bucket_and_a_busy_one_queues_it():
    alone = transfer_seconds(COPY, RATE)
    assert link_done([GossipCopy(0, 1, 10.0, 0.0, COPY)], RATE, TCP_GOODPUT,
                     BURST_BYTES) == pytest.approx(10.0 + alone)
    # the second copy is offered while the first is on the link: it waits for it
    queued = [GossipCopy(0, 1, 10.0, 0.0, COPY), GossipCopy(0, 2, 10.01, 0.0, COPY)]
    assert link_done(queued, RATE, TCP_GOODPUT, BURST_BYTES) == pytest.approx(
        10.0 + alone + _seconds(COPY))
    # offered after the link went idle: it starts when offered, its bucket full again
    apart = [GossipCopy(0, 1, 10.0, 0.0, COPY), GossipCopy(0, 2, 12.0, 0.0, COPY)]
    assert link_done(apart, RATE, TCP_GOODPUT, BURST_BYTES) == pytest.approx(12.0 + alone)


def test_the_exchange_ends_with_its_slowest_link():
    """Miner 0 gossips three updates to miners 1 and 2 (six copies through its link), miner 1
    one update (two copies): miner 0's egress, not any receiver's ingress, is the slowest."""
    copies = [GossipCopy(0, peer, 0.0, 0.0, COPY) for _ in range(3) for peer in (1, 2)]
    copies += [GossipCopy(1, peer, 0.0, 0.0, COPY) for peer in (0, 2)]
    rates = {0: RATE, 1: RATE, 2: RATE}
    six = transfer_seconds(6 * COPY, RATE)
    assert exchange_seconds(copies, rates, rates, TCP_GOODPUT, BURST_BYTES) == pytest.approx(six)
    # miner 2's ingress at a quarter of the rate takes its four copies longer than that
    slow_in = {**rates, 2: RATE / 4}
    assert exchange_seconds(copies, rates, slow_in, TCP_GOODPUT, BURST_BYTES) == pytest.approx(
        transfer_seconds(4 * COPY, RATE / 4))


def test_gossip_copies_are_joined_by_peer_url_device_and_round():
    def ev(event: str, ts: float, **fields) -> dict:
        return {"event": event, "ts": ts, **fields}

    miners = [
        [ev("listening", 0, url="http://10.0.0.2:9000"),
         ev("update_accepted", 5, device="0xd1", round=3, via="updates", received_at=5.0),
         ev("gossip_sent", 5.3, peer="http://10.0.0.3:9000", device="0xd1", round=3,
            sent_at=5.0, bytes=COPY),
         ev("gossip_sent", 9.0, peer="http://10.0.0.9:9000", device="0xd1", round=3,
            sent_at=8.0, bytes=COPY)],  # a peer no log is of: left out
        [ev("listening", 0, url="http://10.0.0.3:9000"),
         ev("update_accepted", 5.2, device="0xd1", round=3, via="gossip", received_at=5.2),
         ev("update_accepted", 7.0, device="0xd1", round=3, via="gossip", received_at=7.0)],
    ]
    copies = _gossip_copies(miners)
    assert copies == {3: (GossipCopy(0, 1, 5.0, 5.2, COPY),)}  # the first receipt
    assert measured_exchange(copies[3]) == pytest.approx(0.2)
