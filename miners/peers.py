"""Other miners over HTTP, as a `MinerNode` peer: gossip and block announcements are sent in
the background (one worker per peer, in order), so a slow or dead peer never delays an upload's
acknowledgement; failures are logged and the peer is tried again with the next message. A peer
that answers slowly (each answer takes up to its client's timeout) gets at most `MAX_BACKLOG`
messages waiting: later ones are dropped, a `<what>_dropped` event at most every 10 s with its
count, so a hostile peer cannot make the queue grow without bound."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from blockfl.chain.blocks import BlockProposal
from blockfl.client import MinerClient, MinerRejected, MinerUnavailable
from blockfl.events import EventLog, Throttled
from blockfl.miners.node import BlockAnnouncement, Verdict
from blockfl.wire import UpdateSubmission, record_header

MAX_BACKLOG = 256  # messages waiting for one peer
DROPPED_EVERY = 10.0  # seconds between two `_dropped` events of one peer


class HttpPeer:
    """A peer miner reached through its `MinerClient`."""

    def __init__(self, client: MinerClient, log: EventLog) -> None:
        self.client = client
        self.log = log
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="peer")
        self._waiting = 0
        self._lock = threading.Lock()
        self._dropped = Throttled(log, DROPPED_EVERY)

    def receive_gossip(self, submission: UpdateSubmission) -> Verdict:
        """Queue the update for the peer; the peer's verdict is logged when it answers, and a
        `gossip_sent` event when it accepts (with `sent_at`, the copy's first byte, and its
        size: the exchange's transfer in `latency compare`)."""
        self._queue("gossip", self._gossip, submission)
        return Verdict(True, "queued")

    def _gossip(self, submission: UpdateSubmission) -> None:
        record = submission.signed.record
        sent_at = time.time()
        self.client.gossip(submission)
        self.log("gossip_sent", peer=self.client.url, device=submission.device,
                 round=record.round, sent_at=sent_at,
                 bytes=len(submission.payload) + len(record_header(submission.signed)))

    def receive_block(self, announcement: BlockAnnouncement) -> None:
        """Queue the announcement of a committed block (the peer fetches tensors it lacks); an
        `announce_sent` event when the peer took it (`sent_at`, `bytes`: the block's transfer
        in `latency compare`)."""
        self._queue("announce", self._announce, announcement.proposal)

    def _announce(self, proposal: BlockProposal) -> None:
        sent_at = time.time()
        size = self.client.announce(proposal)
        self.log("announce_sent", peer=self.client.url, round=proposal.round, sent_at=sent_at,
                 bytes=size)

    def _queue(self, what: str, call: Callable[[Any], object], message: object) -> None:
        with self._lock:
            full = self._waiting >= MAX_BACKLOG
            if not full:
                self._waiting += 1
        if full:
            self._dropped(f"{what}_dropped", (), peer=self.client.url, backlog=MAX_BACKLOG)
            return
        self._worker.submit(self._send, what, call, message)

    def _send(self, what: str, call: Callable[[Any], object], message: object) -> None:
        try:
            call(message)
        except MinerRejected as exc:
            self.log(f"{what}_rejected", peer=self.client.url, reason=exc.reason)
        except MinerUnavailable as exc:
            self.log(f"{what}_failed", peer=self.client.url, error=str(exc))
        finally:
            with self._lock:
                self._waiting -= 1

    def close(self) -> None:
        """Stop the worker (pending messages are dropped)."""
        self._worker.shutdown(wait=False, cancel_futures=True)
