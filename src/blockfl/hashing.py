"""Hash helpers shared by every role: keccak-256, hex forms of 32-byte hashes."""

from __future__ import annotations

from sha3 import keccak_256  # safe-pysha3: C Keccak, ~7x faster than eth_hash's pycryptodome

ZERO_HASH = b"\x00" * 32


def keccak(data: bytes) -> bytes:
    """Keccak-256 of `data` (the EVM's hash), equal to eth_hash's `keccak`."""
    return keccak_256(data).digest()


def to_hex(value: bytes) -> str:
    """0x-prefixed lowercase hex of `value`."""
    return "0x" + value.hex()


def from_hex(value: str | bytes, length: int = 32) -> bytes:
    """Bytes of a 0x-hex string (or bytes passed through), checked to be `length` long."""
    raw = value if isinstance(value, bytes) else bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != length:
        raise ValueError(f"expected {length} bytes, got {len(raw)}")
    return raw
