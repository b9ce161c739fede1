"""The `Ledger` interface every backend implements with the same rules as the BlockFL contract."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from eth_utils import to_checksum_address

from blockfl.chain.attestation import Attestation, AttestedBlock
from blockfl.chain.blocks import (
    AcceptedUpdate,
    BlockProposal,
    BlockRecord,
    ChainParams,
    CommitReceipt,
    Head,
    block_updates_root,
)
from blockfl.chain.merkle import MerkleClaim
from blockfl.signing import Domain


class Ledger(ABC):
    """A BlockFL chain: read the head and blocks, commit attested blocks, claim, read rewards.

    Every write raises `BlockRejected` (or its subclass `ForkRejected`) with the contract's
    custom error name; a rejected call changes no state and mints nothing. Owner-only calls
    need the ledger opened with the deployer's key (`PermissionError` otherwise) and are
    rejected as `OwnableUnauthorizedAccount` for any other key.
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
    def commit_block(
        self, miner_key: bytes, proposal: BlockProposal, attestations: Sequence[Attestation] = ()
    ) -> CommitReceipt:
        """Submit a block, sent (as a transaction) by the miner's key, with the attestations of
        other miners (any order; the committer counts towards the quorum without one)."""

    @abstractmethod
    def commit_root(
        self, miner_key: bytes, proposal: BlockProposal, summary: tuple[bytes, int, int],
        attestations: Sequence[Attestation] = (),
    ) -> CommitReceipt:
        """Submit a merkle-mode block as the contract's `commitRoot` takes it: the header
        fields and nonce of `proposal` (its updates are not sent) with `summary`, the (Merkle
        root, update count, total samples) its attestations and proof-of-work commit to.
        `commit_block` sends the summary of the proposal's updates; a colluding quorum can
        send any, which is why claims are bounded on their own."""

    @abstractmethod
    def required_attesters(self) -> int:
        """Distinct miners that must stand behind a block now (the quorum)."""

    @abstractmethod
    def report_equivocation(self, reporter_key: bytes, a: Attestation, b: Attestation) -> str:
        """Prove that a miner attested two candidates of one round; it is removed. Returns it."""

    @abstractmethod
    def claim(self, sender_key: bytes, round_: int, claims: Sequence[MerkleClaim]) -> int:
        """Pay the data rewards of updates in the merkle block of `round_` (anyone may send
        the claims; rewards go to each record's device). Returns the gas used (0 if none)."""

    @abstractmethod
    def is_claimed(self, round_: int, index: int) -> bool:
        """Whether update `index` of the merkle block of `round_` was paid."""

    @abstractmethod
    def claimed_samples(self, round_: int) -> int:
        """The samples paid so far in the merkle block of `round_` (at most its total)."""

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

    @abstractmethod
    def add_miner(self, miner: str) -> None:
        """Register a miner (deployer only)."""

    @abstractmethod
    def remove_miner(self, miner: str) -> None:
        """Deregister a miner (deployer only)."""

    def attested_block(self, proposal: BlockProposal) -> AttestedBlock:
        """What miners attest about `proposal` on this deployment (committed by its miner)."""
        params = self.params()
        root = block_updates_root(proposal.updates, proposal.round, self.domain, params.mode)
        return AttestedBlock(proposal.round, proposal.prev_hash, root,
                             proposal.global_model_hash, params.protocol_spec_hash,
                             to_checksum_address(proposal.miner))

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
