"""HTTP client of a miner service, used by devices (upload, download) and by miners (gossip).

Transport failures, timeouts and 5xx answers raise `MinerUnavailable` (try another miner);
a rejection raises `MinerRejected` with the miner's machine-readable reason. Downloads are
checked: a model must hash to the hash it was asked for, an update to its signed update hash.
A miner is not trusted either: an answer is read up to a size limit and within one deadline
(`timeout` seconds from connect to its last byte, however slowly it is dripped), and JSON is
size- and depth-checked before it is decoded; a malformed answer is `MinerUnavailable`. A miner
that failed to answer is tried after the others for `SUSPECT_FOR` seconds (`healthy_first`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from blockfl.chain.attestation import Attestation
from blockfl.chain.blocks import BlockProposal
from blockfl.deadline_http import deadline, deadline_client
from blockfl.hashing import from_hex, to_hex
from blockfl.tensors import StateDict, TensorFormatError, decode, tensor_hash
from blockfl.wire import (
    MAX_BLOCK_BYTES,
    RECORD_HEADER,
    REQUEST_SIGNATURE_HEADER,
    TENSOR_MEDIA_TYPE,
    UpdateSubmission,
    WireError,
    attestation_from_dict,
    decode_json,
    parse_block,
    parse_record_header,
    proposal_to_dict,
    record_header,
)

DEFAULT_MAX_BYTES = 256 * 2**20
MAX_ANSWER_JSON = 2**20  # an acknowledgement, a rejection or /info
SUSPECT_FOR = 60.0  # seconds a miner that failed to answer is tried after the others


class MinerUnavailable(ConnectionError):
    """The miner cannot be reached, timed out, or failed internally."""


class MinerRejected(ValueError):
    """The miner refused the request; `reason` is its machine-readable code."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Answer:
    """A miner's answer, its body read up to the request's limit."""

    status: int
    headers: httpx.Headers
    content: bytes


