"""The miner's HTTP API (FastAPI). Every rejection is JSON `{"error": reason, "detail": ...}`.

    POST /updates          a device's upload: safetensors body (application/octet-stream) and
                           the signed record as JSON in the `BlockFL-Update` header
    POST /gossip           the same, forwarded by another miner (cross-verified, not re-gossiped)
    POST /blocks           another miner announces a committed block (JSON)
    GET  /blocks/{ref}     a committed block this miner knows, by round or 0x block hash (JSON)
    GET  /updates/{hash}   an acknowledged update by update hash (body + record header)
    GET  /models/{hash}    a global model by hash (safetensors)
    GET  /info, /health    the miner's state

Bodies are read as a stream and cut off at the size limit (413) before they are buffered whole,
and within `body_timeout` (408); JSON bodies are size- and depth-checked before they are decoded
(`api_requests.read_json`, for any router of this app), off the event loop like the miner's
other work.
Uploads, gossip and every JSON body (block announcements, attestation requests) take turns
through a fair `UploadGate` (503 `busy` after a short wait); the HTTP server in front
(`blockfl.miners.http_server`) guards connections. A client that leaves mid-body is one
`client_disconnected` event in the log; an error inside the miner is an `internal_error`
event, at most one per kind of error every `LOG_EVERY` seconds (with the `count` it stands for).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from blockfl.chain.errors import ChainUnavailable, DeploymentMissing
from blockfl.config import ServerConfig
from blockfl.events import Throttled
from blockfl.hashing import from_hex, to_hex
from blockfl.miners.admission import Busy, UploadGate
from blockfl.miners.api_requests import (
    Rejection,
    check_declared,
    client_of,
    error,
    read_body,
    read_json,
)
from blockfl.miners.attestation_api import attestation_router
from blockfl.miners.http_server import LOG_EVERY
from blockfl.miners.node import Verdict
from blockfl.miners.service import MinerService
from blockfl.wire import (
    MAX_BLOCK_BYTES,
    RECORD_HEADER,
    TENSOR_MEDIA_TYPE,
    UpdateSubmission,
    WireError,
    block_json_limit,
    parse_record_header,
    proposal_from_dict,
    proposal_to_dict,
    record_header,
)


def create_app(service: MinerService, max_payload_bytes: int,
               limits: ServerConfig | None = None) -> FastAPI:
    """The FastAPI application of one miner service."""
    app = FastAPI(title="BlockFL miner", version="1")
    app.state.limits = limits = limits or ServerConfig()
    app.state.gate = gate = UploadGate(limits)
    app.state.json_limit = block_json_limit(service.ledger.params().max_updates_per_block)
    node = service.node

    @app.exception_handler(Rejection)
    async def _rejection(_: Request, exc: Rejection) -> JSONResponse:
        return error(exc.reason, exc.detail, exc.status, exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _left(request: Request, _: ClientDisconnect) -> JSONResponse:
        service.log("client_disconnected", client=client_of(request), path=request.url.path)
        return error("client_disconnected", "the client left before its body was read")

    @app.exception_handler(Busy)
    async def _busy(_: Request, exc: Busy) -> JSONResponse:
        return error("busy", str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(ChainUnavailable)
    @app.exception_handler(DeploymentMissing)
    async def _no_chain(_: Request, exc: ChainUnavailable | DeploymentMissing) -> JSONResponse:
        service.chain_down(exc)
        return error(exc.condition, str(exc), 503)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = "not_found" if exc.status_code == 404 else f"http_{exc.status_code}"
        return error(reason, str(exc.detail), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error("bad_request", str(exc.errors())[:500], 422)

    internal_error = Throttled(service.log, LOG_EVERY)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        internal_error("internal_error", (type(exc).__name__,),
                       error=f"{type(exc).__name__}: {exc}")
        return error("internal_error", type(exc).__name__, 500)

    async def receive(request: Request, handler: Callable[[UpdateSubmission], Verdict]) -> dict:
        media = request.headers.get("content-type", "").split(";")[0].strip()
        if media != TENSOR_MEDIA_TYPE:
            raise Rejection("unsupported_media_type",
                            f"an update body is {TENSOR_MEDIA_TYPE} (safetensors), not {media!r}")
        try:
            signed = parse_record_header(request.headers.get(RECORD_HEADER))
        except WireError as exc:
            raise Rejection("malformed_record", str(exc)) from None
        check_declared(request, max_payload_bytes)
        async with gate.turn(client_of(request)):
            payload = await read_body(request, max_payload_bytes)
            received_at = time.time()  # the body's last byte: the upload's end on the link
            verdict = await run_in_threadpool(handler, UpdateSubmission(signed, payload))
        if not verdict.accepted:
            raise Rejection(verdict.reason, verdict.detail)
        service.log("update_accepted", device=signed.device, round=signed.record.round,
                    via=request.url.path.strip("/"), samples=signed.record.samples,
                    received_at=received_at)
        return {"accepted": True, "round": signed.record.round, "miner": node.address,
                "status": verdict.reason or "accepted"}

    @app.post("/updates")
    async def upload(request: Request) -> dict:
        return await receive(request, node.receive_upload)

    @app.post("/gossip")
    async def gossip(request: Request) -> dict:
        return await receive(request, node.receive_gossip)

    @app.post("/blocks", status_code=202)
    async def announce(request: Request) -> dict:
        proposal = await read_json(request, MAX_BLOCK_BYTES, "malformed_block",
                                   proposal_from_dict)  # up to 8 MB of JSON: it takes a turn
        if not service.announced(proposal):
            raise Rejection("wrong_round", f"block of round {proposal.round}, this miner "
                                           f"waits for round {node.round}")
        return {"round": proposal.round}

    @app.get("/blocks/{ref}")
    async def block(ref: str) -> dict:
        key: int | bytes = hash_param(ref) if ref.startswith("0x") else round_param(ref)
        proposal = await run_in_threadpool(service.block, key)
        if proposal is None:
            raise Rejection("not_found", f"no block {ref} here")
        return proposal_to_dict(proposal)

    def round_param(value: str) -> int:
        if not value.isdigit() or len(value) > 20:
            raise Rejection("bad_request", "a block is a round number or a 0x block hash")
        return int(value)

    def hash_param(value: str) -> bytes:
        try:
            return from_hex(value)
        except ValueError:
            raise Rejection("bad_request", "a hash is 32 bytes of 0x-hex") from None

    @app.get("/updates/{update_hash}")
    async def update(update_hash: str) -> Response:
        found = await run_in_threadpool(service.journal.update, hash_param(update_hash))
        if found is None:
            raise Rejection("not_found", f"no update {update_hash} here")
        return Response(found.payload, media_type=TENSOR_MEDIA_TYPE,
                        headers={RECORD_HEADER: record_header(found.signed)})

    @app.get("/pending")
    async def pending() -> dict:
        """The update hashes of the verified updates this miner holds for its round (they are
        gossiped; each is served by `GET /updates/{hash}`)."""
        held = await run_in_threadpool(node.pending_submissions)
        return {"round": node.round,
                "updates": [to_hex(s.signed.record.update_hash) for s in held]}

    @app.get("/models/{model_hash}")
    async def model(model_hash: str) -> Response:
        try:
            data = await run_in_threadpool(service.store.get_bytes, hash_param(model_hash))
        except KeyError:
            raise Rejection("not_found", f"no model {model_hash} here") from None
        return Response(data, media_type=TENSOR_MEDIA_TYPE)

    @app.get("/info")
    async def info() -> dict:
        return await run_in_threadpool(service.info)

    @app.get("/health")
    async def health() -> JSONResponse:
        state = service.health()
        return JSONResponse(state, status_code=200 if state["ok"] else 503)

    # other features' routers are included here, e.g. app.include_router(router(service))
    app.include_router(attestation_router(service))  # POST /attestations
    return app
