"""Merkle trees over the update records of a merkle-mode block, as OpenZeppelin verifies them.

A leaf is `keccak256(keccak256(abi.encode(index, device, round, baseModelHash, updateHash,
samples, computeTimeMs)))` (double keccak, as OpenZeppelin's StandardMerkleTree hashes leaves),
where `index` is the update's position in the block (ascending device address). Inner nodes
hash their two children in sorted order, `keccak256(min || max)`, which is what
`MerkleProof.verify` expects; an odd node at the end of a level moves up unchanged. A block's
header and attestations commit to `keccak256(abi.encode(root, count, totalSamples))`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from eth_abi import encode

from blockfl.chain.errors import rejection
from blockfl.hashing import ZERO_HASH, keccak
from blockfl.signing import SignedUpdate, UpdateRecord

UINT64_MAX = 2**64 - 1
LEAF_TYPES = ["uint32", "address", "uint64", "bytes32", "bytes32", "uint64", "uint64"]


def leaf_hash(index: int, record: UpdateRecord) -> bytes:
    """The leaf of `record` at position `index` (the contract's `leafHash`)."""
    fields = [index, record.device, record.round, record.base_model_hash, record.update_hash,
              record.samples, record.compute_time_ms]
    return keccak(keccak(encode(LEAF_TYPES, fields)))


def hash_pair(a: bytes, b: bytes) -> bytes:
    """An inner node: keccak of the two children in ascending order."""
    return keccak(a + b if a <= b else b + a)


class MerkleTree:
    """A tree over `leaves` (in order); `root` and `proof(i)` as `MerkleProof.verify` takes them."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        self.levels: list[list[bytes]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            level = self.levels[-1]
            up = [hash_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                up.append(level[-1])
            self.levels.append(up)

    @property
    def root(self) -> bytes:
        """The root hash."""
        return self.levels[-1][0]

    def proof(self, index: int) -> list[bytes]:
        """Sibling hashes from leaf `index` up to the root."""
        out = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                out.append(level[sibling])
            index //= 2
        return out


def verify(proof: Sequence[bytes], root: bytes, leaf: bytes) -> bool:
    """`MerkleProof.verify`: whether `proof` leads from `leaf` to `root`."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root


def block_records(updates: Sequence[SignedUpdate], round_: int) -> list[UpdateRecord]:
    """The records of a block's updates, each with the block's round."""
    return [u.record if u.record.round == round_ else replace(u.record, round=round_)
            for u in updates]


def block_tree(records: Sequence[UpdateRecord]) -> MerkleTree:
    """The Merkle tree of a block's update records (in block order)."""
    return MerkleTree([leaf_hash(i, r) for i, r in enumerate(records)])


def block_summary(updates: Sequence[SignedUpdate], round_: int) -> tuple[bytes, int, int]:
    """What a merkle block carries on chain: (Merkle root, update count, total samples).

    A total beyond uint64 cannot be committed; it is refused as the contract refuses a sample
    count out of range. An empty block carries a zero root (the contract refuses it as empty).
    """
    if not updates:
        return ZERO_HASH, 0, 0
    records = block_records(updates, round_)
    total = sum(r.samples for r in records)
    if total > UINT64_MAX:
        raise rejection("SampleCountOutOfRange", len(records) - 1, total, UINT64_MAX)
    return block_tree(records).root, len(records), total


def committed_root(merkle_root: bytes, count: int, total_samples: int) -> bytes:
    """What a merkle block's header and attestations commit to (the contract's
    `merkleUpdatesRoot`): the root bound to the update count and total samples."""
    return keccak(encode(["bytes32", "uint32", "uint64"], [merkle_root, count, total_samples]))


@dataclass(frozen=True)
class MerkleClaim:
    """What a device submits to claim the reward of one update: its leaf and proof."""

    index: int
    record: UpdateRecord
    proof: tuple[bytes, ...]

    def leaf(self) -> bytes:
        """The claimed leaf hash."""
        return leaf_hash(self.index, self.record)


def block_claims(
    updates: Sequence[SignedUpdate], round_: int, device: str | None = None
) -> list[MerkleClaim]:
    """The claims of a merkle block's updates (of one device, if given)."""
    records = block_records(updates, round_)
    tree = block_tree(records)
    wanted = None if device is None else int(device, 16)
    return [MerkleClaim(i, r, tuple(tree.proof(i))) for i, r in enumerate(records)
            if wanted is None or int(r.device, 16) == wanted]
