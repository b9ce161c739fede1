"""Transfers on emulated links that share them: max-min fair rates from the logged first
bytes (`latency.shared_links`), and every transfer joined from both ends' logs
(`latency.transfers`)."""

from __future__ import annotations

import json

import pytest

from blockfl.emulated_hosts import BURST_BYTES, TCP_GOODPUT, transfer_seconds
from blockfl.latency.shared_links import fair_rates, modelled_ends
from blockfl.latency.transfers import Transfer, run_transfers

MB = 1e6  # bits/s
COPY = 20_000  # bytes


def _t(kind: str, source: str, target: str, start: float, n_bytes: int = COPY,
       round_: int = 1) -> Transfer:
    return Transfer(kind, round_, source, target, start, 0.0, n_bytes)


def _busy(n_bytes: float, rate: float) -> float:
    """Seconds for `n_bytes` on a link of `rate` whose bucket is empty."""
    return n_bytes / TCP_GOODPUT * 8 / rate


def test_a_transfer_alone_takes_what_transfer_seconds_gives_at_its_slower_link():
    capacity = {"device0:out": 0.35 * MB, "miner0:in": 2 * MB}
    [end] = modelled_ends([_t("upload", "device0", "miner0", 10.0)], capacity, TCP_GOODPUT,
                          BURST_BYTES)
    assert end == pytest.approx(10.0 + transfer_seconds(COPY, 0.35 * MB))


def test_max_min_rates_give_the_most_contended_link_its_equal_share_first():
    links = [("m0:out", "d0:in"), ("m0:out", "d1:in"), ("m0:out", "d2:in"), ("m1:out", "d2:in")]
    capacity = {"m0:out": 3 * MB, "m1:out": 10 * MB, "d0:in": 0.5 * MB, "d1:in": 5 * MB,
                "d2:in": 5 * MB}
    rates = fair_rates([0, 1, 2, 3], links, capacity)
    # d0's downlink caps it at 0.5; m0's other 2.5 go to d1 and d2 equally; d2's link has
    # 3.75 left for the transfer from m1
    assert rates == pytest.approx({0: 0.5 * MB, 1: 1.25 * MB, 2: 1.25 * MB, 3: 3.75 * MB})


def test_downloads_from_one_miner_share_its_link_and_a_later_one_speeds_up_when_alone():
    capacity = {"miner0:out": 1 * MB, "device0:in": 1 * MB, "device1:in": 1 * MB}
    first, second = _t("download", "miner0", "device0", 0.0), _t("download", "miner0",
                                                                  "device1", 0.0)
    ends = modelled_ends([first, second], capacity, TCP_GOODPUT, BURST_BYTES)
    # both start on an idle downlink (their slower links tie with the miner's: the bucket
    # is shared, so only the first to start passes its head at once)
    both = _busy(2 * COPY, MB) - BURST_BYTES * 8 / MB
    assert max(ends) == pytest.approx(both)
    assert ends[0] < ends[1]  # the head start of its burst
    late = _t("download", "miner0", "device1", 1.0)  # after the first is done: alone
    ends = modelled_ends([first, late], capacity, TCP_GOODPUT, BURST_BYTES)
    assert ends[1] == pytest.approx(1.0 + transfer_seconds(COPY, MB))


def test_gossip_copies_queue_on_the_senders_link():
    """Miner 0 gossips three updates to miners 1 and 2 (six copies through its link), miner 1
    one (two copies): the exchange ends when miner 0's link has carried its six."""
    copies = [_t("gossip", "miner0", peer, 0.0) for _ in range(3) for peer in ("miner1",
                                                                              "miner2")]
    copies += [_t("gossip", "miner1", peer, 0.0) for peer in ("miner0", "miner2")]
    capacity = {f"miner{i}:{side}": MB for i in range(3) for side in ("out", "in")}
    ends = modelled_ends(copies, capacity, TCP_GOODPUT, BURST_BYTES)
    assert max(ends) == pytest.approx(transfer_seconds(6 * COPY, MB))


def test_every_transfer_is_joined_from_both_ends_logs(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()

    def write(name: str, *events: dict) -> None:
        (logs / f"{name}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))

    m0, m1 = "http://10.0.0.2:9000", "http://10.0.0.3:9000"
    write("miner0", {"event": "listening", "ts": 0, "url": m0},
          {"event": "update_accepted", "ts": 5.4, "device": "0xd0", "round": 3,
           "via": "updates", "received_at": 5.4},
          {"event": "gossip_sent", "ts": 5.6, "peer": m1, "device": "0xd0", "round": 3,
           "sent_at": 5.5, "bytes": COPY},
          {"event": "gossip_sent", "ts": 9.0, "peer": "http://10.0.0.9:9000",
           "device": "0xd0", "round": 3, "sent_at": 8.0, "bytes": COPY},  # no such peer
          {"event": "announce_sent", "ts": 9.2, "peer": m1, "round": 3, "sent_at": 9.1,
           "bytes": 2783})
    write("miner1", {"event": "listening", "ts": 0, "url": m1},
          {"event": "update_accepted", "ts": 5.7, "device": "0xd0", "round": 3,
           "via": "gossip", "received_at": 5.7},
          {"event": "update_accepted", "ts": 7.0, "device": "0xd0", "round": 3,
           "via": "gossip", "received_at": 7.0},  # a second receipt: the first counts
          {"event": "block_announced", "ts": 9.15, "round": 3, "received_at": 9.15},
          {"event": "block_announced", "ts": 9.5, "round": 3, "received_at": 9.5})
    write("device0", {"event": "started", "ts": 0, "address": "0xd0"},
          {"event": "model", "ts": 4.0, "round": 2, "miner": m1, "fetch_started": 2.0,
           "fetched_at": 3.9, "download_bytes": 90_000},
          {"event": "uploaded", "ts": 5.4, "round": 3, "miner": m0, "sent_at": 5.0,
           "upload_bytes": COPY})
    assert run_transfers(tmp_path) == [
        Transfer("download", 3, "miner1", "device0", 2.0, 3.9, 90_000),
        Transfer("upload", 3, "device0", "miner0", 5.0, 5.4, COPY),
        Transfer("gossip", 3, "miner0", "miner1", 5.5, 5.7, COPY),
        Transfer("announce", 3, "miner0", "miner1", 9.1, 9.15, 2783),
    ]
