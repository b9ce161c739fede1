"""HTTP client of a miner service, used by devices (upload, download) and by miners (gossip).

Transport failures, timeouts and 5xx answers raise `MinerUnavailable` (try another miner);
a rejection raises `MinerRejected` with the miner's machine-readable reason. Downloads are
checked: a model must hash to the hash it was asked for, an update to its signed update hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from blockfl.chain.attestation import Attestation, attestation_from_dict
from blockfl.chain.blocks import BlockProposal
from blockfl.hashing import to_hex
from blockfl.tensors import StateDict, TensorFormatError, decode, tensor_hash
from blockfl.wire import (
    RECORD_HEADER,
    TENSOR_MEDIA_TYPE,
    UpdateSubmission,
    WireError,
    parse_record_header,
    proposal_from_dict,
    proposal_to_dict,
    record_header,
)

DEFAULT_MAX_BYTES = 256 * 2**20


class MinerUnavailable(ConnectionError):
    """The miner cannot be reached, timed out, or failed internally."""


class MinerRejected(ValueError):
    """The miner refused the request; `reason` is its machine-readable code."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.status = status
        self.reason = reason
        self.detail = detail


class MinerClient:
    """One miner's HTTP API."""

    def __init__(
        self, url: str, timeout: float = 30.0, ca_cert: Path | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES, http: httpx.Client | None = None,
    ) -> None:
        """`ca_cert`: the CA to trust for an HTTPS miner (default: the system's); `http`: an
        httpx client to send through instead (e.g. an in-process test client)."""
        self.url = url.rstrip("/")
        self.max_bytes = max_bytes
        verify: str | bool = str(ca_cert) if ca_cert else True
        self._http = http or httpx.Client(base_url=self.url, timeout=timeout, verify=verify)

    def __repr__(self) -> str:
        return f"MinerClient({self.url!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """Send; None for 404, raise MinerUnavailable / MinerRejected for failures."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise MinerUnavailable(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 404 and method == "GET":
            return None
        if response.status_code >= 500:
            raise MinerUnavailable(f"{self.url}: HTTP {response.status_code}")
        if response.status_code >= 400:
            try:
                body = response.json()
                reason, detail = str(body["error"]), str(body.get("detail", ""))
            except (ValueError, KeyError, TypeError):
                reason, detail = f"http_{response.status_code}", response.text[:200]
            raise MinerRejected(response.status_code, reason, detail)
        return response

    def info(self) -> dict[str, Any]:
        """The miner's address, round, chain head and counters."""
        response = self._request("GET", "/info")
        assert response is not None
        return response.json()

    def _post_update(self, path: str, submission: UpdateSubmission) -> dict[str, Any]:
        headers = {
            "Content-Type": TENSOR_MEDIA_TYPE, RECORD_HEADER: record_header(submission.signed)
        }
        response = self._request("POST", path, content=submission.payload, headers=headers)
        assert response is not None
        return response.json()

    def upload(self, submission: UpdateSubmission) -> dict[str, Any]:
        """A device's upload; MinerRejected carries the verification reason."""
        return self._post_update("/updates", submission)

    def gossip(self, submission: UpdateSubmission) -> dict[str, Any]:
        """Forward a verified update to this miner (it cross-verifies it)."""
        return self._post_update("/gossip", submission)

    def announce(self, proposal: BlockProposal) -> None:
        """Tell this miner about a committed block."""
        self._request("POST", "/blocks", json=proposal_to_dict(proposal))

    def attest(self, proposal: BlockProposal) -> Attestation:
        """Ask this miner to check a candidate block and attest it; MinerRejected names why
        it refuses."""
        response = self._request("POST", "/attestations", json=proposal_to_dict(proposal))
        assert response is not None
        try:
            return attestation_from_dict(response.json())
        except ValueError as exc:
            raise MinerUnavailable(f"{self.url}: {exc}") from None

    def block(self, ref: int | bytes) -> BlockProposal | None:
        """A committed block by round or block hash, as this miner knows it (None if not)."""
        response = self._request("GET", f"/blocks/{to_hex(ref) if isinstance(ref, bytes) else ref}")
        if response is None:
            return None
        try:
            return proposal_from_dict(response.json())
        except (ValueError, WireError) as exc:
            raise MinerUnavailable(f"{self.url}: malformed block: {exc}") from None

    def update(self, update_hash: bytes) -> UpdateSubmission | None:
        """An update's record and tensors by update hash, checked against that hash."""
        response = self._request("GET", f"/updates/{to_hex(update_hash)}")
        if response is None:
            return None
        try:
            signed = parse_record_header(response.headers.get(RECORD_HEADER))
            delta = decode(response.content, max_bytes=self.max_bytes)
        except (WireError, TensorFormatError) as exc:
            raise MinerUnavailable(f"{self.url}: malformed update: {exc}") from None
        if signed.record.update_hash != update_hash or tensor_hash(delta) != update_hash:
            raise MinerUnavailable(f"{self.url}: update does not match {to_hex(update_hash)}")
        return UpdateSubmission(signed, response.content)

    def model(self, model_hash: bytes) -> StateDict | None:
        """A global model by hash, checked against that hash."""
        response = self._request("GET", f"/models/{to_hex(model_hash)}")
        if response is None:
            return None
        try:
            state = decode(response.content, max_bytes=self.max_bytes)
        except TensorFormatError as exc:
            raise MinerUnavailable(f"{self.url}: malformed model: {exc}") from None
        if tensor_hash(state) != model_hash:
            raise MinerUnavailable(f"{self.url}: model does not hash to {to_hex(model_hash)}")
        return state
