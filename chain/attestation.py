"""EIP-712 block attestations: a miner's signed statement that it checked a candidate block.

A registered miner signs
`BlockAttestation(uint64 round,bytes32 prevHash,bytes32 updatesRoot,bytes32 globalModelHash,
bytes32 specHash)` in the deployment's domain (the one devices sign updates in), only after it
verified the candidate itself. The nonce and the committer are not part of it, so attestations
can be gathered before or after the proof-of-work. On chain a signature travels in EIP-2098
compact form `(r, vs)`, attestations sorted by signer address. Signing two different candidates
for one round is equivocation, provable with the two attestations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eth_abi import encode

from blockfl.chain.errors import rejection
from blockfl.hashing import keccak
from blockfl.signing import Domain, SignatureError, recover_signer, sign_digest

ATTESTATION_TYPE = (
    "BlockAttestation(uint64 round,bytes32 prevHash,bytes32 updatesRoot,bytes32 globalModelHash,"
    "bytes32 specHash)"
)
ATTESTATION_TYPEHASH = keccak(ATTESTATION_TYPE.encode())


@dataclass(frozen=True)
class AttestedBlock:
    """The candidate an attestation is about."""

    round: int
    prev_hash: bytes
    updates_root: bytes
    global_model_hash: bytes
    spec_hash: bytes

    def digest(self, domain: Domain) -> bytes:
        """The EIP-712 digest (the contract's `attestationDigest`)."""
        struct = encode(
            ["bytes32", "uint64", "bytes32", "bytes32", "bytes32", "bytes32"],
            [ATTESTATION_TYPEHASH, self.round, self.prev_hash, self.updates_root,
             self.global_model_hash, self.spec_hash],
        )
        return keccak(b"\x19\x01" + domain.separator + keccak(struct))

    def candidate(self) -> tuple[bytes, bytes, bytes, bytes]:
        """The contract's `Candidate` struct (everything but the round)."""
        return (self.prev_hash, self.updates_root, self.global_model_hash, self.spec_hash)


@dataclass(frozen=True)
class Attestation:
    """A miner's signature (65 bytes, r || s || v) over an `AttestedBlock`."""

    block: AttestedBlock
    signature: bytes

    def signer(self, domain: Domain) -> str:
        """The address that signed; SignatureError if the signature is malformed."""
        return recover_signer(self.block.digest(domain), self.signature)

    def compact(self) -> tuple[bytes, bytes]:
        """EIP-2098 `(r, vs)`: s with the parity of v in its top bit."""
        s = int.from_bytes(self.signature[32:64], "big") | ((self.signature[64] - 27) << 255)
        return self.signature[:32], s.to_bytes(32, "big")


def attest(key: bytes, block: AttestedBlock, domain: Domain) -> Attestation:
    """Sign an attestation with a miner's key."""
    return Attestation(block, sign_digest(key, block.digest(domain)))


def signer_or_none(attestation: Attestation, domain: Domain) -> str | None:
    """The signer, or None for a malformed signature."""
    try:
        return attestation.signer(domain)
    except SignatureError:
        return None


def sort_attestations(attestations: Sequence[Attestation], domain: Domain) -> list[Attestation]:
    """Contract order: ascending signer address (malformed signatures first)."""
    def order(a: Attestation) -> int:
        signer = signer_or_none(a, domain)
        return -1 if signer is None else int(signer, 16)

    return sorted(attestations, key=order)


def check_attestations(
    block: AttestedBlock,
    attestations: Sequence[Attestation],
    domain: Domain,
    committer: str,
    is_miner: Callable[[str], bool],
    required: int,
) -> None:
    """The contract's `_checkAttestations`: raise its named rejection unless at least
    `required` distinct registered miners, the committer included, signed `block`.

    Each signature is checked against this block's digest, as on chain: an attestation of
    another round, block, contract or chain recovers to an address that is no miner.
    """
    digest = block.digest(domain)
    previous = 0
    committer_signed = False
    for i, attestation in enumerate(attestations):
        try:
            signer = recover_signer(digest, attestation.signature)
        except SignatureError:
            raise rejection("MalformedAttestation", i) from None
        if int(signer, 16) == previous:
            raise rejection("DuplicateAttester", i, signer)
        if int(signer, 16) < previous:
            raise rejection("AttestationsNotSorted", i)
        if not is_miner(signer):
            raise rejection("AttesterNotMiner", i, signer)
        committer_signed |= int(signer, 16) == int(committer, 16)
        previous = int(signer, 16)
    attesters = len(attestations) + (0 if committer_signed else 1)
    if attesters < required:
        raise rejection("QuorumNotReached", attesters, required)


def equivocator(a: Attestation, b: Attestation, domain: Domain) -> str:
    """The miner that signed two different candidates of one round, as the contract's
    `reportEquivocation` decides; the named rejection when the pair proves nothing."""
    if a.block.round != b.block.round or a.block.digest(domain) == b.block.digest(domain):
        raise rejection("NotEquivocation")
    signers = []
    for i, attestation in enumerate((a, b)):
        signer = signer_or_none(attestation, domain)
        if signer is None:
            raise rejection("MalformedAttestation", i)
        signers.append(signer)
    if signers[0] != signers[1]:
        raise rejection("NotEquivocation")
    return signers[0]
