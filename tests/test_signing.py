"""The hand-rolled EIP-712 encoding against eth_abi, the fast address paths against eth_utils."""

from __future__ import annotations

import random

import pytest
from eth_abi import encode
from eth_hash.auto import keccak as eth_keccak
from eth_utils import is_address, to_checksum_address

from blockfl.hashing import keccak
from blockfl.keys import derived_key
from blockfl.signing import (
    DOMAIN_NAME,
    DOMAIN_TYPEHASH,
    DOMAIN_VERSION,
    UPDATE_TYPEHASH,
    Domain,
    SignatureError,
    SignedUpdate,
    UpdateRecord,
    _raw_address,
    address_of,
    recover_signer,
    sign_update,
    verify_update,
)

TYPES = ["bytes32", "address", "uint64", "bytes32", "bytes32", "uint64", "uint64"]
DOMAIN = Domain(31337, address_of(derived_key("contract", 0)))
U64_EDGES = [0, 1, 2**32, 2**63, 2**64 - 1]


def _reference_encoding(r: UpdateRecord) -> bytes:
    """The record as eth_abi encodes it (the encoding the contract's digest is built on)."""
    values = [UPDATE_TYPEHASH, r.device, r.round, r.base_model_hash, r.update_hash]
    return encode(TYPES, [*values, r.samples, r.compute_time_ms])


def _reference_separator(domain: Domain) -> bytes:
    name, version = keccak(DOMAIN_NAME.encode()), keccak(DOMAIN_VERSION.encode())
    types = ["bytes32", "bytes32", "bytes32", "uint256", "address"]
    return keccak(encode(types, [DOMAIN_TYPEHASH, name, version, domain.chain_id, domain.contract]))


def _device_forms(raw: bytes) -> list[str | bytes]:
    """Every spelling of one address that eth_abi accepts."""
    lower = raw.hex()
    return [to_checksum_address(raw), "0x" + lower, "0x" + lower.upper(), lower, "0X" + lower, raw]


def _random_records(count: int, seed: int) -> list[UpdateRecord]:
    """Records with random devices (in every accepted spelling), hashes and uint64 fields."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        ints = [rng.choice([*U64_EDGES, rng.getrandbits(64)]) for _ in range(3)]
        device = rng.choice(_device_forms(rng.randbytes(20)))
        base, update = (rng.choice([bytes(32), b"\xff" * 32, rng.randbytes(32)]) for _ in "ab")
        records.append(UpdateRecord(device, ints[0], base, update, ints[1], ints[2]))
    return records


@pytest.mark.parametrize("record", _random_records(300, seed=1))
def test_encoding_and_digest_match_eth_abi(record: UpdateRecord) -> None:
    assert record.encoded() == _reference_encoding(record)
    assert record.struct_hash() == keccak(_reference_encoding(record))
    reference = keccak(b"\x19\x01" + _reference_separator(DOMAIN) + keccak(record.encoded()))
    assert record.digest(DOMAIN) == reference


def test_unusual_fields_still_encode_as_eth_abi_does() -> None:
    """Shorter hashes are right-padded and bytearrays accepted, as by eth_abi."""
    device = address_of(derived_key("device", 0))
    for record in [
        UpdateRecord(device, 1, b"\x01" * 5, bytes(32), 2, 3),
        UpdateRecord(device, 1, bytes(32), bytearray(b"\x02" * 32), 2, 3),
        UpdateRecord(bytearray(bytes.fromhex(device[2:])), 1, bytes(32), bytes(32), 2, 3),
    ]:
        assert record.encoded() == _reference_encoding(record)


@pytest.mark.parametrize(
    "fields",
    [
        {"round": -1},
        {"samples": 2**64},
        {"compute_time_ms": 1.0},
        {"round": True},
        {"base_model_hash": bytes(33)},
        {"update_hash": "00" * 32},
        {"device": "0x1234"},
        {"device": bytes(19)},
    ],
)
def test_invalid_fields_raise_as_eth_abi_does(fields: dict) -> None:
    base = {
        "device": address_of(derived_key("device", 0)),
        "round": 1,
        "base_model_hash": bytes(32),
        "update_hash": bytes(32),
        "samples": 2,
        "compute_time_ms": 3,
    }
    record = UpdateRecord(**{**base, **fields})
    with pytest.raises(Exception) as expected:
        _reference_encoding(record)
    with pytest.raises(expected.type):
        record.encoded()


def test_domain_separator_is_cached_and_matches_eth_abi() -> None:
    domain = Domain(1, address_of(derived_key("contract", 1)))
    assert domain.separator == _reference_separator(domain)
    assert domain.separator is domain.separator
    assert Domain(1, domain.contract) == domain  # the cache is no dataclass field


def test_addresses_are_checksummed_as_eth_utils_does() -> None:
    rng = random.Random(2)
    for _ in range(200):
        raw = rng.randbytes(20)
        for form in _device_forms(raw):
            record = UpdateRecord(form, 1, bytes(32), bytes(32), 1, 1)
            assert SignedUpdate(record, b"").device == to_checksum_address(raw)
    key = derived_key("device", 3)
    assert address_of(key) == to_checksum_address(address_of(key))


def test_recovery_and_bad_signature_message() -> None:
    key, other = derived_key("device", 1), derived_key("device", 2)
    device = address_of(key)
    for form in _device_forms(bytes.fromhex(device[2:])):
        record = UpdateRecord(form, 1, bytes(32), bytes(32), 1, 1)
        signature = sign_update(key, record, DOMAIN)
        assert recover_signer(record.digest(DOMAIN), signature) == device
        verify_update(record, signature, DOMAIN)
        with pytest.raises(SignatureError) as exc:
            verify_update(record, sign_update(other, record, DOMAIN), DOMAIN)
        assert exc.value.reason == "bad_signature"
        assert str(exc.value) == (
            f"signature recovers to {address_of(other)}, not to device {record.device}"
        )


def test_keccak_matches_eth_hash() -> None:
    rng = random.Random(4)
    assert keccak(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    # every length around the 136-byte rate (padding edge cases), then random longer inputs
    sizes = [*range(300), *(rng.randrange(300, 20_000) for _ in range(50))]
    for size in sizes:
        data = rng.randbytes(size)
        assert keccak(data) == eth_keccak(data), size
    assert keccak(bytearray(b"abc")) == eth_keccak(bytearray(b"abc"))
    with pytest.raises(TypeError):
        keccak("abc")  # type: ignore[arg-type]


def test_raw_address_accepts_text_exactly_as_is_address() -> None:
    rng = random.Random(5)
    lower = rng.randbytes(20).hex()
    texts = [
        lower, "0x" + lower, "0X" + lower, lower.upper(), "0x" + lower[:-1], "0x" + lower + "0",
        "0x" + lower[:-2], lower[:-1] + "g", "0x" + lower[:10] + " " + lower[11:],
        " " + lower[1:], lower[:-1] + "\n", "0x" + lower[:-1] + "\u0660", "0x" + "0" * 40,
        "", "0x", "x" + lower + "0", "00" + lower, "0x0x" + lower[4:],
    ]
    for text in texts:
        raw = _raw_address(text)
        assert (raw is not None) == is_address(text), text
        if raw is not None:
            assert "0x" + raw.hex() == to_checksum_address(text).lower()
