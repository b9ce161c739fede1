"""The `Ledger` interface every backend implements with the same rules as the BlockFL contract."""

from __future__ import annotations

from abc import ABC, abstractmethod

from blockfl.chain.blocks import (
    AcceptedUpdate,
    BlockProposal,
    BlockRecord,
    ChainParams,
    CommitReceipt,
    Head,
)
from blockfl.signing import Domain


class Ledger(ABC):
    """A BlockFL chain: read the head and blocks, commit a block, read rewards.

    `commit_block` raises `BlockRejected` (or its subclass `ForkRejected`) with the contract's
    custom error name; a rejected block changes no state and mints nothing.
    """

    #: the EIP-712 domain devices sign under for this deployment
    domain: Domain

    @abstractmethod
    def params(self) -> ChainParams:
        """The deployment's parameters."""

    @abstractmethod
    def head(self) -> Head:
        """The last committed round, its block hash and global model hash."""

    @abstractmethod
    def get_block(self, round_: int) -> BlockRecord | None:
        """The block committed for `round_`, or None."""

    @abstractmethod
    def commit_block(self, miner_key: bytes, proposal: BlockProposal) -> CommitReceipt:
        """Submit a block signed (as a transaction) by the miner's key."""

    @abstractmethod
    def is_miner(self, address: str) -> bool:
        """Whether `address` is a registered miner."""

    @abstractmethod
    def balance_of(self, address: str) -> int:
        """Reward-token balance of `address` (smallest units)."""

    @abstractmethod
    def accepted_updates(self, round_: int | None = None) -> list[AcceptedUpdate]:
        """`UpdateAccepted` events, of one round or of all rounds, in block order."""

    @abstractmethod
    def set_target(self, target: int) -> None:
        """Change the proof-of-work target (deployer only)."""

    @abstractmethod
    def set_device_allowed(self, device: str, allowed: bool) -> None:
        """Allow or disallow a device on the allow-list (deployer only)."""

    def blocks(self) -> list[BlockRecord]:
        """Every committed block, from round 1 to the head."""
        head = self.head().round
        return [b for r in range(1, head + 1) if (b := self.get_block(r)) is not None]

    def reward_totals(self) -> dict[str, int]:
        """Rewards per address summed from events: data rewards plus mining rewards."""
        totals: dict[str, int] = {}
        for update in self.accepted_updates():
            totals[update.device] = totals.get(update.device, 0) + update.reward
        mining = self.params().mining_reward
        for block in self.blocks():
            totals[block.miner] = totals.get(block.miner, 0) + mining
        return totals
