"""The miner API route for attestations (included by `blockfl.miners.api`).

    POST /attestations     another miner asks this one to attest its candidate block (the
                           block's JSON, as for POST /blocks, with the committer's signature
                           of the request in the `BlockFL-Attestation-Request` header); the
                           answer is the signed attestation, 403 when the request is not a
                           registered miner's for a solved candidate, or 409 with the reason
                           this miner refuses the candidate
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from blockfl.miners.api_requests import Rejection, read_json
from blockfl.miners.attestation import UNAUTHORIZED, AttestationRefused
from blockfl.miners.service import MinerService
from blockfl.wire import (
    MAX_BLOCK_BYTES,
    REQUEST_SIGNATURE_HEADER,
    WireError,
    attestation_to_dict,
    parse_request_signature,
    proposal_from_dict,
)


def attestation_router(service: MinerService) -> APIRouter:
    """The `/attestations` route of one miner service."""
    router = APIRouter()

    @router.post("/attestations")
    async def attestations(request: Request) -> dict:
        try:  # before the body is read: a request without a signature costs nothing more
            signature = parse_request_signature(request.headers.get(REQUEST_SIGNATURE_HEADER))
        except WireError as exc:
            raise Rejection("bad_request_signature", str(exc)[:300], 403) from None
        proposal = await read_json(request, MAX_BLOCK_BYTES, "malformed_block",
                                       proposal_from_dict)
        try:
            attestation = await run_in_threadpool(service.attest, proposal, signature)
        except AttestationRefused as exc:
            service.log("attestation_refused", round=proposal.round, miner=proposal.miner,
                        reason=exc.reason, detail=exc.detail[:300])
            status = 403 if exc.reason in UNAUTHORIZED else 409
            raise Rejection(exc.reason, exc.detail, status) from None
        service.log("attested", round=proposal.round, miner=proposal.miner)
        return attestation_to_dict(attestation)

    return router