class MinerClient:
    """One miner's HTTP API."""

    def __init__(
        self, url: str, timeout: float = 30.0, ca_cert: Path | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES, http: httpx.Client | None = None,
    ) -> None:
        """`timeout`: seconds for a whole answer, connect to last byte; `ca_cert`: the CA to
        trust for an HTTPS miner (default: the system's); `http`: an httpx client to send
        through instead (e.g. an in-process test client)."""
        if not timeout > 0:
            raise ValueError(f"a miner's answer timeout is more than 0 s, got {timeout}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.failed_at: float | None = None  # when it last failed to answer (monotonic)
        self.received_bytes = 0  # HTTP bytes of every answer read (status, headers, body)
        verify: str | bool = str(ca_cert) if ca_cert else True
        self._http = http or deadline_client(self.url, timeout, verify)

    def __repr__(self) -> str:
        return f"MinerClient({self.url!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    @property
    def suspect(self) -> bool:
        """Whether this miner failed to answer in the last `SUSPECT_FOR` seconds."""
        return self.failed_at is not None and time.monotonic() - self.failed_at < SUSPECT_FOR

    def _unavailable(self, why: str) -> MinerUnavailable:
        self.failed_at = time.monotonic()
        return MinerUnavailable(f"{self.url}: {why}")

    def _request(self, method: str, path: str, limit: int = MAX_ANSWER_JSON,
                 **kwargs: Any) -> Answer | None:
        """Send and read the answer (at most `limit` bytes, within `timeout` seconds); None for
        404, raise MinerUnavailable / MinerRejected for failures."""
        try:
            with deadline(self.timeout), self._http.stream(method, path, **kwargs) as response:
                content = bytearray()
                for chunk in response.iter_bytes():
                    content += chunk
                    if len(content) > limit:
                        raise self._unavailable(f"answer over {limit} bytes")
        except httpx.TimeoutException:
            raise self._unavailable(f"no whole answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise self._unavailable(f"{type(exc).__name__}: {exc}") from None
        self.failed_at = None
        self.received_bytes += _head_bytes(response) + len(content)
        answer = Answer(response.status_code, response.headers, bytes(content))
        if answer.status == 404 and method == "GET":
            return None
        if answer.status >= 500:
            raise self._unavailable(f"HTTP {answer.status}")
        if answer.status >= 400:
            try:
                body = decode_json(answer.content, MAX_ANSWER_JSON, "rejection")
                reason, detail = str(body["error"]), str(body.get("detail", ""))
            except (WireError, KeyError, TypeError):
                reason, detail = f"http_{answer.status}", answer.content[:200].decode("latin-1")
            raise MinerRejected(answer.status, reason, detail)
        return answer

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A JSON object answer (bounded); MinerUnavailable if it is anything else."""
        answer = self._request(method, path, **kwargs)
        if answer is None:
            raise MinerUnavailable(f"{self.url}{path}: not found")
        try:
            body = decode_json(answer.content, MAX_ANSWER_JSON, f"answer to {path}")
        except WireError as exc:
            raise MinerUnavailable(f"{self.url}: {exc}") from None
        if not isinstance(body, dict):
            raise MinerUnavailable(f"{self.url}: the answer to {path} is no JSON object")
        return body

    def info(self) -> dict[str, Any]:
        """The miner's address, round, chain head and counters."""
        return self._json("GET", "/info")

    def pending(self) -> tuple[int, list[bytes]]:
        """The miner's round and the update hashes of the verified updates it holds for it."""
        body = self._json("GET", "/pending")
        try:
            return int(body["round"]), [from_hex(h) for h in body["updates"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MinerUnavailable(f"{self.url}: malformed pending list: {exc}") from None

    def _post_update(self, path: str, submission: UpdateSubmission) -> dict[str, Any]:
        headers = {
            "Content-Type": TENSOR_MEDIA_TYPE, RECORD_HEADER: record_header(submission.signed)
        }
        return self._json("POST", path, content=submission.payload, headers=headers)

    def upload(self, submission: UpdateSubmission) -> dict[str, Any]:
        """A device's upload; MinerRejected carries the verification reason."""
        return self._post_update("/updates", submission)

    def gossip(self, submission: UpdateSubmission) -> dict[str, Any]:
        """Forward a verified update to this miner (it cross-verifies it)."""
        return self._post_update("/gossip", submission)

    def announce(self, proposal: BlockProposal) -> int:
        """Tell this miner about a committed block; the body's size in bytes."""
        body = json.dumps(proposal_to_dict(proposal), separators=(",", ":")).encode()
        self._request("POST", "/blocks", content=body,
                      headers={"content-type": "application/json"})
        return len(body)

    def attest(self, proposal: BlockProposal, request_signature: bytes) -> Attestation:
        """Ask this miner to check a candidate block and attest it, with the committer's
        signature of the request (`sign_request`); MinerRejected names why it refuses."""
        body = self._json("POST", "/attestations", json=proposal_to_dict(proposal),
                          headers={REQUEST_SIGNATURE_HEADER: to_hex(request_signature)})
        try:
            return attestation_from_dict(body)
        except ValueError as exc:
            raise MinerUnavailable(f"{self.url}: {exc}") from None

    def block(self, ref: int | bytes) -> BlockProposal | None:
        """A committed block by round or block hash, as this miner knows it (None if not)."""
        answer = self._request("GET", f"/blocks/{to_hex(ref) if isinstance(ref, bytes) else ref}",
                               limit=MAX_BLOCK_BYTES)
        if answer is None:
            return None
        try:
            return parse_block(answer.content)
        except WireError as exc:
            raise MinerUnavailable(f"{self.url}: malformed block: {exc}") from None

    def update(self, update_hash: bytes) -> UpdateSubmission | None:
        """An update's record and tensors by update hash, checked against that hash."""
        answer = self._request("GET", f"/updates/{to_hex(update_hash)}", limit=self.max_bytes)
        if answer is None:
            return None
        try:
            signed = parse_record_header(answer.headers.get(RECORD_HEADER))
            delta = decode(answer.content, max_bytes=self.max_bytes)
        except (WireError, TensorFormatError) as exc:
            raise MinerUnavailable(f"{self.url}: malformed update: {exc}") from None
        if signed.record.update_hash != update_hash or tensor_hash(delta) != update_hash:
            raise MinerUnavailable(f"{self.url}: update does not match {to_hex(update_hash)}")
        return UpdateSubmission(signed, answer.content)

    def model_bytes(self, model_hash: bytes) -> bytes | None:
        """The bytes this miner serves for a model hash, unchecked (None if it has none)."""
        answer = self._request("GET", f"/models/{to_hex(model_hash)}", limit=self.max_bytes)
        return None if answer is None else answer.content

    def model(self, model_hash: bytes) -> StateDict | None:
        """A global model by hash, checked against that hash."""
        data = self.model_bytes(model_hash)
        if data is None:
            return None
        try:
            state = decode(data, max_bytes=self.max_bytes)
        except TensorFormatError as exc:
            raise MinerUnavailable(f"{self.url}: malformed model: {exc}") from None
        if tensor_hash(state) != model_hash:
            raise MinerUnavailable(f"{self.url}: model does not hash to {to_hex(model_hash)}")
        return state


def _head_bytes(response: httpx.Response) -> int:
    """The bytes of an HTTP/1.1 answer's status line and headers, as sent."""
    status = len(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n")
    return status + sum(len(k) + len(v) + 4 for k, v in response.headers.raw) + 2


def healthy_first(clients: Sequence[MinerClient]) -> list[MinerClient]:
    """`clients` in their order, those that failed to answer lately (`suspect`) moved last: one
    hostile or dead miner costs at most one `timeout` before the others are asked first."""
    return sorted(clients, key=lambda client: client.suspect)
