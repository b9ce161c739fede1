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
from functools import cached_property, lru_cache

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
_UPDATE_TYPES = ["bytes32", "address", "uint64", "bytes32", "bytes32", "uint64", "uint64"]
_UINT64_END = 2**64
_PAD12 = bytes(12)


@lru_cache(maxsize=1 << 16)  # addresses recur every round (devices, miners)
def _checksum(address: bytes) -> str:
    """EIP-55 checksum form of a 20-byte address (as `to_checksum_address`, without its checks)."""
    lower = address.hex()
    nibbles = keccak(lower.encode()).hex()
    # a hex digit is upper-cased where its keccak nibble is >= 8 ("8"-"f" sort after "0"-"7")
    pairs = zip(lower, nibbles, strict=False)  # the first 40 of the hash's 64 nibbles
    return "0x" + "".join([c.upper() if n >= "8" else c for c, n in pairs])


def _raw_address(address: str | bytes) -> bytes | None:
    """The 20 bytes of a hex (any case, optional 0x) or raw address; None for anything else.

    Text is accepted as eth_utils' `is_address` accepts it (no checksum check in eth_utils 6).
    """
    if isinstance(address, str):
        if len(address) == 42 and address[:2] in ("0x", "0X"):
            address = address[2:]
        elif len(address) != 40:
            return None
        try:  # 40 characters make 20 bytes only if all are hex digits (no whitespace)
            raw = bytes.fromhex(address)
        except ValueError:
            return None
        return raw if len(raw) == 20 else None
    if isinstance(address, (bytes, bytearray)) and len(address) == 20:
        return bytes(address)
    return None


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

    @cached_property
    def separator(self) -> bytes:
        """The domain separator hash (computed once per Domain)."""
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

    def encoded(self) -> bytes:
        """`abi.encode(UPDATE_TYPEHASH, device, round, baseModelHash, updateHash, samples,
        computeTimeMs)`: seven static 32-byte words, byte-identical to eth_abi's `encode`.

        Well-formed fields (a hex or 20-byte device, exactly 32-byte hashes, ints in uint64
        range) take a hand-rolled path; anything else goes to eth_abi, which pads or raises
        exactly as before.
        """
        return self._encoded(_raw_address(self.device))

    def _encoded(self, device: bytes | None) -> bytes:
        """`encoded()`, given `_raw_address(self.device)`."""
        r, n, ms = self.round, self.samples, self.compute_time_ms
        base, update = self.base_model_hash, self.update_hash
        if (
            device is None
            or type(r) is not int
            or type(n) is not int
            or type(ms) is not int
            or not (0 <= r < _UINT64_END and 0 <= n < _UINT64_END and 0 <= ms < _UINT64_END)
            or type(base) is not bytes
            or type(update) is not bytes
            or len(base) != 32
            or len(update) != 32
        ):
            return encode(
                _UPDATE_TYPES, [UPDATE_TYPEHASH, self.device, r, base, update, n, ms]
            )
        return b"".join(
            (
                UPDATE_TYPEHASH,
                _PAD12,
                device,
                r.to_bytes(32, "big"),
                base,
                update,
                n.to_bytes(32, "big"),
                ms.to_bytes(32, "big"),
            )
        )

    def struct_hash(self) -> bytes:
        """EIP-712 hashStruct of the record."""
        return keccak(self.encoded())

    def digest(self, domain: Domain) -> bytes:
        """The EIP-712 digest `keccak(0x1901 || domainSeparator || hashStruct)`."""
        return self._digest(domain, _raw_address(self.device))

    def _digest(self, domain: Domain, device: bytes | None) -> bytes:
        """`digest(domain)`, given `_raw_address(self.device)`."""
        return keccak(b"\x19\x01" + domain.separator + keccak(self._encoded(device)))


def address_of(private_key: bytes) -> str:
    """Checksum address of a private key."""
    public = coincurve.PublicKey.from_secret(private_key).format(compressed=False)
    return _checksum(keccak(public[1:])[-20:])


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """65-byte `r || s || v` signature of a 32-byte digest (v in {27, 28}, low s)."""
    raw = coincurve.PrivateKey(private_key).sign_recoverable(digest, hasher=None)
    return raw[:64] + bytes([raw[64] + 27])


def sign_update(private_key: bytes, record: UpdateRecord, domain: Domain) -> bytes:
    """Sign an update record for a domain."""
    return sign_digest(private_key, record.digest(domain))


def recover_signer(digest: bytes, signature: bytes) -> str:
    """The checksum address that signed `digest`; SignatureError if the signature is malformed."""
    return _checksum(_recover_address(digest, signature))


def _recover_address(digest: bytes, signature: bytes) -> bytes:
    """The raw 20-byte address that signed `digest`; SignatureError if malformed."""
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
    return keccak(public.format(compressed=False)[1:])[-20:]


def verify_update(record: UpdateRecord, signature: bytes, domain: Domain) -> bytes:
    """Raise SignatureError unless `signature` is the device's signature of `record`.

    Returns the signer's raw 20-byte address (the record's device, as bytes).
    """
    device = _raw_address(record.device)
    signer = _recover_address(record._digest(domain, device), signature)
    # the digest already rejected a device that is no address, so the raw form exists here
    if signer != device:
        raise SignatureError(
            "bad_signature",
            f"signature recovers to {_checksum(signer)}, not to device {record.device}",
        )
    return signer


@dataclass(frozen=True)
class SignedUpdate:
    """A device's update record with its 65-byte signature."""

    record: UpdateRecord
    signature: bytes

    @cached_property
    def device(self) -> str:
        """The device address (checksummed; computed once: a round asks for it ~80 times)."""
        raw = _raw_address(self.record.device)
        return _checksum(raw) if raw is not None else to_checksum_address(self.record.device)

    @property
    def device_bytes(self) -> bytes | None:
        """The device's raw 20-byte address; None if the record's device is no address."""
        return _raw_address(self.record.device)

    def verify(self, domain: Domain) -> bytes:
        """Raise SignatureError unless the signature is the device's, for `domain`.

        Returns the device's raw 20-byte address (which the signature recovered to).
        """
        return verify_update(self.record, self.signature, domain)
