"""What travels from a device to a miner and between miners: a signed record and its tensors."""

from __future__ import annotations

from dataclasses import dataclass

from blockfl.signing import SignedUpdate


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
