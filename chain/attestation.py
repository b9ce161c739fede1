"""EIP-712 block attestations: a miner's signed statement that it checked a candidate block.

A registered miner signs
`BlockAttestation(uint64 round,bytes32 prevHash,bytes32 updatesRoot,bytes32 globalModelHash,
bytes32 specHash,address committer)` in the deployment's domain (the one devices sign updates
in), only after it verified the candidate itself. The committer is the miner whose header the
proof-of-work is for, and the contract counts an attestation only in a commit sent by that
miner, so no other miner can take an attested candidate. On chain a signature travels in
EIP-2098 compact form `(r, vs)`, attestations sorted by signer address. Signing two different
candidates of one committer for one round is equivocation, provable with the two; candidates
of different committers are not (only one block of a round lands, and a committer that
gathers attestations and never commits must not stall the others).

The committer asks for an attestation with an `AttestationRequest(bytes32 attestation,uint256
nonce)` signed in the same domain (the attestation's struct hash and the winning nonce): only
a registered miner holding a solved candidate can spend another miner's one signature of a
round. A request is never evidence of equivocation: it is not a `BlockAttestation`.
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
    "bytes32 specHash,address committer)"
)
ATTESTATION_TYPEHASH = keccak(ATTESTATION_TYPE.encode())
REQUEST_TYPE = "AttestationRequest(bytes32 attestation,uint256 nonce)"
REQUEST_TYPEHASH = keccak(REQUEST_TYPE.encode())


@dataclass(frozen=True)
class AttestedBlock:
    """The candidate an attestation is about."""

    round: int
    prev_hash: bytes
    updates_root: bytes
    global_model_hash: bytes
    spec_hash: bytes
    committer: str  # checksum address of the miner that may commit the block

    def struct_hash(self) -> bytes:
        """The EIP-712 struct hash of the `BlockAttestation`."""
        return keccak(encode(
            ["bytes32", "uint64", "bytes32", "bytes32", "bytes32", "bytes32", "address"],
            [ATTESTATION_TYPEHASH, self.round, self.prev_hash, self.updates_root,
             self.global_model_hash, self.spec_hash, self.committer],
        ))

    def digest(self, domain: Domain) -> bytes:
        """The EIP-712 digest (the contract's `attestationDigest`)."""
        return _typed_digest(domain, self.struct_hash())

    def request_digest(self, nonce: int, domain: Domain) -> bytes:
        """The EIP-712 digest of the committer's `AttestationRequest` for this candidate."""
        struct = encode(["bytes32", "bytes32", "uint256"],
                        [REQUEST_TYPEHASH, self.struct_hash(), nonce])
        return _typed_digest(domain, keccak(struct))

    def candidate(self) -> tuple[bytes, bytes, bytes, bytes, str]:
        """The contract's `Candidate` struct (everything but the round)."""
        return (self.prev_hash, self.updates_root, self.global_model_hash, self.spec_hash,
                self.committer)


def _typed_digest(domain: Domain, struct_hash: bytes) -> bytes:
    return keccak(b"\x19\x01" + domain.separator + struct_hash)


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


def sign_request(key: bytes, block: AttestedBlock, nonce: int, domain: Domain) -> bytes:
    """The committer's signature of its request to attest `block` mined with `nonce`."""
    return sign_digest(key, block.request_digest(nonce, domain))


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
    """The miner that signed two different candidates of one committer in one round, as the
    contract's `reportEquivocation` decides; the named rejection when the pair proves nothing."""
    if (a.block.round != b.block.round or a.block.committer != b.block.committer
            or a.block.digest(domain) == b.block.digest(domain)):
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
