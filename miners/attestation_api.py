"""The miner API route for attestations (included by `blockfl.miners.api`).

    POST /attestations     another miner asks this one to attest its candidate block (the
                           block's JSON, as for POST /blocks); the answer is the signed
                           attestation, or 409 with the reason this miner refuses
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from blockfl.miners import api
from blockfl.miners.attestation import AttestationRefused
from blockfl.miners.service import MinerService
from blockfl.wire import MAX_BLOCK_BYTES, attestation_to_dict, proposal_from_dict


def attestation_router(service: MinerService) -> APIRouter:
    """The `/attestations` route of one miner service."""
    router = APIRouter()

    @router.post("/attestations")
    async def attestations(request: Request) -> dict:
        proposal = await api.read_json(request, MAX_BLOCK_BYTES, "malformed_block",
                                       proposal_from_dict)
        try:
            attestation = await run_in_threadpool(service.attest, proposal)
        except AttestationRefused as exc:
            service.log("attestation_refused", round=proposal.round, miner=proposal.miner,
                        reason=exc.reason, detail=exc.detail[:300])
            raise api.Rejection(exc.reason, exc.detail, 409) from None
        service.log("attested", round=proposal.round, miner=proposal.miner)
        return attestation_to_dict(attestation)

    return router
