"""Claiming data rewards of merkle-mode blocks: a device proves its update is in a block.

A merkle block holds only the Merkle root of its update records on chain; the records come
from any miner that serves the block. They are checked against the chain (the rebuilt root
must be the committed one) before anything is sent, so a lying miner cannot make a device
claim wrongly; a claim already made is not sent again.
"""

from __future__ import annotations

from dataclasses import dataclass

from blockfl.chain.blocks import BlockProposal
from blockfl.chain.ledger import Ledger
from blockfl.chain.merkle import block_claims, block_records, block_tree


@dataclass(frozen=True)
class Claimable:
    """A device's update in a merkle block: its reward and whether it was claimed."""

    round: int
    index: int
    samples: int
    reward: int
    claimed: bool


def claimable(ledger: Ledger, block: BlockProposal, device: str) -> list[Claimable]:
    """The device's update in `block` (none or one), checked against the chain's root."""
    record = ledger.get_block(block.round)
    if record is None:
        raise LookupError(f"round {block.round} has no block on chain")
    if block_tree(block_records(block.updates, block.round)).root != record.updates_root:
        raise ValueError(f"the served block of round {block.round} does not match the chain")
    rate = ledger.params().reward_per_sample
    return [Claimable(block.round, c.index, c.record.samples, c.record.samples * rate,
                      ledger.is_claimed(block.round, c.index))
            for c in block_claims(block.updates, block.round, device)]


def claim(ledger: Ledger, key: bytes, block: BlockProposal, device: str) -> list[Claimable]:
    """Claim the device's unclaimed update of `block` (sent with `key`); what was claimed."""
    todo = [c for c in claimable(ledger, block, device) if not c.claimed]
    if todo:
        wanted = {c.index for c in todo}
        claims = [c for c in block_claims(block.updates, block.round, device) if c.index in wanted]
        ledger.claim(key, block.round, claims)
    return todo
