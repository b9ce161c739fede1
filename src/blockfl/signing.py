"""EIP-712 signatures of local update records, exactly as the BlockFL contract verifies them.

A device signs the typed record
`LocalUpdate(address device,uint64 round,bytes32 baseModelHash,bytes32 updateHash,uint64 samples,
uint64 computeTimeMs)` under the domain `EIP712Domain(name="BlockFL", version="1", chainId,
verifyingContract)`, so a signature is bound to one chain, one contract and one round.
Signatures are 65 bytes `r || s || v` with v in {27, 28} and low s (as OpenZeppelin's ECDSA
requires); signing and recovery use libsecp256k1 through coincurve.
"""

from __future__ import annotations

from dataclasses import dataclass

import coincurve
from eth_abi import encode
from eth_utils import to_checksum_address

from blockfl.hashing import keccak

DOMAIN_NAME = "BlockFL"
DOMAIN_VERSION = "1"
DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
UPDATE_TYPE = (
    "LocalUpdate(address device,uint64 round,bytes32 baseModelHash,bytes32 updateHash,"
    "uint64 samples,uint64 computeTimeMs)"
)
UPDATE_TYPEHASH = keccak(UPDATE_TYPE.encode())
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class SignatureError(ValueError):
    """A signature that is malformed or does not recover to the claimed signer."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain of one BlockFL deployment."""

    chain_id: int
    contract: str

    @property
    def separator(self) -> bytes:
        """The domain separator hash."""
        return keccak(
            encode(
                ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                [
                    DOMAIN_TYPEHASH,
                    keccak(DOMAIN_NAME.encode()),
                    keccak(DOMAIN_VERSION.encode()),
                    self.chain_id,
                    self.contract,
                ],
            )
        )


@dataclass(frozen=True)
class UpdateRecord:
    """What a device signs about one local update."""

    device: str
    round: int
    base_model_hash: bytes
    update_hash: bytes
    samples: int
    compute_time_ms: int

    def struct_hash(self) -> bytes:
        """EIP-712 hashStruct of the record."""
        return keccak(
            encode(
                ["bytes32", "address", "uint64", "bytes32", "bytes32", "uint64", "uint64"],
                [
                    UPDATE_TYPEHASH,
                    self.device,
                    self.round,
                    self.base_model_hash,
                    self.update_hash,
                    self.samples,
                    self.compute_time_ms,
                ],
            )
        )

    def digest(self, domain: Domain) -> bytes:
        """The EIP-712 digest `keccak(0x1901 || domainSeparator || hashStruct)`."""
        return keccak(b"\x19\x01" + domain.separator + self.struct_hash())


def address_of(private_key: bytes) -> str:
    """Checksum address of a private key."""
    public = coincurve.PublicKey.from_secret(private_key).format(compressed=False)
    return to_checksum_address(keccak(public[1:])[-20:])


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """65-byte `r || s || v` signature of a 32-byte digest (v in {27, 28}, low s)."""
    raw = coincurve.PrivateKey(private_key).sign_recoverable(digest, hasher=None)
    return raw[:64] + bytes([raw[64] + 27])


def sign_update(private_key: bytes, record: UpdateRecord, domain: Domain) -> bytes:
    """Sign an update record for a domain."""
    return sign_digest(private_key, record.digest(domain))


def recover_signer(digest: bytes, signature: bytes) -> str:
    """The address that signed `digest`; SignatureError if the signature is malformed."""
    if len(signature) != 65:
        raise SignatureError("malformed_signature", f"signature is {len(signature)} bytes, not 65")
    v = signature[64]
    if v not in (27, 28):
        raise SignatureError("malformed_signature", f"signature v={v}, expected 27 or 28")
    s = int.from_bytes(signature[32:64], "big")
    if s == 0 or s > _SECP256K1_N // 2:
        raise SignatureError("malformed_signature", "signature s is zero or not in the lower half")
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([v - 27]), digest, hasher=None
        )
    except Exception as exc:  # coincurve raises plain Exception on unrecoverable points
        raise SignatureError("malformed_signature", f"signature does not recover: {exc}") from exc
    return to_checksum_address(keccak(public.format(compressed=False)[1:])[-20:])


def verify_update(record: UpdateRecord, signature: bytes, domain: Domain) -> None:
    """Raise SignatureError unless `signature` is the device's signature of `record`."""
    signer = recover_signer(record.digest(domain), signature)
    if signer != to_checksum_address(record.device):
        raise SignatureError(
            "bad_signature", f"signature recovers to {signer}, not to device {record.device}"
        )


@dataclass(frozen=True)
class SignedUpdate:
    """A device's update record with its 65-byte signature."""

    record: UpdateRecord
    signature: bytes

    @property
    def device(self) -> str:
        """The device address (checksummed)."""
        return to_checksum_address(self.record.device)

    def verify(self, domain: Domain) -> None:
        """Raise SignatureError unless the signature is the device's, for `domain`."""
        verify_update(self.record, self.signature, domain)
