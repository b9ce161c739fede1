"""The hand-rolled EIP-712 encoding against eth_abi, the fast address paths against eth_utils."""

from __future__ import annotations

import random

import pytest
from eth_abi import encode
from eth_utils import to_checksum_address

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
