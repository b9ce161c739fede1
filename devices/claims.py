"""Claiming data rewards of merkle-mode blocks: a device proves its update is in a block.

A merkle block holds only the Merkle root of its update records on chain; the records come
from any miner that serves the block. They are checked against the chain (the rebuilt root
must be the committed one) before anything is sent, so a lying miner cannot make a device
claim wrongly; a claim already made is not sent again. `blockfl claim` and `blockfl inspect
claims` list what is claimable with the same functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from blockfl.chain.blocks import BlockProposal
from blockfl.chain.ledger import Ledger
from blockfl.chain.merkle import MerkleClaim, block_claims, block_records, block_tree


@dataclass(frozen=True)
class Claimable:
    """A device's update in a merkle block: its reward and whether it was claimed."""

    round: int
    index: int
    device: str
    samples: int
    reward: int
    claimed: bool


class BlockSource(Protocol):
    """What serves committed blocks: a miner (`blockfl.client.MinerClient`)."""

    def block(self, ref: int) -> BlockProposal | None:
        """The committed block of round `ref`, or None."""


def served_blocks(ledger: Ledger, sources: Sequence[BlockSource]) -> Iterator[BlockProposal]:
    """The blocks of rounds 1..head, each from the first source that serves it; LookupError
    names a round that none serves."""
    for round_ in range(1, ledger.head().round + 1):
        block = next((b for s in sources if (b := s.block(round_)) is not None), None)
        if block is None:
            raise LookupError(f"no miner serves the block of round {round_}")
        yield block


def claimable(ledger: Ledger, block: BlockProposal, device: str | None = None
              ) -> list[Claimable]:
    """The updates in `block` (of one device, if given: none or one), checked against the
    chain's root."""
    return _described(ledger, block.round, _checked_claims(ledger, block, device))


def claim(ledger: Ledger, key: bytes, block: BlockProposal, device: str) -> list[Claimable]:
    """Claim the device's unclaimed update of `block` (sent with `key`); what was claimed."""
    claims = _checked_claims(ledger, block, device)
    described = _described(ledger, block.round, claims)
    todo = [c for c, d in zip(claims, described, strict=True) if not d.claimed]
    if todo:
        ledger.claim(key, block.round, todo)
    return [d for d in described if not d.claimed]


def _checked_claims(ledger: Ledger, block: BlockProposal, device: str | None
                    ) -> list[MerkleClaim]:
    """The claims of `block`'s updates (of one device, if given), once the block's rebuilt
    root is the one on chain."""
    record = ledger.get_block(block.round)
    if record is None:
        raise LookupError(f"round {block.round} has no block on chain")
    if block_tree(block_records(block.updates, block.round)).root != record.updates_root:
        raise ValueError(f"the served block of round {block.round} does not match the chain")
    return block_claims(block.updates, block.round, device)


def _described(ledger: Ledger, round_: int, claims: Sequence[MerkleClaim]) -> list[Claimable]:
    """Each claim's reward, and whether it was paid."""
    rate = ledger.params().reward_per_sample
    return [Claimable(round_, c.index, c.record.device, c.record.samples,
                      c.record.samples * rate, ledger.is_claimed(round_, c.index))
            for c in claims]
