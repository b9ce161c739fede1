"""Other miners over HTTP, as a `MinerNode` peer: gossip and block announcements are sent in
the background (one worker per peer, in order), so a slow or dead peer never delays an upload's
acknowledgement; failures are logged and the peer is tried again with the next message."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from blockfl.client import MinerClient, MinerRejected, MinerUnavailable
from blockfl.events import EventLog
from blockfl.miners.node import BlockAnnouncement, Verdict
from blockfl.wire import UpdateSubmission


class HttpPeer:
    """A peer miner reached through its `MinerClient`."""

    def __init__(self, client: MinerClient, log: EventLog) -> None:
        self.client = client
        self.log = log
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="peer")

    def receive_gossip(self, submission: UpdateSubmission) -> Verdict:
        """Queue the update for the peer; the peer's verdict is logged when it answers."""
        self._worker.submit(self._send, "gossip", self.client.gossip, submission)
        return Verdict(True, "queued")

    def receive_block(self, announcement: BlockAnnouncement) -> None:
        """Queue the announcement of a committed block (the peer fetches tensors it lacks)."""
        self._worker.submit(self._send, "announce", self.client.announce, announcement.proposal)

    def _send(self, what: str, call: Callable[[Any], object], message: object) -> None:
        try:
            call(message)
        except MinerRejected as exc:
            self.log(f"{what}_rejected", peer=self.client.url, reason=exc.reason)
        except MinerUnavailable as exc:
            self.log(f"{what}_failed", peer=self.client.url, error=str(exc))

    def close(self) -> None:
        """Stop the worker (pending messages are dropped)."""
        self._worker.shutdown(wait=False, cancel_futures=True)
