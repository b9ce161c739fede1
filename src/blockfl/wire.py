"""What travels between devices and miners: signed records, their tensors, blocks, and
miners' attestations.

Over HTTP an update is its safetensors bytes (the body) plus its signed record as compact
JSON in the `BlockFL-Update` header; a block travels as JSON (`proposal_to_dict`) and the
receiver fetches any update tensors it lacks by update hash. A request for an attestation is
the candidate's JSON with the committer's signature in the `BlockFL-Attestation-Request`
header. Parsing never trusts its input:
JSON is size- and depth-checked before it is decoded (`blockfl.safejson`), and anything
malformed raises `WireError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eth_utils import is_address, to_checksum_address

from blockfl import safejson
from blockfl.chain.attestation import Attestation, AttestedBlock
from blockfl.chain.blocks import BlockProposal
from blockfl.hashing import from_hex, to_hex
from blockfl.signing import SignedUpdate, UpdateRecord

RECORD_HEADER = "BlockFL-Update"
# on POST /attestations: the committer's signature of its `AttestationRequest` (0x-hex)
REQUEST_SIGNATURE_HEADER = "BlockFL-Attestation-Request"
TENSOR_MEDIA_TYPE = "application/octet-stream"
MAX_RECORD_CHARS = 4096
MAX_BLOCK_BYTES = 8 * 2**20  # a block's JSON (64 updates take about 30 KB)
_UINT64 = 2**64


class WireError(ValueError):
    """A record or block that cannot be parsed."""


@dataclass(frozen=True)
class UpdateSubmission:
    """A local update as uploaded: the signed record and the safetensors bytes of the delta.

    The record's `update_hash` is `tensor_hash` of the decoded delta (SHA-256 over the
    canonical bytes), so the signature covers the tensors without hashing the transport bytes.
    """

    signed: SignedUpdate
    payload: bytes

    @property
    def device(self) -> str:
        """The device address (checksummed)."""
        return self.signed.device


def signed_to_dict(signed: SignedUpdate) -> dict[str, Any]:
    """A signed record as JSON-safe values (hashes and signature as 0x-hex)."""
    r = signed.record
    return {
        "device": to_checksum_address(r.device),
        "round": r.round,
        "base_model_hash": to_hex(r.base_model_hash),
        "update_hash": to_hex(r.update_hash),
        "samples": r.samples,
        "compute_time_ms": r.compute_time_ms,
        "signature": to_hex(signed.signature),
    }


@contextmanager
def _parsing(what: str) -> Iterator[None]:
    """Turn any failure while reading untrusted JSON into a WireError naming `what`."""
    try:
        yield
    except WireError:
        raise
    except KeyError as exc:
        raise WireError(f"{what} lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as exc:  # e.g. a hash that is no string
        raise WireError(f"malformed {what}: {exc}") from None


def signed_from_dict(data: Any) -> SignedUpdate:
    """Parse `signed_to_dict` output; WireError on anything else."""
    with _parsing("signed record"):
        if not isinstance(data, dict):
            raise WireError("a signed record is a JSON object")
        record = UpdateRecord(
            device=_address(data["device"], "device"),
            round=_uint64(data["round"], "round"),
            base_model_hash=from_hex(data["base_model_hash"]),
            update_hash=from_hex(data["update_hash"]),
            samples=_uint64(data["samples"], "samples"),
            compute_time_ms=_uint64(data["compute_time_ms"], "compute_time_ms"),
        )
        signature = data["signature"]
        if not isinstance(signature, str) or len(signature) > 200:
            raise WireError("signature is not a hex string")
        return SignedUpdate(record, bytes.fromhex(signature.removeprefix("0x")))


def _address(value: Any, name: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise WireError(f"{name} is not an address")
    return to_checksum_address(value)


def _uint64(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _UINT64:
        raise WireError(f"{name} is not a uint64")
    return value


def attestation_to_dict(attestation: Attestation) -> dict[str, Any]:
    """An attestation as JSON-safe values (hashes and the signature as 0x-hex)."""
    b = attestation.block
    return {"round": b.round, "prev_hash": to_hex(b.prev_hash),
            "updates_root": to_hex(b.updates_root),
            "global_model_hash": to_hex(b.global_model_hash), "spec_hash": to_hex(b.spec_hash),
            "committer": b.committer, "signature": to_hex(attestation.signature)}


def attestation_from_dict(data: Any) -> Attestation:
    """Parse `attestation_to_dict` output; WireError on anything else."""
    with _parsing("attestation"):
        if not isinstance(data, dict):
            raise WireError("an attestation is a JSON object")
        block = AttestedBlock(_uint64(data["round"], "round"), from_hex(data["prev_hash"]),
                              from_hex(data["updates_root"]), from_hex(data["global_model_hash"]),
                              from_hex(data["spec_hash"]),
                              _address(data["committer"], "committer"))
        return Attestation(block, from_hex(data["signature"], 65))


def parse_request_signature(value: str | None) -> bytes:
    """The 65-byte signature in a `BlockFL-Attestation-Request` header; WireError if absent or
    malformed."""
    if value is None:
        raise WireError(f"missing {REQUEST_SIGNATURE_HEADER} header with the committer's "
                        "signature")
    with _parsing(f"{REQUEST_SIGNATURE_HEADER} header"):
        return from_hex(value[:200], 65)


def record_header(signed: SignedUpdate) -> str:
    """The `BlockFL-Update` header value of a signed record."""
    return json.dumps(signed_to_dict(signed), separators=(",", ":"))


def parse_record_header(value: str | None) -> SignedUpdate:
    """The signed record in a `BlockFL-Update` header; WireError if absent or malformed."""
    if not value:
        raise WireError(f"missing {RECORD_HEADER} header with the signed record")
    if len(value) > MAX_RECORD_CHARS:
        raise WireError(f"{RECORD_HEADER} header longer than {MAX_RECORD_CHARS} characters")
    return signed_from_dict(decode_json(value, MAX_RECORD_CHARS, f"{RECORD_HEADER} header"))


def decode_json(data: bytes | str, max_bytes: int, what: str) -> Any:
    """Untrusted JSON, bounded in size and depth (`blockfl.safejson`); WireError naming `what`
    when it is too large, too deep or not JSON."""
    try:
        return safejson.loads(data, max_bytes)
    except safejson.JsonRejected as exc:
        raise WireError(f"{what}: {exc}") from None


def parse_block(body: bytes) -> BlockProposal:
    """A block from its JSON bytes (`proposal_to_dict`); WireError on anything else."""
    return proposal_from_dict(decode_json(body, MAX_BLOCK_BYTES, "block"))


def proposal_to_dict(proposal: BlockProposal) -> dict[str, Any]:
    """A block (its proposal with the nonce) as JSON-safe values."""
    return {
        "prev_hash": to_hex(proposal.prev_hash),
        "round": proposal.round,
        "global_model_hash": to_hex(proposal.global_model_hash),
        "miner": to_checksum_address(proposal.miner),
        "nonce": str(proposal.nonce),
        "updates": [signed_to_dict(u) for u in proposal.updates],
        "excluded": [to_hex(h) for h in proposal.excluded],
    }


def proposal_from_dict(data: Any) -> BlockProposal:
    """Parse `proposal_to_dict` output; WireError on anything else."""
    with _parsing("block"):
        if not isinstance(data, dict) or not isinstance(data["updates"], list):
            raise WireError("a block is a JSON object with a list of updates")
        if not isinstance(data.get("excluded", []), list):
            raise WireError("excluded is a list of update hashes")
        nonce = int(data["nonce"])
        if not 0 <= nonce < 2**256:
            raise WireError("nonce is not a uint256")
        return BlockProposal(
            prev_hash=from_hex(data["prev_hash"]),
            round=_uint64(data["round"], "round"),
            global_model_hash=from_hex(data["global_model_hash"]),
            updates=tuple(signed_from_dict(u) for u in data["updates"]),
            miner=_address(data["miner"], "miner"),
            nonce=nonce,
            excluded=tuple(from_hex(h) for h in data.get("excluded", [])),
        )
