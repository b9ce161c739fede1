"""Blocks as the contract sees them: signed updates, the header, the block hash and proof-of-work.

The block hash is `keccak256(abi.encode(prevHash, round, globalModelHash, updatesRoot, miner,
nonce))`; the proof-of-work holds when the block hash, read as a 256-bit integer, is at most
`target`. In direct mode the updates root is `keccak256(digest_1 || ... || digest_n)` over the
EIP-712 digests of the block's updates in block order (sorted by device address); in merkle
mode it is the Merkle root of the update records bound to their count and total samples
(`blockfl.chain.merkle`). A miner's name is in the
header, so a nonce found by one miner is worthless to another.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from eth_abi import encode
from eth_utils import to_checksum_address

from blockfl.chain.merkle import block_summary, committed_root
from blockfl.hashing import ZERO_HASH, keccak
from blockfl.signing import Domain, SignedUpdate

MAX_TARGET = 2**256 - 1
# Block modes, by their `Params.mode` number on chain: `direct` checks and pays every update in
# the commit; `merkle` commits a Merkle root of the update records and devices claim with proofs.
MODES = ("direct", "merkle")


def sort_updates(updates: Sequence[SignedUpdate]) -> list[SignedUpdate]:
    """Block order: ascending device address (as the contract requires)."""
    return sorted(updates, key=lambda u: int(u.record.device, 16))


def update_digests(updates: Sequence[SignedUpdate], round_: int, domain: Domain) -> list[bytes]:
    """EIP-712 digests of the updates as the contract computes them: with the block's round."""
    return [
        (u.record if u.record.round == round_ else replace(u.record, round=round_)).digest(domain)
        for u in updates
    ]


def updates_root(digests: Sequence[bytes]) -> bytes:
    """keccak256 over the concatenated EIP-712 digests of a block's updates, in block order."""
    return keccak(b"".join(digests))


def block_updates_root(
    updates: Sequence[SignedUpdate], round_: int, domain: Domain, mode: str = "direct"
) -> bytes:
    """The updates root a block's header and attestations commit to: in direct mode the hash
    of the update digests, in merkle mode the Merkle root bound to count and total samples."""
    if mode == "merkle":
        return committed_root(*block_summary(updates, round_))
    return updates_root(update_digests(updates, round_, domain))


@dataclass(frozen=True)
class BlockHeader:
    """Everything the proof-of-work commits to except the nonce."""

    prev_hash: bytes
    round: int
    global_model_hash: bytes
    updates_root: bytes
    miner: str

    def prefix(self) -> bytes:
        """ABI encoding of the header fields; the block hash is keccak(prefix || nonce)."""
        return encode(
            ["bytes32", "uint64", "bytes32", "bytes32", "address"],
            [self.prev_hash, self.round, self.global_model_hash, self.updates_root, self.miner],
        )

    def block_hash(self, nonce: int) -> bytes:
        """The block hash for `nonce`."""
        return keccak(self.prefix() + nonce.to_bytes(32, "big"))


@dataclass(frozen=True)
class BlockProposal:
    """A block a miner submits: header fields, sorted signed updates and the nonce.

    `excluded` (not on chain) names the update hashes the aggregation rule kept out of the
    block, so that peers can re-run the selection (`blockfl.aggregation.selection_mismatch`).
    """

    prev_hash: bytes
    round: int
    global_model_hash: bytes
    updates: tuple[SignedUpdate, ...]
    miner: str
    nonce: int = 0
    excluded: tuple[bytes, ...] = ()

    def header(self, domain: Domain, mode: str = "direct") -> BlockHeader:
        """The header, with the updates root computed for `domain` and the block mode."""
        return BlockHeader(
            self.prev_hash,
            self.round,
            self.global_model_hash,
            block_updates_root(self.updates, self.round, domain, mode),
            to_checksum_address(self.miner),
        )


@dataclass(frozen=True)
class Head:
    """The chain head: last committed round (0 before the first block)."""

    round: int
    block_hash: bytes = ZERO_HASH
    global_model_hash: bytes = ZERO_HASH


@dataclass(frozen=True)
class BlockRecord:
    """A committed block as stored on chain."""

    round: int
    block_hash: bytes
    prev_hash: bytes
    global_model_hash: bytes
    updates_root: bytes
    miner: str
    num_updates: int
    timestamp: int
    total_samples: int
    nonce: int


@dataclass(frozen=True)
class AcceptedUpdate:
    """An `UpdateAccepted` event: an update in a committed block and the reward it earned."""

    round: int
    device: str
    update_hash: bytes
    samples: int
    reward: int


@dataclass(frozen=True)
class ChainParams:
    """The contract's parameters.

    `mode` is one of `MODES`; `quorum` is how many distinct registered miners must attest a
    block (0: a majority of the miners registered at commit time); `protocol_spec_hash` is the
    hash of the protocol spec every node runs (zero when none was given).
    """

    target: int
    reward_per_sample: int
    mining_reward: int
    max_samples_per_update: int
    max_updates_per_block: int
    device_allow_list: bool
    genesis_model_hash: bytes
    protocol_spec_hash: bytes = ZERO_HASH
    mode: str = "direct"
    quorum: int = 0
    token: str = field(default="")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown block mode {self.mode!r}: {' or '.join(MODES)}")
        if not 0 <= self.quorum < 2**16:
            raise ValueError(f"quorum {self.quorum} out of range (0 = majority of miners)")


@dataclass(frozen=True)
class CommitReceipt:
    """What a successful commit returns."""

    block_hash: bytes
    gas_used: int
    tx_hash: bytes = ZERO_HASH


@dataclass(frozen=True)
class PowSolution:
    """A nonce meeting the target, its block hash and how many hashes it took."""

    nonce: int
    block_hash: bytes
    attempts: int


def solve_pow(
    header: BlockHeader, target: int, start_nonce: int = 0, max_attempts: int | None = None
) -> PowSolution | None:
    """Search nonces from `start_nonce` until keccak(header, nonce) <= target.

    Returns None when `max_attempts` hashes were tried without success, so callers can
    interleave the search with other work (the proof-of-work race).
    """
    prefix = header.prefix()
    nonce = start_nonce
    end = None if max_attempts is None else start_nonce + max_attempts
    while end is None or nonce < end:
        digest = keccak(prefix + nonce.to_bytes(32, "big"))
        if int.from_bytes(digest, "big") <= target:
            return PowSolution(nonce, digest, nonce - start_nonce + 1)
        nonce += 1
    return None


def target_for_rate(block_rate: float, hash_rate: float) -> int:
    """Target giving one miner of `hash_rate` hashes/s a block generation rate `block_rate`.

    Each hash succeeds with probability p = (target + 1) / 2^256, so the time to a block is
    (nearly) exponential with rate lambda = p * hash_rate; hence target = lambda / hash_rate
    * 2^256 - 1, capped at the largest target (every hash succeeds).
    """
    if block_rate <= 0 or hash_rate <= 0:
        raise ValueError("block rate and hash rate must be positive")
    p = block_rate / hash_rate
    if p >= 1:
        return MAX_TARGET
    return max(0, math.floor(p * 2**256) - 1)


def rate_for_target(target: int, hash_rate: float) -> float:
    """Block generation rate lambda of one miner of `hash_rate` hashes/s under `target`."""
    return (target + 1) / 2**256 * hash_rate
