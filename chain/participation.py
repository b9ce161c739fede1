"""How many committed blocks include each device's update: the count a privacy budget is
charged by (`blockfl.privacy`), read from the chain so that every node agrees.

Direct mode only: there every included update is an `UpdateAccepted` event of its commit (in
merkle mode the chain holds a root, and events only for claimed updates)."""

from __future__ import annotations

import threading
from collections import Counter

from blockfl.chain.blocks import AcceptedUpdate, Head
from blockfl.chain.ledger import Ledger


class Participation:
    """Per device, its updates in committed blocks, as of the chain head; follows the head
    forward one block at a time and recounts when it moves any other way (a rollback)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._lock = threading.Lock()
        self._head: Head | None = None
        self._counts: Counter[str] = Counter()
        self._samples: dict[str, int] = {}

    def rounds(self, device: str) -> int:
        """Committed blocks that include an update of `device` (a checksum address)."""
        with self._lock:
            self._follow(self.ledger.head())
            return self._counts[device]

    def charged(self) -> dict[str, tuple[int, int]]:
        """Per device with an included update, sorted: (its rounds, the sample count of its
        latest included update), what its epsilon is charged by (`blockfl.privacy`)."""
        with self._lock:
            self._follow(self.ledger.head())
            return {d: (self._counts[d], self._samples[d]) for d in sorted(self._counts)}

    def _follow(self, head: Head) -> None:
        known = self._head
        if known is not None and head == known:
            return
        block = self.ledger.get_block(head.round) if head.round else None
        if known is not None and block is not None and head.round == known.round + 1 \
                and block.prev_hash == known.block_hash:
            self._count(self.ledger.accepted_updates(head.round))
        else:
            self._counts, self._samples = Counter(), {}
            self._count(self.ledger.accepted_updates())
        self._head = head

    def _count(self, updates: list[AcceptedUpdate]) -> None:
        for update in updates:
            self._counts[update.device] += 1
            self._samples[update.device] = update.samples
