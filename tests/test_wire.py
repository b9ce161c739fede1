"""The JSON forms of records, blocks and attestations: exact round trips, WireError for junk."""

from __future__ import annotations

import json

import pytest

from blockfl.chain.attestation import Attestation, AttestedBlock, attest
from blockfl.chain.blocks import BlockProposal
from blockfl.hashing import keccak
from blockfl.signing import Domain, SignedUpdate, UpdateRecord, address_of, sign_update
from blockfl.wire import (
    MAX_RECORD_CHARS,
    WireError,
    attestation_from_dict,
    attestation_to_dict,
    parse_record_header,
    parse_request_signature,
    proposal_from_dict,
    proposal_to_dict,
    record_header,
    signed_from_dict,
    signed_to_dict,
)

KEY = keccak(b"wire-device")
DOMAIN = Domain(31337, "0x" + "ab" * 20)


def signed(round_: int = 3) -> SignedUpdate:
    record = UpdateRecord(address_of(KEY), round_, keccak(b"base"), keccak(b"update"), 42, 7)
    return SignedUpdate(record, sign_update(KEY, record, DOMAIN))


def test_round_trips_are_exact():
    s = signed()
    assert signed_from_dict(json.loads(json.dumps(signed_to_dict(s)))) == s
    assert parse_record_header(record_header(s)) == s
    proposal = BlockProposal(keccak(b"prev"), 3, keccak(b"model"), (s,), address_of(KEY),
                             nonce=2**255 + 1)
    assert proposal_from_dict(json.loads(json.dumps(proposal_to_dict(proposal)))) == proposal
    parse_record_header(record_header(s)).verify(DOMAIN)  # the signature survives the trip


@pytest.mark.parametrize(
    "change",
    [
        {"device": "0x1234"},
        {"device": 5},
        {"round": -1},
        {"round": 2**64},
        {"round": True},
        {"samples": "42"},
        {"base_model_hash": "0x00"},
        {"update_hash": "zz" * 32},
        {"signature": "0x" + "gg" * 65},
        {"signature": "00" * 500},
    ],
)
def test_malformed_records_raise_wire_error(change):
    data = signed_to_dict(signed()) | change
    with pytest.raises(WireError):
        signed_from_dict(data)


@pytest.mark.parametrize(
    "header", [None, "", "{", "[]", '{"device": 1}', "x" * (MAX_RECORD_CHARS + 1)]
)
def test_malformed_headers_raise_wire_error(header):
    with pytest.raises(WireError):
        parse_record_header(header)


@pytest.mark.parametrize(
    "change",
    [{"updates": {}}, {"miner": "nobody"}, {"nonce": "-1"}, {"nonce": str(2**256)},
     {"nonce": "abc"}, {"round": "1"}, {"updates": [{"device": "0x00"}]}],
)
def test_malformed_blocks_raise_wire_error(change):
    proposal = BlockProposal(keccak(b"prev"), 3, keccak(b"model"), (signed(),), address_of(KEY))
    with pytest.raises(WireError):
        proposal_from_dict(proposal_to_dict(proposal) | change)
    with pytest.raises(WireError):
        proposal_from_dict([1, 2])


def attestation() -> Attestation:
    block = AttestedBlock(3, keccak(b"prev"), keccak(b"root"), keccak(b"model"), keccak(b"spec"),
                          address_of(KEY))
    return attest(KEY, block, DOMAIN)


def test_attestation_round_trip_is_exact():
    a = attestation()
    assert attestation_from_dict(json.loads(json.dumps(attestation_to_dict(a)))) == a
    assert a.signer(DOMAIN) == address_of(KEY)


@pytest.mark.parametrize(
    "change",
    [{"round": -1}, {"round": 2**64}, {"round": True}, {"prev_hash": 5}, {"prev_hash": None},
     {"spec_hash": [1]}, {"updates_root": "zz" * 32}, {"signature": "0x" + "00" * 64},
     {"committer": "0x12"}, {"committer": 7}],
)
def test_malformed_attestations_raise_wire_error(change):
    """Never another exception: a peer's junk answer must not escape `gather`."""
    with pytest.raises(WireError):
        attestation_from_dict(attestation_to_dict(attestation()) | change)
    with pytest.raises(WireError):
        attestation_from_dict([1, 2])


@pytest.mark.parametrize(
    "header", [None, "", "0x12", "zz" * 65, "0x" + "00" * 66, "0x" + "ab" * 500])
def test_malformed_request_signatures_raise_wire_error(header):
    with pytest.raises(WireError):
        parse_request_signature(header)
    assert parse_request_signature("0x" + "ab" * 65) == bytes([0xAB]) * 65
